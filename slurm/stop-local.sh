#!/usr/bin/env bash
# stop-local.sh [STATE_DIR] [--purge]   -- stop the cluster started by slurm/start-local.sh
#
# 1. cancels the jobs of THIS cluster (SLURM_CONF=STATE_DIR/etc/slurm.conf) and waits until
#    squeue is empty, so no job or slurmstepd outlives slurmd;
# 2. sends SIGTERM (SIGKILL after 20 s) to slurmd, slurmctld, slurmdbd, mariadbd and munged, in that
#    order, using only the PIDs in STATE_DIR/pids/ -- and only if /proc/PID/exe is still that
#    daemon, so a recycled PID is never killed;
# 3. with --purge, deletes STATE_DIR (default /tmp/replicate-slurm).
# Stopping a stopped cluster is fine (exit 0).
set -uo pipefail

STATE="" PURGE=0
for arg in "$@"; do
    case $arg in
        --purge) PURGE=1 ;;
        -h|--help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
        -*) echo "usage: $0 [STATE_DIR] [--purge]" >&2; exit 2 ;;
        *) [ -z "$STATE" ] || { echo "usage: $0 [STATE_DIR] [--purge]" >&2; exit 2; }
           STATE=$arg ;;
    esac
done
STATE=$(realpath -m "${STATE:-/tmp/replicate-slurm}")
export PATH="$PATH:/usr/sbin:/sbin"
export SLURM_CONF=$STATE/etc/slurm.conf
PIDS=$STATE/pids

say() { echo "[stop-local] $*"; }

purge() {
    [ $PURGE -eq 1 ] || return 0
    [ -e "$STATE" ] || return 0
    # Only delete what start-local.sh created (it leaves this marker), never e.g. "/" or $HOME.
    if [ ! -e "$STATE/.replicate-slurm" ]; then
        say "not purging $STATE: it has no .replicate-slurm marker (not made by start-local.sh)" >&2
        exit 1
    fi
    rm -rf "$STATE" && say "removed $STATE"
}

if [ ! -d "$PIDS" ]; then
    say "nothing to stop in $STATE"
    purge
    exit 0
fi

exec 9>"$STATE/.lock"                       # wait for a start-local.sh that is still running
flock -w 120 9 || say "WARNING: $STATE/.lock still held after 120 s; going on anyway" >&2

live_pid() {  # live_pid NAME -> prints the PID from pids/NAME.pid if that process is binary NAME
    local pid exe
    pid=$(cat "$PIDS/$1.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1   # gone, or a zombie
    exe=${exe% (deleted)}
    # Debian: /usr/sbin/slurmd -> /etc/alternatives/slurmd -> /usr/sbin/slurmd-wlm
    case $(basename "$exe") in
        "$1" | "$1-wlm") echo "$pid" ;;
        *) [ "$exe" = "$(readlink -f "$(command -v "$1")")" ] && echo "$pid" ;;
    esac
}

# 1. jobs -- only possible while slurmctld answers
if live_pid slurmctld >/dev/null && timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; then
    mapfile -t jobs < <(squeue -h -o %A 2>/dev/null | sort -u)
    if [ ${#jobs[@]} -gt 0 ]; then
        say "cancelling ${#jobs[@]} job(s): ${jobs[*]}"
        scancel "${jobs[@]}" 2>/dev/null
        deadline=$((SECONDS + 60))                   # KillWait=5: normally a few seconds
        while [ -n "$(squeue -h -o %A 2>/dev/null)" ]; do
            if [ $SECONDS -ge $deadline ]; then
                say "WARNING: jobs still listed after 60 s; stopping the daemons anyway" >&2
                break
            fi
            sleep 0.3
        done
    fi
fi

# 2. daemons, clients first
for name in slurmd slurmctld slurmdbd mariadbd munged; do
    if pid=$(live_pid "$name"); then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do                       # 100 x 0.2 s = 20 s
            live_pid "$name" >/dev/null || break
            sleep 0.2
        done
        if live_pid "$name" >/dev/null; then
            say "$name (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
        say "stopped $name (pid $pid)"
    elif [ -s "$PIDS/$name.pid" ]; then
        say "$name was not running"
    fi
    rm -f "$PIDS/$name.pid"
done

exec 9>&-
purge
exit 0
