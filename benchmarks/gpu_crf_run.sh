#!/usr/bin/env bash
# The paper-size CRF run on one GPU (benchmarks/gpu_crf_run.py): synthetic 256x256 data (3100 samples, made
# here by `hpcgan data synth crf`), the crf preset in bf16 under torch.distributed (NCCL, no Horovod) for a wall
# budget, stopped with SIGTERM (the trainer checkpoints), then the spectral and colour evaluation against an
# L1-only run when the budget left allows. Metrics, figures and crf_run.json/.md land in OUT as they are made.
#   benchmarks/gpu_crf_run.sh --out OUT [--budget-s 540] [--train-s 300] [--work-dir DIR]   (--smoke: CPU test)
# The project need not be installed: PYTHONPATH is the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HDF5_USE_FILE_LOCKING=FALSE
exec "${PYTHON:-python3}" -m benchmarks.gpu_crf_run "$@"
