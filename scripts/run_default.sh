#!/usr/bin/env bash
# The built-in default job (`make run`): a small synthetic LHC tracker dataset,
# `lhc-small` trained on $NP Horovod ranks under mpirun, then evaluated
# (conventional fit in blue, GAN in red). Leaves everything in $RUN_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
NP="${NP:-2}"
RUN_DIR="${RUN_DIR:-runs/lhc-small}"
HPCGAN=.venv/bin/hpcgan
MPIRUN=(mpirun -np "$NP" --oversubscribe --bind-to none -x PATH -x HDF5_USE_FILE_LOCKING)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 HDF5_USE_FILE_LOCKING=FALSE

mkdir -p data
[ -f data/lhc-small-train.h5 ] || "$HPCGAN" data synth lhc --n 40960 --seed 1 --out data/lhc-small-train.h5
[ -f data/lhc-small-val.h5 ] || "$HPCGAN" data synth lhc --n 8192 --seed 2 --out data/lhc-small-val.h5

"${MPIRUN[@]}" "$HPCGAN" train --config lhc-small --backend horovod run_dir="$RUN_DIR"
"${MPIRUN[@]}" "$HPCGAN" evaluate "$RUN_DIR" --data data/lhc-small-val.h5
echo "run directory: $RUN_DIR (config.yaml, metrics.jsonl, tb/, figures/, checkpoints/, evaluation/)"
