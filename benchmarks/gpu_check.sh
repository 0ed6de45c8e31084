#!/usr/bin/env bash
# One prepared check of the GPU path (benchmarks/gpu_check.py): trains both workloads in fp32/bf16/fp16,
# checks losses and weights finite, measures samples/s against a reference-style step and a bf16 matmul
# peak, runs a 1-rank --backend torch job, writes results/gpu_check.json and .md. Needs torch, numpy,
# h5py, pyyaml, tqdm and matplotlib; no Horovod, no network. Arguments go to gpu_check.py
# (--devices cpu --tiny: the CPU smoke test).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HDF5_USE_FILE_LOCKING=FALSE
exec "${PYTHON:-python3}" -m benchmarks.gpu_check "$@"
