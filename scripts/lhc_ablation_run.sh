#!/usr/bin/env bash
# One measured row of the README's LHC default-job ablation: train lhc-small on 2 Horovod ranks with the
# given overrides, evaluate on the validation file, print one summary line (and append it to runs/ablation.tsv).
# Usage: scripts/lhc_ablation_run.sh NAME [override ...]   (data as scripts/run_default.sh makes it)
set -euo pipefail
cd "$(dirname "$0")/.."
NAME="$1"; shift
RUN_DIR="runs/abl-$NAME"
rm -rf "$RUN_DIR"; mkdir -p runs
MPIRUN=(mpirun -np 2 --oversubscribe --bind-to none -x PATH -x PYTHONPATH -x HDF5_USE_FILE_LOCKING)
t0=$(date +%s)
"${MPIRUN[@]}" hpcgan train --config lhc-small --backend horovod run_dir="$RUN_DIR" "$@" > "$RUN_DIR.train.log" 2>&1
t1=$(date +%s)
"${MPIRUN[@]}" hpcgan evaluate "$RUN_DIR" --data data/lhc-small-val.h5 > "$RUN_DIR.eval.log" 2>&1
t2=$(date +%s)
python - "$RUN_DIR" "$NAME" "$((t1 - t0))" "$((t2 - t1))" "$*" <<'PY'
import json, subprocess, sys, datetime
run, name, tt, te, ov = sys.argv[1:]
s = json.load(open(f"{run}/evaluation/summary.json"))
h = s.get("headline") or s["metrics"]["headline"] if "headline" in s or "metrics" in s else s
def find(d):
    if isinstance(d, dict):
        if "resolution_ratio" in d and "two_sample_auc" in d:
            return d
        for v in d.values():
            r = find(v)
            if r: return r
h = find(s)
r = h["resolution_ratio"]
others = [r[k] for k in ("phi0", "eta", "d0", "z0")]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
line = "\t".join([name, f"{r['q/pT']:.3f}", f"{min(others):.3f}-{max(others):.3f}", f"{h['two_sample_auc']:.3f}",
                  str(h["flagged"]), f"{h['beyond3_gan']['q/pT']:.4f}", tt, te, commit + ("+dirty" if dirty else ""),
                  datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"), ov])
print(line)
open("runs/ablation.tsv", "a").write(line + "\n")
PY
