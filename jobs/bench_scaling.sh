#!/bin/bash
# Scaling benchmark: samples/s and efficiency at each rank count of a sweep, weak and strong, per backend.
#
#   sbatch jobs/bench_scaling.sh                                    1 and 2 ranks on one node (the defaults)
#   sbatch -N 8 --ntasks-per-node=1 jobs/bench_scaling.sh           1, 2, 4, 8 ranks (one per node)
#   HPCGAN_PROFILE=daint sbatch -C gpu -N 16 --ntasks-per-node=1 --cpus-per-task=12 jobs/bench_scaling.sh
#
# Every #SBATCH default can be overridden on the sbatch command line; trailing arguments go to
# `hpcgan bench scaling` (see `hpcgan bench scaling --help`). The benchmark launches each rank count inside
# this allocation itself, as one srun step (--launcher srun, under every profile: a Cray has no Open MPI launcher), on
# the device of the profile (HPCGAN_DEVICE). Its data file lies beside the results, under HPCGAN_WORKDIR: on a
# shared file system every node reads it (each node has its own /tmp). Variables:
#   HPCGAN_BENCH_RANKS      comma list of rank counts (default 1,2,4,... up to the job's task count)
#   HPCGAN_BENCH_WORKLOADS  subset of lhc,crf-small,crf (default lhc)
#   HPCGAN_BENCH_BACKENDS   horovod,torch (default horovod,torch)
#   HPCGAN_BENCH_ARGS       more options, space separated (e.g. "--modes weak --iters 2,3,4")
#   HPCGAN_BENCH_DIR        results folder: scaling.json and its plots (default results/<job name>-<job id>),
#                           relative to HPCGAN_WORKDIR
#   HPCGAN_PROFILE, HPCGAN_HOME, HPCGAN_WORKDIR, HPCGAN_VENV, ...: see jobs/env.sh
#SBATCH --job-name=hpcgan-bench-scaling
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

# sbatch runs a spooled copy of this file: find the repository from the submitted path (or HPCGAN_HOME).
: "${HPCGAN_HOME:=$(cd "$(dirname "$(scontrol show job "${SLURM_JOB_ID:?submit with sbatch}" | sed -n 's/^ *Command=\([^ ]*\).*/\1/p')")/.." && pwd)}"
source "$HPCGAN_HOME/jobs/env.sh"
if [ -z "${HPCGAN_BENCH_RANKS:-}" ]; then
    HPCGAN_BENCH_RANKS=1
    n=2; while [ "$n" -le "${SLURM_NTASKS:-1}" ]; do HPCGAN_BENCH_RANKS+=",$n"; n=$((n * 2)); done
fi
HPCGAN_BENCH_DIR=${HPCGAN_BENCH_DIR:-results/$SLURM_JOB_NAME-$SLURM_JOB_ID}
mkdir -p "$HPCGAN_BENCH_DIR"

# shellcheck disable=SC2086  # HPCGAN_BENCH_ARGS is a space-separated list on purpose
"$HPCGAN" bench scaling --launcher srun --device "$HPCGAN_DEVICE" --ranks "$HPCGAN_BENCH_RANKS" \
    --workloads "${HPCGAN_BENCH_WORKLOADS:-lhc}" --backends "${HPCGAN_BENCH_BACKENDS:-horovod,torch}" \
    --out "$HPCGAN_BENCH_DIR/scaling.json" ${HPCGAN_BENCH_ARGS:-} "$@" || exit $?
"$HPCGAN" bench plot --results "$HPCGAN_BENCH_DIR" --kinds scaling
