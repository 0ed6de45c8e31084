#!/usr/bin/env bash
# Create .venv with everything hpcgan needs, from nothing, idempotently.
#
# What it does (each step skipped when already satisfied):
#   1. Open MPI: apt-get when no `mpicc` is on PATH and we are root; on a
#      cluster, load your MPI module first (Cray: `module load cray-mpich`).
#   2. .venv with torch (an existing torch in the base Python is kept through
#      --system-site-packages; otherwise torch==$HPCGAN_TORCH, default 2.13.0).
#   3. mpi4py, h5py, numpy, ... at the versions in scripts/constraints.txt.
#   4. Horovod 0.28.1 from its source archive, patched to C++17 (it does not
#      build against torch >= 2.1 as released), with PyTorch + MPI + Gloo
#      (+ NCCL when nvcc is visible and torch is a CUDA build). The build tools
#      (cmake, setuptools, wheel, ...) are pinned in scripts/constraints.txt.
#      The wheel is cached under $HPCGAN_CACHE/wheels (default
#      ~/.cache/hpcgan), keyed by Python, torch and the constraints file.
#   5. hpcgan itself, editable.
#
# Every step writes its output to $HPCGAN_SETUP_LOGS/<step>.log (default
# .setup-logs/); a failing step prints one line naming the step, the first
# error line of its log, and the log's path.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HPCGAN_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
HOROVOD_VERSION=0.28.1
CACHE="${HPCGAN_CACHE:-$HOME/.cache/hpcgan}"
CONSTRAINTS="$ROOT/scripts/constraints.txt"
export HPCGAN_SETUP_LOGS="${HPCGAN_SETUP_LOGS:-$ROOT/.setup-logs}"
# shellcheck source=scripts/setup_lib.sh
source "$ROOT/scripts/setup_lib.sh"

# 1. MPI --------------------------------------------------------------------
if ! command -v mpicc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "no mpicc found: installing Open MPI with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    run_step apt-update apt-get update -qq
    run_step apt-openmpi apt-get install -y -qq openmpi-bin libopenmpi-dev
  else
    die "no MPI compiler (mpicc) on PATH. On a cluster load the MPI module first" \
        "(Cray: 'module load cray-mpich'; elsewhere e.g. 'module load openmpi'), then rerun 'make env'."
  fi
fi

# 2. venv + torch -----------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    log "base Python already has torch $("$PYTHON" -c 'import torch;print(torch.__version__)'): keeping it"
    run_step venv "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    run_step venv "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
# The venv's tools (the pinned cmake above all) come first for every build below.
export PATH="$VENV/bin:$PATH"
PIP=("$PY" -m pip install --disable-pip-version-check)
export PIP_NO_WARN_SCRIPT_LOCATION=1
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  log "installing torch==${HPCGAN_TORCH:-2.13.0}"
  run_step torch "${PIP[@]}" "torch==${HPCGAN_TORCH:-2.13.0}"
fi

# 3. Python dependencies ------------------------------------------------------
DEPS=(mpi4py h5py numpy pyyaml matplotlib tqdm tensorboard scipy scikit-image astropy galsim optuna safetensors pytest pytest-timeout)
missing=$("$PY" - "${DEPS[@]}" <<'PYEOF'
import importlib.util, sys
names = {"pyyaml": "yaml", "pytest-timeout": "pytest_timeout", "scikit-image": "skimage"}
print(" ".join(d for d in sys.argv[1:] if importlib.util.find_spec(names.get(d, d)) is None))
PYEOF
)
if [ -n "$missing" ]; then
  log "installing $missing"
  # shellcheck disable=SC2086
  run_step python-deps "${PIP[@]}" -c "$CONSTRAINTS" $missing
fi

# 4. Horovod ------------------------------------------------------------------
if ! "$PY" -c "import horovod.torch" >/dev/null 2>&1; then
  # The key holds the build-tool pins' hash: new pins mean a new build.
  PINS=$(sha256sum "$ROOT/scripts/constraints-build.txt" | cut -c1-8)
  TAG=$("$PY" -c 'import sys,torch; print("py%d%d-torch%s" % (sys.version_info[0], sys.version_info[1], torch.__version__.replace("+", "_")))')
  # NCCL only for a CUDA build of torch with nvcc visible (nvcc alone is not enough).
  GPU_TAG=cpu
  if command -v nvcc >/dev/null 2>&1 && "$PY" -c 'import sys,torch; sys.exit(torch.version.cuda is None)'; then GPU_TAG=nccl; fi
  WHEELDIR="$CACHE/wheels/horovod-$HOROVOD_VERSION-$TAG-$GPU_TAG-pins$PINS"
  WHEEL=$(ls "$WHEELDIR"/horovod-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$WHEEL" ]; then
    log "building Horovod $HOROVOD_VERSION from source ($TAG, $GPU_TAG); about 3 minutes on 2 cores, log in $HPCGAN_SETUP_LOGS"
    BUILD=$(mktemp -d)
    run_step horovod-download "$PY" -m pip download --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$BUILD"
    tar -xzf "$BUILD"/horovod-"$HOROVOD_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/horovod-$HOROVOD_VERSION"
    # C++17 fix (upstream PR 3998, never released): torch >= 2.1 headers need it.
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
      "$SRC/CMakeLists.txt" "$SRC/horovod/torch/CMakeLists.txt"
    grep -q 'CMAKE_CXX_STANDARD 17' "$SRC/horovod/torch/CMakeLists.txt" \
      || die "the C++17 patch did not apply to $SRC/horovod/torch/CMakeLists.txt"
    # Build tools at pinned versions: cmake 4 refuses the cmake_minimum_required
    # of Horovod's vendored gloo ("Compatibility with CMake < 3.5 has been removed").
    run_step horovod-build-tools "${PIP[@]}" -c "$CONSTRAINTS" cmake setuptools packaging wheel psutil cloudpickle pyyaml
    # A cmake from a site module (not the venv's) may still be 4.x: give it the policy floor too.
    export CMAKE_POLICY_VERSION_MINIMUM=3.5
    export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
           HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
    [ "$GPU_TAG" = nccl ] && export HOROVOD_GPU_OPERATIONS=NCCL
    export MAKEFLAGS="-j$(nproc)"
    rm -rf "$WHEELDIR.tmp" && mkdir -p "$WHEELDIR.tmp"
    (cd "$SRC" && run_step horovod-build "$PY" -m pip wheel -v --no-build-isolation --no-deps . -w "$WHEELDIR.tmp")
    mkdir -p "$WHEELDIR"
    mv "$WHEELDIR.tmp"/horovod-*.whl "$WHEELDIR"/ && rmdir "$WHEELDIR.tmp"
    rm -rf "$BUILD"
    WHEEL=$(ls "$WHEELDIR"/horovod-*.whl | head -n1)
  else
    log "using cached Horovod wheel $WHEEL"
  fi
  run_step horovod-install "${PIP[@]}" -c "$CONSTRAINTS" "$WHEEL"
  run_step horovod-check "$PY" -c "import horovod.torch"
fi

# 5. hpcgan -------------------------------------------------------------------
if ! "$PY" -c "import hpcgan" >/dev/null 2>&1 || [ "$ROOT/setup.py" -nt "$VENV/.hpcgan-installed" ]; then
  run_step hpcgan "${PIP[@]}" --no-build-isolation --no-deps -e "$ROOT"
  touch "$VENV/.hpcgan-installed"
fi
log "ready: $("$PY" -c 'import torch,horovod; print("torch", torch.__version__, "horovod", horovod.__version__)')"
