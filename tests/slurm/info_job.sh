#!/bin/bash
# Test job: `hpcgan info` on every rank of the allocation, through jobs/env.sh like the real job scripts.
#SBATCH --job-name=hpcgan-info
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --time=00:05:00
#SBATCH --output=%x-%j.out
source "$HPCGAN_HOME/jobs/env.sh"
srun ${HPCGAN_SRUN_MPI:+--mpi=$HPCGAN_SRUN_MPI} --kill-on-bad-exit=1 --open-mode=append -u "$HPCGAN" info "$@"
hpcgan_finish $?
