#!/usr/bin/env bash
# The whole GPU visit in one command, inside one 10-minute device command with margin:
#   bash benchmarks/gpu_suite.sh OUT_DIR
# 1. what the machine has (GPU, torch, compiler, packages), printed first and kept in OUT_DIR/probe.json;
# 2. the paper-size CRF data (benchmarks/gpu_crf_run.py --data-only) made in the background at nice 19 by
#    all cores but 4, while
# 3. benchmarks/gpu_check.py runs with --budget-s $GPU_SUITE_CHECK_S (default 270): OUT_DIR/gpu_check.json/.md;
# 4. benchmarks/gpu_crf_run.py trains, evaluates and compares in what is left of $GPU_SUITE_S (default 520 s
#    from the start): OUT_DIR/crf/ (crf_run.json/.md, run dirs with metrics and figures, comparison figures).
# Every part writes its results as it goes and has its own time limit (`timeout` sends SIGTERM first: both
# Python parts then record the interruption). OUT_DIR/suite.log holds the whole output. Data and checkpoints go
# to $GPU_SUITE_WORK (default ${TMPDIR:-/tmp}/hpcgan-gpu-suite), not OUT_DIR.
# GPU_SUITE_SMOKE=1: the CPU smoke version at tiny sizes (tests/bench/test_gpu_suite.py runs it).
set -uo pipefail  # not -e: a failing part is reported and the next one still runs
if [ $# -ne 1 ]; then echo "usage: $0 OUT_DIR" >&2; exit 2; fi
cd "$(dirname "$0")/.."
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HDF5_USE_FILE_LOCKING=FALSE
PY=${PYTHON:-python3}
SMOKE=${GPU_SUITE_SMOKE:-0}
TOTAL_S=${GPU_SUITE_S:-520}
CHECK_S=${GPU_SUITE_CHECK_S:-270}
WORK=${GPU_SUITE_WORK:-${TMPDIR:-/tmp}/hpcgan-gpu-suite}
CORES=$(nproc 2>/dev/null || echo 4)
if [ "$SMOKE" = 1 ]; then
  CHECK_ARGS=(--devices cpu --tiny --steps 4 --crf-steps 3 --compile-backend eager
              --sections "${GPU_SUITE_SMOKE_SECTIONS:-probe,peak}")
  CRF_ARGS=(--smoke)
  DATA_WORKERS=1
else
  CHECK_ARGS=()
  CRF_ARGS=(--train-s auto)
  DATA_WORKERS=$(( CORES > 5 ? CORES - 4 : 1 ))
fi
start=$(date +%s)
exec > >(tee -a "$OUT/suite.log") 2>&1

echo "== gpu_suite $(date -u +%FT%TZ): OUT_DIR $OUT, budget ${TOTAL_S} s (check ${CHECK_S} s), smoke ${SMOKE}"
echo "== git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(uname -srm), $CORES cores, $(df -h "${WORK%/*}" 2>/dev/null | awk 'NR==2 {print $4 " free on " $6}')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -m benchmarks.gpu_check --probe --out "$OUT/gpu_check.json" || echo "== probe failed (exit $?)"

echo "== CRF data in the background ($DATA_WORKERS processes, nice 19): log $OUT/crf_data.log"
mkdir -p "$OUT/crf"
nice -n 19 "$PY" -m benchmarks.gpu_crf_run --data-only --out "$OUT/crf" --work-dir "$WORK" \
  --workers "$DATA_WORKERS" --budget-s "$((CHECK_S + 60))" "${CRF_ARGS[@]}" > "$OUT/crf_data.log" 2>&1 &
data_pid=$!

echo "== gpu_check (budget ${CHECK_S} s)"
timeout -s TERM -k 20 "$((CHECK_S + 30))" "$PY" -m benchmarks.gpu_check --budget-s "$CHECK_S" \
  --out "$OUT/gpu_check.json" "${CHECK_ARGS[@]}"
check_rc=$?
echo "== gpu_check exit $check_rc after $(( $(date +%s) - start )) s; waiting for the CRF data"
wait "$data_pid"
data_rc=$?
tail -n 3 "$OUT/crf_data.log"

left=$(( start + TOTAL_S - $(date +%s) ))
echo "== gpu_crf_run (budget ${left} s)"
crf_rc=1
if [ "$left" -gt 30 ]; then
  timeout -s TERM -k 10 "$((left + 20))" "$PY" -m benchmarks.gpu_crf_run --out "$OUT/crf" --work-dir "$WORK" \
    --budget-s "$left" "${CRF_ARGS[@]}"
  crf_rc=$?
else
  echo "== gpu_crf_run skipped: ${left} s left of ${TOTAL_S}"
fi
echo "== gpu_suite done after $(( $(date +%s) - start )) s: check exit $check_rc, CRF data exit $data_rc, CRF run exit $crf_rc"
echo "== results: $OUT/gpu_check.md, $OUT/crf/crf_run.md"
[ "$check_rc" = 0 ] && [ "$data_rc" = 0 ] && [ "$crf_rc" = 0 ]
