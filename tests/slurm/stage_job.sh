#!/bin/bash
# Test job: `hpcgan train` through jobs/env.sh like jobs/train_lhc.sh, without its --ntasks-per-node=2 header,
# which Slurm refuses on the one-CPU nodes n1, n2 even with --overcommit. Submit with
# `sbatch -p multi -N 2 -n 4 --overcommit` for 2 ranks on each node. Arguments: config overrides.
#SBATCH --job-name=hpcgan-stage
#SBATCH --time=00:05:00
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
source "$HPCGAN_HOME/jobs/env.sh"
srun ${HPCGAN_SRUN_MPI:+--mpi=$HPCGAN_SRUN_MPI} --kill-on-bad-exit=1 --open-mode=append -u "$HPCGAN" info || exit $?
# shellcheck disable=SC2086  # HPCGAN_OVERRIDES is a space-separated list on purpose
srun ${HPCGAN_SRUN_MPI:+--mpi=$HPCGAN_SRUN_MPI} --kill-on-bad-exit=1 --open-mode=append -u \
    "$HPCGAN" train --config lhc --device "$HPCGAN_DEVICE" run_dir="$HPCGAN_RUN_DIR" $HPCGAN_OVERRIDES "$@"
hpcgan_finish $?
