#!/bin/bash
# Generate LHC tracks with a trained generator: every rank runs inference on its contiguous share of the input.
#
#   HPCGAN_CHECKPOINT=runs/hpcgan-lhc sbatch jobs/generate_lhc.sh
#   HPCGAN_CHECKPOINT=runs/lhc HPCGAN_DATA='data/lhc-val*.h5' HPCGAN_OUT=results/gen.h5 sbatch -n 4 jobs/generate_lhc.sh
#
# Every #SBATCH default below can be overridden on the sbatch command line; trailing arguments are passed to
# `hpcgan generate` (e.g. --batch-size 4096). Variables:
#   HPCGAN_CHECKPOINT  checkpoint file or run directory (its newest valid checkpoint)  [required]
#   HPCGAN_DATA        input HDF5 file or glob of measured hits (default data/lhc-val*.h5)
#   HPCGAN_OUT         output HDF5: inputs + generated tracks (default <run dir>/generated-<job id>.h5)
#   HPCGAN_PROFILE, HPCGAN_HOME, HPCGAN_WORKDIR, HPCGAN_VENV, ...: see jobs/env.sh
# Inference has no checkpoint to take, so no --signal/--requeue: a killed job is simply resubmitted.
#SBATCH --job-name=hpcgan-generate-lhc
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --time=00:30:00
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

# sbatch runs a spooled copy of this file: find the repository from the submitted path (or HPCGAN_HOME).
: "${HPCGAN_HOME:=$(cd "$(dirname "$(scontrol show job "${SLURM_JOB_ID:?submit with sbatch}" | sed -n 's/^ *Command=\([^ ]*\).*/\1/p')")/.." && pwd)}"
source "$HPCGAN_HOME/jobs/env.sh"
: "${HPCGAN_CHECKPOINT:?set HPCGAN_CHECKPOINT to a checkpoint file or run directory}"
HPCGAN_DATA=${HPCGAN_DATA:-data/lhc-val*.h5}
if [ -d "$HPCGAN_CHECKPOINT" ]; then run=$HPCGAN_CHECKPOINT; else run=$(dirname "$(dirname "$HPCGAN_CHECKPOINT")"); fi
HPCGAN_OUT=${HPCGAN_OUT:-$run/generated-$SLURM_JOB_ID.h5}

srun ${HPCGAN_SRUN_MPI:+--mpi=$HPCGAN_SRUN_MPI} --kill-on-bad-exit=1 --open-mode=append -u \
    "$HPCGAN" generate --device "$HPCGAN_DEVICE" --checkpoint "$HPCGAN_CHECKPOINT" --config lhc --data "$HPCGAN_DATA" --out "$HPCGAN_OUT" "$@"
hpcgan_finish $?
