#!/usr/bin/env bash
# A real SLURM cluster on this machine, for the tests in tests/slurm/ and for trying the job scripts.
#
#   scripts/slurm_local.sh start [--nodes 1|2]   install if missing, write slurm.conf, start the daemons,
#                                                wait until every node is idle
#   scripts/slurm_local.sh stop                  cancel the jobs, stop what `start` started (by pid)
#   scripts/slurm_local.sh status                daemons, nodes, jobs
#
# Layout (Slurm 22.05, Debian packages slurmctld slurmd slurm-client munge):
#   partition `local` (default): node c1 with max(nproc, 2) CPUs          -- single-node jobs
#   partition `multi` (--nodes 2): nodes n1 and n2, one CPU each          -- multi-node jobs
# All slurmds run on this host (`slurmd -N NAME`, own port each). Each node has its own TmpFS
# ($STATE/tmp/NODE): Slurm's PMIx plugin makes spmix_appdir_JOB.STEP there, and two nodes sharing one
# directory collide ("File exists"). An earlier version mounted a private tmpfs /tmp per slurmd instead;
# that hid a checkout under /tmp from the jobs.
#
# Needs root (the daemons run as root, SlurmUser=root). Exit codes: 0 ok, 77 cannot run here
# (not root, no package manager), 1 a daemon did not come up (the log tail is printed).
#
# Variables: HPCGAN_SLURM_STATE (default /var/lib/hpcgan-slurm: spool, state, logs, pid files),
#            HPCGAN_SLURM_TIMEOUT (seconds to wait for idle nodes, default 60),
#            HPCGAN_SLURM_KILLWAIT (SIGTERM -> SIGKILL grace of job steps, default 10; Slurm's is 30),
#            HPCGAN_SLURM_CRED_EXPIRE (credential lifetime = delay before a requeued job may start again,
#            default 20; Slurm's is 120).
set -euo pipefail

STATE=${HPCGAN_SLURM_STATE:-/var/lib/hpcgan-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by hpcgan scripts/slurm_local.sh"
TIMEOUT=${HPCGAN_SLURM_TIMEOUT:-60}
KILLWAIT=${HPCGAN_SLURM_KILLWAIT:-10}
CRED_EXPIRE=${HPCGAN_SLURM_CRED_EXPIRE:-20}
HOST=$(hostname -s)

die() { echo "slurm_local: $*" >&2; exit 1; }
cannot() { echo "slurm_local: cannot run here: $*" >&2; exit 77; }

need_root() { [ "$(id -u)" -eq 0 ] || cannot "the SLURM daemons need root (running as $(id -un))"; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || cannot "slurmctld/slurmd/munge are missing and there is no apt-get"
    echo "slurm_local: installing slurmctld slurmd slurm-client munge (apt-get)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >&2
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { [ -s "$STATE/pids/$1" ] && cat "$STATE/pids/$1" || true; }

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return  # a munged is already serving this host (ours or the system's): use it
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null;
                                     chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key; }
    rm -f /run/munge/munged.pid
    runuser -u munge -- munged --force
    for _ in $(seq 50); do
        [ -s /run/munge/munged.pid ] && munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || die "munged did not start (see /var/log/munge/munged.log)"
    cp /run/munge/munged.pid "$STATE/pids/munged"
}

write_conf() {
    local nodes=$1 cpus mem
    cpus=$(nproc); [ "$cpus" -ge 2 ] || cpus=2
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        cp "$CONF" "$CONF.before-hpcgan"
        echo "slurm_local: kept the previous $CONF as $CONF.before-hpcgan" >&2
    fi
    mkdir -p "$(dirname "$CONF")"
    cat > "$CONF" <<EOF
$MARK ($(date -Is)); stop restores nothing, start rewrites it.
ClusterName=hpcgan
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire + 1 s before it may start again (default 120 s); shorter for tests.
AuthInfo=cred_expire=$CRED_EXPIRE
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
ReturnToService=2
JobRequeue=1
KillWait=$KILLWAIT
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmdParameters=config_overrides
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
# Per-node temporary directory: Slurm's PMIx plugin puts each step's spmix_appdir_* here, and nodes that
# share one host must not share it (they would collide on the same job.step name).
TmpFS=$STATE/tmp/%n
# ... and neither Open MPI's per-host files (write_task_prolog).
TaskProlog=$STATE/task_prolog.sh
SlurmctldPidFile=$STATE/pids/slurmctld
SlurmdPidFile=$STATE/pids/slurmd-%n
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=c1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17000 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=c1 Default=YES MaxTime=INFINITE State=UP
EOF
    write_task_prolog
    if [ "$nodes" = 2 ]; then
        cat >> "$CONF" <<EOF
NodeName=n1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17001 CPUs=1 RealMemory=$((mem / 2)) State=UNKNOWN
NodeName=n2 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17002 CPUs=1 RealMemory=$((mem / 2)) State=UNKNOWN
PartitionName=multi Nodes=n1,n2 Default=NO MaxTime=INFINITE State=UP
EOF
    fi
}

# Every task gets its node's own directory for Open MPI's session directory (default /tmp/ompi.HOST.UID/...)
# and shared-memory segments (default /dev/shm/vader_segment.HOST.UID.JOBID.LOCALRANK). Both are named
# by host name, job id and local rank; the fake nodes share one host name, /tmp and /dev/shm, so the two
# ranks of a two-node step (same job, each local rank 0) would create and remove the same files. Real
# nodes never share them.
write_task_prolog() {
    cat > "$STATE/task_prolog.sh" <<EOF
#!/bin/sh
# written by hpcgan scripts/slurm_local.sh: Slurm's TaskProlog, run on the node before each task;
# its "export" lines go into the task's environment.
d="$STATE/tmp/\$SLURMD_NODENAME/ompi"
mkdir -p "\$d" 2>/dev/null && chmod 1777 "\$d" 2>/dev/null
echo "export OMPI_MCA_orte_tmpdir_base=\$d"
echo "export OMPI_MCA_btl_vader_backing_directory=\$d"
EOF
    chmod 755 "$STATE/task_prolog.sh"
}

# Node names resolve to this host, so tools that read SLURM_JOB_NODELIST (torch.distributed's rendezvous) work.
add_hosts() {
    grep -q "hpcgan-slurm" /etc/hosts 2>/dev/null && return
    echo "127.0.0.1 c1 n1 n2 # hpcgan-slurm" >> /etc/hosts 2>/dev/null \
        || echo "slurm_local: could not add c1 n1 n2 to /etc/hosts (torch backend rendezvous may fail)" >&2
}

start_slurmd() {
    local name=$1
    mkdir -p "$STATE/spool/$name" "$STATE/tmp/$name"
    chmod 1777 "$STATE/tmp/$name"
    rm -f "$STATE/pids/slurmd-$name"
    setsid slurmd -D -N "$name" >>"$STATE/log/slurmd-$name.stdout" 2>&1 < /dev/null &
    echo $! > "$STATE/pids/slurmd-$name.launch"
}

wait_idle() {
    local want=$1 t0=$SECONDS states
    while [ $((SECONDS - t0)) -lt "$TIMEOUT" ]; do
        states=$(sinfo -h -N -o '%N=%t' 2>/dev/null | sort -u | tr '\n' ' ' || true)
        if [ "$(sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l)" -ge "$want" ]; then
            echo "slurm_local: up: $states" >&2
            return 0
        fi
        for f in "$STATE"/pids/slurmd-*.launch "$STATE/pids/slurmctld"; do
            [ -e "$f" ] || continue
            alive "$(cat "$f")" || { tail -n 20 "$STATE"/log/*.log "$STATE"/log/*.stdout >&2 2>/dev/null || true;
                                     die "daemon of $f exited"; }
        done
        sleep 0.5
    done
    tail -n 20 "$STATE"/log/* >&2 2>/dev/null || true
    die "nodes not idle after ${TIMEOUT}s: ${states:-no answer from slurmctld}"
}

cmd_start() {
    local nodes=1
    while [ $# -gt 0 ]; do
        case $1 in
            --nodes) nodes=${2:?--nodes needs 1 or 2}; shift 2 ;;
            --nodes=*) nodes=${1#*=}; shift ;;
            *) die "start: unknown argument $1 (expected --nodes 1|2)" ;;
        esac
    done
    case $nodes in 1|2) ;; *) die "start: --nodes $nodes (expected 1 or 2)" ;; esac
    need_root
    if alive "$(pid_of slurmctld)"; then
        die "already running (slurmctld pid $(pid_of slurmctld)); run '$0 stop' first"
    fi
    if pgrep -x slurmctld >/dev/null; then
        cannot "a slurmctld this script did not start is running (pid $(pgrep -x slurmctld | tr '\n' ' '))"
    fi
    command -v unshare >/dev/null || cannot "unshare (util-linux) is missing"
    install_packages
    rm -rf "$STATE/ctld" "$STATE/spool"
    mkdir -p "$STATE/ctld" "$STATE/spool" "$STATE/pids" "$STATE/log"
    : > "$STATE/log/slurmctld.log"
    start_munge
    write_conf "$nodes"
    add_hosts
    slurmctld -i >>"$STATE/log/slurmctld.stdout" 2>&1 < /dev/null
    for _ in $(seq 50); do [ -s "$STATE/pids/slurmctld" ] && break; sleep 0.1; done
    alive "$(pid_of slurmctld)" || { tail -n 30 "$STATE/log/slurmctld.log" >&2; die "slurmctld did not start"; }
    local names=c1
    [ "$nodes" = 2 ] && names="c1 n1 n2"
    for n in $names; do start_slurmd "$n"; done
    wait_idle "$(echo "$names" | wc -w)"
    for n in $names; do   # the pid the daemon wrote is authoritative; the launch pid is the same process
        [ -s "$STATE/pids/slurmd-$n" ] || cp "$STATE/pids/slurmd-$n.launch" "$STATE/pids/slurmd-$n"
    done
}

stop_pid() {  # stop_pid NAME: SIGTERM, wait up to 10 s, then SIGKILL
    local f="$STATE/pids/$1" pid
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && { echo "slurm_local: $1 (pid $pid) ignored SIGTERM, killing" >&2; kill -KILL "$pid" || true; }
    fi
    rm -f "$f" "$f.launch"
}

cmd_stop() {
    need_root
    if alive "$(pid_of slurmctld)"; then
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
        fi
    fi
    for f in "$STATE"/pids/slurmd-*; do
        [ -e "$f" ] || continue
        case $f in *.launch) continue ;; esac
        stop_pid "$(basename "$f")"
    done
    for f in "$STATE"/pids/slurmd-*.launch; do [ -e "$f" ] && { mv "$f" "${f%.launch}"; stop_pid "$(basename "${f%.launch}")"; }; done
    stop_pid slurmctld
    stop_pid munged   # only present when this script started munged
    echo "slurm_local: stopped" >&2
}

cmd_status() {
    local rc=0 f pid
    for f in "$STATE"/pids/*; do
        [ -e "$f" ] || continue
        case $f in *.launch) continue ;; esac
        pid=$(cat "$f")
        if alive "$pid"; then echo "$(basename "$f"): running (pid $pid)"; else echo "$(basename "$f"): dead (pid $pid)"; rc=1; fi
    done
    [ -e "$STATE/pids/slurmctld" ] || { echo "not started"; return 3; }
    sinfo -N -o '%N %P %t %c' || rc=1
    squeue || rc=1
    return $rc
}

case ${1:-} in
    start) shift; cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start [--nodes 1|2] | stop | status" >&2; exit 2 ;;
esac
