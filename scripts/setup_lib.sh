# Helpers for scripts/setup_env.sh (sourced, not run).
#
# run_step NAME CMD...  runs CMD with its output in $HPCGAN_SETUP_LOGS/NAME.log.
# On failure it prints ONE line: the step, its exit code, the first line of the
# log that looks like an error, and the log's path; then it exits with CMD's code.
# A user at 3 a.m. reads that line, not pip's 200-line traceback.

log() { echo "[setup_env] $*"; }

die() { echo "[setup_env] error: $*" >&2; exit 2; }

first_error_line() {  # the first line of a log that names an error, trimmed
  grep -m1 -E '(CMake Error|[Ee]rror[:!]|ERROR|error:|fatal|No matching distribution|Could not)' "$1" 2>/dev/null \
    | sed -e 's/^[[:space:]]*//' | cut -c1-200 || true
}

run_step() {
  local name="$1"; shift
  local logdir="${HPCGAN_SETUP_LOGS:?HPCGAN_SETUP_LOGS not set}"
  mkdir -p "$logdir"
  local logfile="$logdir/$name.log"
  local rc=0
  "$@" >"$logfile" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    local why
    why=$(first_error_line "$logfile")
    echo "[setup_env] error: step '$name' failed (exit $rc)${why:+: $why}; full log: $logfile" >&2
    exit "$rc"
  fi
}
