#!/bin/bash
# Test job: tests/slurm/stepper.py (the trainer's step-boundary protocol without a model) through jobs/env.sh.
# Arguments: STEPS STEP_SECONDS [--backend NAME]
#SBATCH --job-name=hpcgan-stepper
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --time=00:05:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
source "$HPCGAN_HOME/jobs/env.sh"
hpcgan_use_run_dir
srun ${HPCGAN_SRUN_MPI:+--mpi=$HPCGAN_SRUN_MPI} --kill-on-bad-exit=1 --open-mode=append -u \
    python "$HPCGAN_HOME/tests/slurm/stepper.py" "$HPCGAN_RUN_DIR" "$@"
hpcgan_finish $?
