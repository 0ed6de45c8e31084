#!/usr/bin/env bash
# One prepared check of the GPU path (benchmarks/gpu_check.py), inside --budget-s (default 420 s): a probe of
# the machine (GPU, compiler, packages), a bf16 matmul peak and the memory bandwidth, both workloads trained in
# fp32/bf16/fp16 with losses and weights checked finite, LHC generation eager and from a CUDA graph, a 1-rank
# --backend torch job, CRF at 256x256 against a reference-style step, torch.compile rows last. Writes
# results/gpu_check.json and .md after every row and section. Needs torch, numpy, h5py, pyyaml, tqdm and
# matplotlib; no Horovod, no network, no install (PYTHONPATH is the repository). Arguments go to gpu_check.py
# (--devices cpu --tiny: the CPU smoke test). The whole GPU visit: benchmarks/gpu_suite.sh OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HDF5_USE_FILE_LOCKING=FALSE PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m benchmarks.gpu_check "$@"
