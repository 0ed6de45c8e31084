#!/usr/bin/env bash
# Create .venv with everything hpcgan needs, from nothing, idempotently.
#
# What it does (each step skipped when already satisfied):
#   1. Open MPI: apt-get when no `mpicc` is on PATH and we are root; on a
#      cluster, load your MPI module first (Cray: `module load cray-mpich`).
#   2. .venv with torch (an existing torch in the base Python is kept through
#      --system-site-packages; otherwise torch==$HPCGAN_TORCH, default 2.13.0).
#   3. mpi4py, h5py, numpy, pyyaml, matplotlib, tqdm, tensorboard, pytest.
#   4. Horovod 0.28.1 from its source archive, patched to C++17 (it does not
#      build against torch >= 2.1 as released), with PyTorch + MPI + Gloo
#      (+ NCCL when nvcc is visible). The wheel is cached under
#      ~/.cache/hpcgan/wheels keyed by Python and torch version.
#   5. hpcgan itself, editable.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HPCGAN_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
HOROVOD_VERSION=0.28.1
CACHE="${HPCGAN_CACHE:-$HOME/.cache/hpcgan}"
log() { echo "[setup_env] $*"; }

# 1. MPI --------------------------------------------------------------------
if ! command -v mpicc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "no mpicc found: installing Open MPI with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openmpi-bin libopenmpi-dev cmake >/dev/null
  else
    echo "[setup_env] error: no MPI compiler (mpicc) on PATH. On a cluster load the MPI module first" \
         "(Cray: 'module load cray-mpich'; elsewhere e.g. 'module load openmpi'), then rerun 'make env'." >&2
    exit 2
  fi
fi
command -v cmake >/dev/null 2>&1 || { [ "$(id -u)" = 0 ] && apt-get install -y -qq cmake >/dev/null; }

# 2. venv + torch -----------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    log "base Python already has torch $("$PYTHON" -c 'import torch;print(torch.__version__)'): keeping it"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)
export PIP_NO_WARN_SCRIPT_LOCATION=1
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  log "installing torch==${HPCGAN_TORCH:-2.13.0}"
  "${PIP[@]}" "torch==${HPCGAN_TORCH:-2.13.0}"
fi

# 3. Python dependencies ------------------------------------------------------
DEPS=(mpi4py h5py numpy pyyaml matplotlib tqdm tensorboard pytest pytest-timeout)
missing=$("$PY" - "${DEPS[@]}" <<'PYEOF'
import importlib.util, sys
names = {"pyyaml": "yaml", "pytest-timeout": "pytest_timeout"}
print(" ".join(d for d in sys.argv[1:] if importlib.util.find_spec(names.get(d, d)) is None))
PYEOF
)
if [ -n "$missing" ]; then
  log "installing $missing"
  # shellcheck disable=SC2086
  "${PIP[@]}" $missing
fi

# 4. Horovod ------------------------------------------------------------------
if ! "$PY" -c "import horovod.torch" >/dev/null 2>&1; then
  TAG=$("$PY" -c 'import sys,torch; print("py%d%d-torch%s" % (sys.version_info[0], sys.version_info[1], torch.__version__.replace("+", "_")))')
  # NCCL only for a CUDA build of torch with nvcc visible (nvcc alone is not enough).
  GPU_TAG=cpu
  if command -v nvcc >/dev/null 2>&1 && "$PY" -c 'import sys,torch; sys.exit(torch.version.cuda is None)'; then GPU_TAG=nccl; fi
  WHEELDIR="$CACHE/wheels/horovod-$HOROVOD_VERSION-$TAG-$GPU_TAG"
  WHEEL=$(ls "$WHEELDIR"/horovod-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$WHEEL" ]; then
    log "building Horovod $HOROVOD_VERSION from source ($TAG, $GPU_TAG); about 8 minutes on 2 cores"
    BUILD=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$BUILD"
    tar -xzf "$BUILD"/horovod-"$HOROVOD_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/horovod-$HOROVOD_VERSION"
    # C++17 fix (upstream PR 3998, never released): torch >= 2.1 headers need it.
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
      "$SRC/CMakeLists.txt" "$SRC/horovod/torch/CMakeLists.txt"
    grep -q 'CMAKE_CXX_STANDARD 17' "$SRC/horovod/torch/CMakeLists.txt"
    "${PIP[@]}" cmake packaging wheel psutil cloudpickle
    export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
           HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
    [ "$GPU_TAG" = nccl ] && export HOROVOD_GPU_OPERATIONS=NCCL
    export MAKEFLAGS="-j$(nproc)"
    mkdir -p "$WHEELDIR"
    (cd "$SRC" && "$PY" -m pip wheel -q --no-build-isolation --no-deps . -w "$WHEELDIR.tmp")
    mv "$WHEELDIR.tmp"/horovod-*.whl "$WHEELDIR"/ && rmdir "$WHEELDIR.tmp"
    rm -rf "$BUILD"
    WHEEL=$(ls "$WHEELDIR"/horovod-*.whl | head -n1)
  else
    log "using cached Horovod wheel $WHEEL"
  fi
  "${PIP[@]}" "$WHEEL"
fi

# 5. hpcgan -------------------------------------------------------------------
if ! "$PY" -c "import hpcgan" >/dev/null 2>&1 || [ "$ROOT/setup.py" -nt "$VENV/.hpcgan-installed" ]; then
  "${PIP[@]}" --no-build-isolation --no-deps -e "$ROOT"
  touch "$VENV/.hpcgan-installed"
fi
log "ready: $("$PY" -c 'import torch,horovod; print("torch", torch.__version__, "horovod", horovod.__version__)')"
