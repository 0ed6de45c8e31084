#!/bin/bash
# Train the cloud-reflectance-field GAN: `sbatch jobs/train_crf.sh [key=value ...]` (trailing arguments are config overrides).
#
#   sbatch jobs/train_crf.sh                                   the `crf` preset, 2 ranks on one node
#   sbatch -N 2 --ntasks-per-node=1 jobs/train_crf.sh train.epochs=2
#   HPCGAN_PROFILE=daint sbatch -C gpu -N 8 --ntasks-per-node=1 --cpus-per-task=12 jobs/train_crf.sh
#
# Every #SBATCH default below can be overridden on the sbatch command line. Variables:
#   HPCGAN_CONFIG     preset name or YAML path (default crf; crf-small for a quick run)
#   HPCGAN_RUN_DIR    run directory (default runs/<job name>; a requeued or resubmitted job resumes from it)
#   HPCGAN_OVERRIDES  extra key=value overrides, space separated (applied before the command-line ones)
#   HPCGAN_INFO=1     first run `hpcgan info` as its own step: rank, local rank, node and device of every rank
#   HPCGAN_PROFILE, HPCGAN_HOME, HPCGAN_WORKDIR, HPCGAN_VENV, HPCGAN_MAX_REQUEUES, ...: see jobs/env.sh
# Preemption: SLURM sends SIGUSR2 120 s before the time limit to the step's ranks; they checkpoint at the next
# step boundary and exit 75; hpcgan_finish then requeues the job (at most HPCGAN_MAX_REQUEUES times).
# SIGTERM (preemption) is handled the same way; see jobs/env.sh.
#SBATCH --job-name=hpcgan-crf
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --time=04:00:00
#SBATCH --signal=USR2@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

# sbatch runs a spooled copy of this file: find the repository from the submitted path (or HPCGAN_HOME).
: "${HPCGAN_HOME:=$(cd "$(dirname "$(scontrol show job "${SLURM_JOB_ID:?submit with sbatch}" | sed -n 's/^ *Command=\([^ ]*\).*/\1/p')")/.." && pwd)}"
source "$HPCGAN_HOME/jobs/env.sh"
hpcgan_use_run_dir
export HPCGAN_CONFIG=${HPCGAN_CONFIG:-crf}

if [ "${HPCGAN_INFO:-0}" = 1 ]; then   # where every rank landed (rank, local rank, node, device): a first-run check
    srun ${HPCGAN_SRUN_MPI:+--mpi=$HPCGAN_SRUN_MPI} --kill-on-bad-exit=1 --open-mode=append -u "$HPCGAN" info || exit $?
fi
# shellcheck disable=SC2086  # HPCGAN_OVERRIDES is a space-separated list on purpose
srun ${HPCGAN_SRUN_MPI:+--mpi=$HPCGAN_SRUN_MPI} --kill-on-bad-exit=1 --open-mode=append -u \
    "$HPCGAN" train --config "$HPCGAN_CONFIG" --device "$HPCGAN_DEVICE" run_dir="$HPCGAN_RUN_DIR" $HPCGAN_OVERRIDES "$@"
hpcgan_finish $?
