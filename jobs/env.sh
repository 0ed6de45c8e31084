# jobs/env.sh -- sourced by every job script in jobs/: the machine profile and the run-time environment.
#
# Profiles (HPCGAN_PROFILE, default local):
#   local        this repository's .venv (HPCGAN_VENV), srun --mpi=pmix; what the local test cluster uses
#   daint        Cray XC50 (Piz Daint, one P100 per node): module load daint-gpu + PyTorch/Horovod modules,
#                Cray MPICH through srun's default PMI, NCCL on the Aries network (ipogif0), CUDA MPS
#   generic-gpu  a SLURM GPU cluster: one task per GPU (submit with --gpus-per-task=1), srun --mpi=pmix,
#                the venv in HPCGAN_VENV (or whatever python/hpcgan is first on PATH)
#   alps         CSCS Alps (GH200 nodes, four GPUs each, Slingshot): one task per GPU, NCCL through the
#                site's aws-ofi-nccl libfabric plugin, the software from a uenv or a container.
#                NOT YET RUN on the real machine: written from CSCS's documentation; check it on a first job.
# The GPU profiles train with device=cuda: a rank that sees no GPU (a forgotten --gpus-per-task) stops
# the job with a one-line error (exit 2) instead of training on the CPU for the whole allocation.
#
# Variables a user may set before sbatch (sbatch exports the submitting environment):
#   HPCGAN_PROFILE           local | daint | generic-gpu | alps
#   HPCGAN_DEVICE            auto | cpu | cuda (default: cuda under the GPU profiles, auto under local)
#   HPCGAN_HOME              repository root (default: found from the submitted script's path)
#   HPCGAN_WORKDIR           where the step runs; relative paths in presets (data/, runs/) resolve here
#                            (default: the directory sbatch was called from)
#   HPCGAN_VENV              virtual environment to activate (local: $HPCGAN_HOME/.venv)
#   HPCGAN_MODULES           daint: modules to load after daint-gpu (default: "PyTorch Horovod")
#   HPCGAN_RUN_DIR           run directory (default runs/<job name>, for an element of a job array
#                            runs/<job name>-<task id as 3 digits>): a requeued job, and a job submitted again
#                            under the same name, finds its checkpoints there and resumes. One live job at a
#                            time per run directory (hpcgan_use_run_dir): set it to run the same name twice.
#   HPCGAN_OVERRIDES         extra key=value config overrides, space separated
#   HPCGAN_MAX_REQUEUES      requeues after preemption before the job gives up (default 3)
#   HPCGAN_SRUN_MPI          srun --mpi value (local/generic-gpu: pmix; daint: empty = the cluster's default)
#   HPCGAN_COLLECTIVE_TIMEOUT  seconds a torch.distributed collective may wait for a dead rank (default 120)
#   HOROVOD_STALL_CHECK_TIME_SECONDS / HOROVOD_STALL_SHUTDOWN_TIME_SECONDS  Horovod's stall warning / shutdown
#   HPCGAN_PREEMPT_SIGNALS   signals that request checkpoint + requeue (default USR2,TERM; must include the
#                            one in #SBATCH --signal)
#   HPCGAN_FAULT             fault injection for tests: RANK:STEP:raise|exit|kill|hang
#
# Provides: $HPCGAN (the hpcgan command), $HPCGAN_SRUN_MPI, hpcgan_use_run_dir (training scripts: take
# the run directory, or exit 2 while another live job holds it) and hpcgan_finish RC (requeue after
# preemption within the cap, or exit with the step's code). The scripts call srun themselves, visibly.
# shellcheck shell=bash

set -uo pipefail

_hpcgan_find_home() {
    # sbatch runs a copy of the script from the spool directory: ask slurmctld for the submitted path.
    local cmd=""
    if [ -n "${SLURM_JOB_ID:-}" ] && command -v scontrol >/dev/null; then
        cmd=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -n 1)
    fi
    if [ -n "$cmd" ] && [ -f "$cmd" ]; then
        (cd "$(dirname "$cmd")/.." && pwd)
    else
        (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    fi
}

export HPCGAN_PROFILE=${HPCGAN_PROFILE:-local}
export HPCGAN_HOME=${HPCGAN_HOME:-$(_hpcgan_find_home)}
export HPCGAN_WORKDIR=${HPCGAN_WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}
export HPCGAN_MAX_REQUEUES=${HPCGAN_MAX_REQUEUES:-3}
if [ -z "${HPCGAN_RUN_DIR:-}" ]; then   # keyed by name, not job id: a resubmitted job resumes
    HPCGAN_RUN_DIR=runs/${SLURM_JOB_NAME:-hpcgan}
    # Array elements by task id, zero-padded like the point-NNN directories of `hpcgan sweep`.
    [ -n "${SLURM_ARRAY_TASK_ID:-}" ] && HPCGAN_RUN_DIR+=$(printf -- '-%03d' "$SLURM_ARRAY_TASK_ID")
fi
export HPCGAN_RUN_DIR
export HPCGAN_OVERRIDES=${HPCGAN_OVERRIDES:-}
export HPCGAN_PREEMPT_SIGNALS=${HPCGAN_PREEMPT_SIGNALS:-USR2,TERM}
# A dead rank must not leave the others waiting forever (measured in tests/slurm/test_failures.py):
# torch.distributed collectives time out; Horovod warns after the check time and shuts down after the other.
export HPCGAN_COLLECTIVE_TIMEOUT=${HPCGAN_COLLECTIVE_TIMEOUT:-120}
export HOROVOD_STALL_CHECK_TIME_SECONDS=${HOROVOD_STALL_CHECK_TIME_SECONDS:-60}
export HOROVOD_STALL_SHUTDOWN_TIME_SECONDS=${HOROVOD_STALL_SHUTDOWN_TIME_SECONDS:-120}
export HDF5_USE_FILE_LOCKING=FALSE   # parallel readers on Lustre/GPFS/NFS
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-1}}
EXIT_REQUEUE=75   # hpcgan.runtime.signals.EXIT_REQUEUE

case $HPCGAN_PROFILE in
    local)
        HPCGAN_VENV=${HPCGAN_VENV:-$HPCGAN_HOME/.venv}
        HPCGAN_SRUN_MPI=${HPCGAN_SRUN_MPI-pmix}
        HPCGAN_DEVICE=${HPCGAN_DEVICE:-auto}
        ;;
    daint)
        # Cray XC50: one P100 per node, so one rank per node and 12 cores for it (submit with -C gpu).
        if command -v module >/dev/null 2>&1 || [ -n "${MODULESHOME:-}" ]; then
            module load daint-gpu
            # shellcheck disable=SC2086
            module load ${HPCGAN_MODULES:-PyTorch Horovod}
        else
            echo "hpcgan env: profile daint but no 'module' command (not on a Cray login/compute node?)" >&2
        fi
        export CRAY_CUDA_MPS=1             # several processes may share the node's GPU (benchmarks, tests)
        export NCCL_IB_HCA=ipogif0         # NCCL over the Aries interface
        export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
        export HOROVOD_GPU_OPERATIONS=${HOROVOD_GPU_OPERATIONS:-NCCL}
        export MPICH_MAX_THREAD_SAFETY=multiple
        HPCGAN_VENV=${HPCGAN_VENV:-}
        HPCGAN_SRUN_MPI=${HPCGAN_SRUN_MPI-}
        HPCGAN_DEVICE=${HPCGAN_DEVICE:-cuda}
        if [ "${SLURM_NTASKS_PER_NODE:-1}" != 1 ] || [ "${SLURM_CPUS_PER_TASK:-0}" != 12 ]; then
            echo "hpcgan env: daint runs one rank per node with 12 cores: submit with" \
                 "sbatch -C gpu --ntasks-per-node=1 --cpus-per-task=12 -N NODES ..." >&2
        fi
        ;;
    generic-gpu)
        export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
        export HOROVOD_GPU_OPERATIONS=${HOROVOD_GPU_OPERATIONS:-NCCL}
        HPCGAN_VENV=${HPCGAN_VENV:-}
        HPCGAN_SRUN_MPI=${HPCGAN_SRUN_MPI-pmix}
        HPCGAN_DEVICE=${HPCGAN_DEVICE:-cuda}
        ;;
    alps)
        # CSCS Alps: GH200 nodes with four GPUs and four Slingshot NICs; not yet run on the real machine.
        # NCCL must use the aws-ofi-nccl plugin (a uenv or the container engine's hook provides it):
        # NCCL_NET makes a job without the plugin fail at start instead of crawling over TCP. The other
        # values are the ones CSCS documents for NCCL on Slingshot; a container hook's own values win.
        export NCCL_NET=${NCCL_NET:-AWS Libfabric}
        export NCCL_NET_GDR_LEVEL=${NCCL_NET_GDR_LEVEL:-PHB}
        export FI_CXI_DISABLE_HOST_REGISTER=${FI_CXI_DISABLE_HOST_REGISTER:-1}
        export FI_MR_CACHE_MONITOR=${FI_MR_CACHE_MONITOR:-userfaultfd}
        export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
        export HOROVOD_GPU_OPERATIONS=${HOROVOD_GPU_OPERATIONS:-NCCL}
        export MPICH_GPU_SUPPORT_ENABLED=${MPICH_GPU_SUPPORT_ENABLED:-0}   # MPI carries control messages only
        HPCGAN_VENV=${HPCGAN_VENV:-}
        HPCGAN_SRUN_MPI=${HPCGAN_SRUN_MPI-}   # the site's default PMI
        HPCGAN_DEVICE=${HPCGAN_DEVICE:-cuda}
        if [ "${SLURM_NTASKS_PER_NODE:-4}" != 4 ]; then
            echo "hpcgan env: alps nodes have four GPUs: submit with --ntasks-per-node=4 --gpus-per-task=1" >&2
        fi
        ;;
    *)
        echo "hpcgan env: HPCGAN_PROFILE=$HPCGAN_PROFILE: expected local, daint, generic-gpu or alps" >&2
        exit 2
        ;;
esac
export HPCGAN_VENV HPCGAN_SRUN_MPI HPCGAN_DEVICE

if [ -n "$HPCGAN_VENV" ]; then
    if [ ! -x "$HPCGAN_VENV/bin/hpcgan" ]; then
        echo "hpcgan env: HPCGAN_VENV=$HPCGAN_VENV has no bin/hpcgan (run 'make env', or set HPCGAN_VENV)" >&2
        exit 2
    fi
    export VIRTUAL_ENV=$HPCGAN_VENV
    export PATH=$HPCGAN_VENV/bin:$PATH
fi
HPCGAN=$(command -v hpcgan || true)
if [ -z "$HPCGAN" ]; then
    echo "hpcgan env: no hpcgan command on PATH (profile $HPCGAN_PROFILE; pip install -e $HPCGAN_HOME)" >&2
    exit 2
fi

cd "$HPCGAN_WORKDIR" || { echo "hpcgan env: HPCGAN_WORKDIR=$HPCGAN_WORKDIR does not exist" >&2; exit 2; }

# SIGTERM reaches the batch shell too (preemption, time limit, scancel). Untrapped, it ends the shell at
# once, and hpcgan_finish never requeues. Trapped, bash first waits for the step, then runs the trap, then
# goes on to hpcgan_finish. Where the same TERM reached the ranks only, they checkpoint and exit 75. Where
# it reached srun as well (`scancel --signal=TERM --full`), srun answers it by killing its ranks at once
# (SIGKILL), before any checkpoint: hpcgan_finish then requeues all the same, and the job resumes from its
# last checkpoint.
HPCGAN_GOT_TERM=""
trap 'HPCGAN_GOT_TERM=1; echo "hpcgan job: SIGTERM to the batch script: waiting for the step to end" >&2' TERM

# After the step: requeue when it stopped for preemption, within the cap; else exit with its code.
# Preemption shows as exit 75 or as the marker rank 0 writes after its checkpoint: under
# --kill-on-bad-exit, srun kills the ranks still exiting once the first one exits 75, and
# then reports the kill instead of 75. hpcgan_use_run_dir removes a marker left by an earlier step.
REQUEUE_MARKER=$HPCGAN_RUN_DIR/requeue-requested   # hpcgan.runtime.signals.REQUEUE_MARKER
RUN_DIR_LOCK=$HPCGAN_RUN_DIR/job.lock
hpcgan_finish() {
    local rc=$1 restarts=${SLURM_RESTART_COUNT:-0} job state reason
    if [ -e "$REQUEUE_MARKER" ]; then
        rm -f "$REQUEUE_MARKER"
        [ "$rc" -ne 0 ] && rc=$EXIT_REQUEUE
    fi
    if [ -n "$HPCGAN_GOT_TERM" ] && [ "$rc" -ne 0 ] && [ "$rc" -ne "$EXIT_REQUEUE" ]; then
        echo "hpcgan job: the step ended (exit $rc) on SIGTERM before a preemption checkpoint (srun kills" \
             "its ranks when TERM reaches it too): a requeued job resumes from the last checkpoint" >&2
        rc=$EXIT_REQUEUE
    fi
    if [ "$rc" -eq "$EXIT_REQUEUE" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
        # scontrol requeue also takes a job that scancel is ending (COMPLETING, Reason=None): that one the
        # user meant to stop. At the time limit (Reason=TimeLimit) or on preemption the job goes on.
        job=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null)
        state=$(sed -n 's/^ *JobState=\([A-Z_]*\).*/\1/p' <<<"$job")
        reason=$(sed -n 's/^ *JobState=[A-Z_]* Reason=\([^ ]*\).*/\1/p' <<<"$job")
        if [ -n "$state" ] && [ "$state" != RUNNING ] && [ "$reason" = None ]; then
            echo "hpcgan job: job $SLURM_JOB_ID was cancelled ($state), not requeueing; submit it again" \
                 "under the same name (or HPCGAN_RUN_DIR=$HPCGAN_RUN_DIR) to resume" >&2
        elif [ "$restarts" -lt "$HPCGAN_MAX_REQUEUES" ]; then
            echo "hpcgan job: preempted with a checkpoint in $HPCGAN_RUN_DIR; requeue $((restarts + 1))" \
                 "of at most $HPCGAN_MAX_REQUEUES ($(date -Is))" >&2
            scontrol requeue "$SLURM_JOB_ID" && exit 0   # the requeued job keeps its id, so keeps the lock
            echo "hpcgan job: scontrol requeue $SLURM_JOB_ID failed; resubmit with HPCGAN_RUN_DIR=$HPCGAN_RUN_DIR" >&2
        else
            echo "hpcgan job: preempted again after $restarts requeues (HPCGAN_MAX_REQUEUES=$HPCGAN_MAX_REQUEUES);" \
                 "not requeueing. Resume with HPCGAN_RUN_DIR=$HPCGAN_RUN_DIR sbatch ..." >&2
        fi
    fi
    if [ -n "${SLURM_JOB_ID:-}" ] && [ "$(cat "$RUN_DIR_LOCK" 2>/dev/null)" = "$SLURM_JOB_ID" ]; then
        rm -f "$RUN_DIR_LOCK"
    fi
    exit "$rc"
}

# Before a training step: take the run directory for this job, or stop (exit 2) when another live job
# holds it; two jobs writing one run directory would interleave their checkpoints. RUN_DIR_LOCK names the
# holder's job id and outlives the step, so a requeued job (same id) keeps the directory between its runs;
# `hpcgan train` itself also holds an flock on run.lock while it runs. Reading, checking and writing
# RUN_DIR_LOCK happen under flock(1) on $RUN_DIR_LOCK.mutex, so two jobs starting together cannot both take
# it. A holder is stale only when squeue says it is gone: not listed, or "Invalid job id" (purged). Any other
# squeue failure (slurmctld busy or down) means busy: the directory is never taken from a job that may run.
hpcgan_use_run_dir() {
    mkdir -p "$HPCGAN_RUN_DIR" || { echo "hpcgan job: cannot create HPCGAN_RUN_DIR=$HPCGAN_RUN_DIR" >&2; exit 2; }
    [ -n "${SLURM_JOB_ID:-}" ] || { rm -f "$REQUEUE_MARKER"; return 0; }
    local rc=0
    exec 8>>"$RUN_DIR_LOCK.mutex" || { echo "hpcgan job: cannot open $RUN_DIR_LOCK.mutex" >&2; exit 2; }
    if ! flock -w "${HPCGAN_LOCK_WAIT_S:-60}" 8; then
        echo "hpcgan job: could not lock $RUN_DIR_LOCK.mutex within ${HPCGAN_LOCK_WAIT_S:-60} s (another job" \
             "is taking $HPCGAN_RUN_DIR, or the file system has no flock)" >&2
        exit 2
    fi
    hpcgan_take_run_dir_locked || rc=$?
    exec 8>&-   # releases the mutex
    [ "$rc" -eq 0 ] || exit "$rc"
    rm -f "$REQUEUE_MARKER"
}

# The critical section of hpcgan_use_run_dir (the mutex is held): 0 when this job now holds RUN_DIR_LOCK.
hpcgan_take_run_dir_locked() {
    local holder state out err
    holder=$(cat "$RUN_DIR_LOCK" 2>/dev/null)
    if [ -n "$holder" ] && [ "$holder" != "$SLURM_JOB_ID" ]; then
        err=$(mktemp)
        if out=$(squeue -h -j "$holder" -o "%A %T" 2>"$err"); then
            # The holder's own line: for the id of an array's first element, squeue lists the whole array.
            state=$(awk -v id="$holder" '$1 == id {print $2; exit}' <<<"$out")
        elif grep -qi "invalid job id" "$err"; then
            state=""   # purged from slurmctld: long gone
        else
            echo "hpcgan job: run directory $HPCGAN_RUN_DIR is held by job $holder and squeue could not say" \
                 "whether it still runs ($(head -n1 "$err")): treating it as busy; retry later" >&2
            rm -f "$err"
            return 2
        fi
        rm -f "$err"
        case $state in
            ""|COMPLETED|CANCELLED|FAILED|TIMEOUT|NODE_FAIL|PREEMPTED|BOOT_FAIL|DEADLINE|OUT_OF_MEMORY|REVOKED|SPECIAL_EXIT)
                echo "hpcgan job: run directory $HPCGAN_RUN_DIR: lock of job $holder is stale" \
                     "(${state:-not in squeue}); taking it" >&2 ;;
            *)
                echo "hpcgan job: run directory $HPCGAN_RUN_DIR is in use by job $holder ($state); wait for" \
                     "it or scancel it, or give this job another name or HPCGAN_RUN_DIR" >&2
                return 2 ;;
        esac
    fi
    echo "$SLURM_JOB_ID" > "$RUN_DIR_LOCK.$SLURM_JOB_ID" && mv -f "$RUN_DIR_LOCK.$SLURM_JOB_ID" "$RUN_DIR_LOCK"
}

echo "hpcgan job ${SLURM_JOB_ID:-(no job)}: profile $HPCGAN_PROFILE, restart ${SLURM_RESTART_COUNT:-0}," \
     "$(hostname -s), ${SLURM_NTASKS:-1} task(s) on ${SLURM_JOB_NUM_NODES:-1} node(s), run dir $HPCGAN_RUN_DIR," \
     "hpcgan $HPCGAN" >&2
