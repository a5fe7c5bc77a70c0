#!/usr/bin/env bash
# start-local.sh [STATE_DIR]   -- bring up a private one-node SLURM 22.05 cluster (with accounting)
#
# For tests and local experiments on Debian 12 as root, without systemd.  Everything the cluster
# needs (config, munge key, MariaDB data, spool, logs, PID files) lives in STATE_DIR
# (default /tmp/replicate-slurm); nothing under /etc is used.  Idempotent: daemons that already run
# (according to STATE_DIR/pids/) are left alone, so a second call is a fast no-op.
#
# Afterwards every SLURM client (sinfo, sbatch, submitit, ...) needs:  source STATE_DIR/env.sh
# Stop with: slurm/stop-local.sh STATE_DIR [--purge]
#
# Environment:
#   SLURM_LOCAL_CPUS=N     CPUs the node advertises (default: the real count; more = oversubscribe)
#   SLURM_LOCAL_GPUS=N     GPUs the node advertises without having them (default 0): GresTypes=gpu and
#                          N placeholder device files, so GPU requests and multi-task jobs can be rehearsed
#   SLURM_LOCAL_PORT=P     base port (default 6817): slurmctld P, slurmd P+1, slurmdbd P+2, mariadb P+3
#   SLURM_LOCAL_WAIT=S     upper bound in seconds for each readiness wait (default 90)
set -euo pipefail

case "${1:-}" in -h|--help) sed -n '2,17s/^# \{0,1\}//p' "$0"; exit 0 ;; esac
[ $# -le 1 ] || { echo "usage: $0 [STATE_DIR]" >&2; exit 2; }

for var in SLURM_LOCAL_CPUS SLURM_LOCAL_PORT SLURM_LOCAL_WAIT; do
    [[ ${!var:-1} =~ ^[1-9][0-9]*$ ]] || { echo "$0: $var must be a positive integer" >&2; exit 2; }
done
[[ ${SLURM_LOCAL_GPUS:-0} =~ ^[0-9]+$ ]] || { echo "$0: SLURM_LOCAL_GPUS must be a whole number" >&2; exit 2; }
GPUS=${SLURM_LOCAL_GPUS:-0}

STATE=$(realpath -m "${1:-/tmp/replicate-slurm}")
BASE_PORT=${SLURM_LOCAL_PORT:-6817}
WAIT_S=${SLURM_LOCAL_WAIT:-90}
CLUSTER=localcluster
NODE=$(hostname -s)
CTLD_PORT=$BASE_PORT
SLURMD_PORT=$((BASE_PORT + 1))
DBD_PORT=$((BASE_PORT + 2))
DB_PORT=$((BASE_PORT + 3))
ETC=$STATE/etc
RUN=$STATE/run
LOG=$STATE/log
PIDS=$STATE/pids
MUNGE_SOCK=$RUN/munge.sock
DB_SOCK=$RUN/mysqld.sock
export PATH="$PATH:/usr/sbin:/sbin"
export SLURM_CONF=$ETC/slurm.conf

T_START=$(date +%s%N)
say() {
    local ms=$((($(date +%s%N) - T_START) / 1000000))
    printf '[start-local %d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"
}
fail() {
    say "ERROR: $*" >&2
    if [ "${STARTED_ANY:-0}" -eq 1 ]; then
        say "daemons started so far keep running; stop them with: $(dirname "$0")/stop-local.sh $STATE" >&2
    fi
    exit 1
}

# ------------------------------------------------------------------ packages
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server-core mariadb-client-core)
COMMANDS=(slurmctld slurmd sinfo srun sacct sacctmgr scontrol munged munge unmunge mungekey
          slurmdbd mariadbd mariadb-install-db mariadb)

install_packages() {
    local cmd missing=()
    for cmd in "${COMMANDS[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || fail "missing ${missing[*]}; run as root to apt-get install ${PACKAGES[*]}"
    say "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    local apt_log=/tmp/replicate-slurm-apt.log own_policy=0
    # Keep the packaged services (system munged, slurmd with /etc/slurm) from being started by
    # the maintainer scripts; Docker-like images already ship such a policy-rc.d.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" \
        >"$apt_log" 2>&1 || rc=$?
    if [ $rc -ne 0 ] && grep -Eq 'Unable to locate package|has no installation candidate|Failed to fetch|404' "$apt_log"; then
        say "apt-get install failed for lack of package lists; running apt-get update"
        rc=0
        { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } \
            >>"$apt_log" 2>&1 || rc=$?
    fi
    [ $own_policy -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    if [ $rc -ne 0 ]; then
        tail -n 20 "$apt_log" >&2
        fail "apt-get install failed (full log: $apt_log)"
    fi
    say "packages installed"
}

# ------------------------------------------------------------------ configuration
CONFIG_STALE=0
install_file() {  # install_file FILE MODE < content
    local file=$1 mode=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [ -f "$file" ] && cmp -s "$tmp" "$file"; then rm -f "$tmp"; return 0; fi
    if [ -f "$file" ] && any_running; then
        # Daemons and clients must agree on the config (ports, socket): keep the old one.
        rm -f "$tmp"
        CONFIG_STALE=1
        return 0
    fi
    mv -f "$tmp" "$file"
}

write_config() {
    local -a hw
    local cpus node_hw overrides="" mem key
    # The node line must repeat the geometry slurmd detects, or slurmd complains about
    # "reconfigured socket/core boundaries"; RealMemory a bit lower, or the node is drained.
    read -ra hw < <(slurmd -C | head -n 1)    # NodeName=vm CPUs=2 Boards=1 ... RealMemory=23000
    field() { local f; for f in "${hw[@]}"; do case $f in "$1="*) echo "${f#*=}";; esac; done; }
    cpus=$(field CPUs)
    mem=$(($(field RealMemory) * 95 / 100))
    node_hw="CPUs=$cpus Boards=$(field Boards) SocketsPerBoard=$(field SocketsPerBoard)"
    node_hw+=" CoresPerSocket=$(field CoresPerSocket) ThreadsPerCore=$(field ThreadsPerCore)"
    if [ -n "${SLURM_LOCAL_CPUS:-}" ] && [ "$SLURM_LOCAL_CPUS" != "$cpus" ]; then
        node_hw="CPUs=$SLURM_LOCAL_CPUS"          # oversubscribe: ignore the real geometry
        overrides="SlurmdParameters=config_overrides"
    fi
    # Advertised GPUs: slurmd needs a File= per device (Count= alone reports 0 and the node goes INVAL);
    # plain files stand in for /dev/nvidia*, nothing opens them.
    local gres_types="" node_gres="" gres_line=""
    if [ "$GPUS" -gt 0 ]; then
        mkdir -p "$STATE/gpus"
        for i in $(seq 0 $((GPUS - 1))); do touch "$STATE/gpus/gpu$i"; done
        gres_types="GresTypes=gpu"
        node_gres="Gres=gpu:$GPUS"
        gres_line="NodeName=$NODE Name=gpu File=$STATE/gpus/gpu[0-$((GPUS - 1))]"
    fi
    install_file "$ETC/gres.conf" 644 <<EOF
# Written by replicate slurm/start-local.sh -- regenerated on every start, do not edit.
AutoDetect=off
$gres_line
EOF

    install_file "$ETC/slurm.conf" 644 <<EOF
# Written by replicate slurm/start-local.sh -- regenerated on every start, do not edit.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
# Private munge socket.  cred_expire is also how long a requeued job is held (default 120 s).
AuthInfo=socket=$MUNGE_SOCK,cred_expire=10
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Start batch jobs at once; look at pending (e.g. requeued) jobs every 2 s instead of 60 s.
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=5
# submitit polls sacct, so accounting is required.  Connections to slurmdbd ignore
# AuthInfo=socket=, the socket has to be given here as well.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCK
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
KillWait=5
# A job in partition 'high' preempts (requeues) jobs in 'debug'; the job's own --signal
# (USR2 for submitit) is sent first so that checkpoint() can run.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
$overrides
$gres_types
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE $node_hw $node_gres RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30
PartitionName=high Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF

    # slurmdbd reads slurmdbd.conf next to \$SLURM_CONF; it refuses a file readable by others.
    install_file "$ETC/slurmdbd.conf" 600 <<EOF
# Written by replicate slurm/start-local.sh -- regenerated on every start, do not edit.
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm-local
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
EOF

    key=$STATE/munge/munge.key
    [ -s "$key" ] || mungekey --create --bits 1024 --keyfile "$key" >/dev/null
    chmod 600 "$key"
    echo "export SLURM_CONF=$SLURM_CONF" >"$STATE/env.sh"
}

# ------------------------------------------------------------------ daemon helpers
# Each daemon runs in the foreground under setsid; its PID is STATE/pids/NAME.pid and its
# stdout/stderr go to STATE/log/NAME.out (the daemon's own log file is named in DAEMON_LOG).
declare -A DAEMON_LOG=(
    [munged]=$LOG/munged.out [mariadbd]=$LOG/mariadbd.log [slurmdbd]=$LOG/slurmdbd.log
    [slurmctld]=$LOG/slurmctld.log [slurmd]=$LOG/slurmd.log
)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

is_running() {  # is_running NAME -> 0 if pids/NAME.pid holds a live process of binary NAME
    local pid exe want
    pid=$(cat "$PIDS/$1.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1   # fails for zombies too
    exe=${exe% (deleted)}
    # Debian: /usr/sbin/slurmd -> /etc/alternatives/slurmd -> /usr/sbin/slurmd-wlm
    case $(basename "$exe") in
        "$1" | "$1-wlm") return 0 ;;
    esac
    want=$(readlink -f "$(command -v "$1")")
    [ "$exe" = "$want" ]
}

show_logs() {  # last lines of NAME's log file(s), to stderr
    local f files=("${DAEMON_LOG[$1]}")
    [ "${DAEMON_LOG[$1]}" = "$LOG/$1.out" ] || files+=("$LOG/$1.out")
    for f in "${files[@]}"; do
        [ -s "$f" ] || continue
        echo "----- tail $f" >&2
        tail -n 15 "$f" >&2
    done
}
logs_of() {
    if [ "${DAEMON_LOG[$1]}" = "$LOG/$1.out" ]; then echo "$LOG/$1.out"
    else echo "${DAEMON_LOG[$1]} (stdout/stderr: $LOG/$1.out)"; fi
}

launch() {  # launch NAME ARGS... : start binary NAME detached unless it already runs
    local name=$1; shift
    if is_running "$name"; then return 0; fi
    # 9>&-: the daemon must not inherit (and so hold forever) the lock on STATE/.lock
    setsid "$(command -v "$name")" "$@" >>"$LOG/$name.out" 2>&1 </dev/null 9>&- &
    local pid=$! i
    echo "$pid" >"$PIDS/$name.pid"
    STARTED_ANY=1
    # Until the forked shell has exec'd the daemon, /proc/PID/exe is still bash: wait for it, so
    # that is_running can tell "still starting" from "died".
    for i in $(seq 100); do
        is_running "$name" && break
        if [ ! -d "/proc/$pid" ] || [ "$i" -eq 100 ]; then
            show_logs "$name"
            fail "$name did not start; read $(logs_of "$name")"
        fi
        sleep 0.05
    done
    say "started $name (pid $pid)"
}

await() {  # await NAME WHAT COMMAND... : poll COMMAND until it succeeds (bounded)
    local name=$1 what=$2 deadline=$((SECONDS + WAIT_S)) out; shift 2
    until out=$("$@" 2>&1); do
        if ! is_running "$name" || [ $SECONDS -ge $deadline ]; then
            show_logs "$name"
            echo "----- last output of '$what':" >&2
            printf '%s\n' "$out" | tail -n 5 >&2
            if is_running "$name"; then
                fail "$name not ready after ${WAIT_S}s ($what failed). Read $(logs_of "$name")"
            fi
            fail "$name exited while waiting for: $what. Read $(logs_of "$name")"
        fi
        sleep 0.2
    done
}

check_port_free() {  # refuse to start NAME if another process already listens on its port
    local name=$1 port=$2
    is_running "$name" && return 0
    command -v ss >/dev/null 2>&1 || return 0
    if [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]; then
        fail "port $port (for $name) is already in use -- another cluster? Stop it or set SLURM_LOCAL_PORT"
    fi
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null; }
node_usable() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }
munge_ok() { munge -S "$MUNGE_SOCK" -n </dev/null | unmunge -S "$MUNGE_SOCK"; }
ctld_up() { scontrol ping | grep -q 'is UP'; }
sql() { mariadb --no-defaults -S "$DB_SOCK" -uroot "$@"; }

all_running() {
    local d
    for d in "${DAEMONS[@]}"; do is_running "$d" || return 1; done
}
any_running() {
    local d
    for d in "${DAEMONS[@]}"; do is_running "$d" && return 0; done
    return 1
}

# ------------------------------------------------------------------ main
install_packages

mkdir -p "$ETC" "$RUN" "$LOG" "$PIDS" "$STATE/spool/ctld" "$STATE/spool/d" "$STATE/munge"
touch "$STATE/.replicate-slurm"                # marker: stop-local.sh --purge only deletes such dirs
chmod 755 "$STATE" "$RUN"                      # munged wants o+x on every dir above its socket
chmod 700 "$STATE/munge"
d=$(dirname "$STATE")                          # ... the parents too (mktemp -d makes them 700)
while :; do
    [ -n "$(find "$d" -maxdepth 0 -perm -o+x)" ] ||
        fail "$d lacks o+x; munged refuses sockets below it (chmod o+x $d or pick another STATE_DIR)"
    [ "$d" = / ] && break
    d=$(dirname "$d")
done

exec 9>"$STATE/.lock"                          # one start/stop at a time per STATE_DIR
flock -w 120 9 || fail "another start-local.sh/stop-local.sh holds $STATE/.lock (waited 120 s)"

write_config

if [ $CONFIG_STALE -eq 1 ]; then
    say "WARNING: the settings changed but the cluster runs on the old config; to apply them:" \
        "stop-local.sh $STATE && start-local.sh $STATE"
fi
# Fast path: everything already runs and the node is usable.
if all_running && ctld_up 2>/dev/null && node_usable; then
    say "already running (node $NODE is $(node_state))"
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
fi
[ $CONFIG_STALE -eq 0 ] ||
    fail "some daemons run with the old config and others are missing; run stop-local.sh $STATE first"

# Before starting anything: the ports of the daemons still to start must be free.
check_port_free mariadbd "$DB_PORT"
check_port_free slurmdbd "$DBD_PORT"
check_port_free slurmctld "$CTLD_PORT"
check_port_free slurmd "$SLURMD_PORT"

STARTED_ANY=0

# 1. munged
launch munged --foreground --socket="$MUNGE_SOCK" --key-file="$STATE/munge/munge.key" \
    --pid-file="$RUN/munged.pid" --seed-file="$STATE/munge/munged.seed"
await munged "munge | unmunge round trip" munge_ok

# 2. MariaDB (accounting storage)
if [ ! -d "$STATE/db/mysql" ]; then
    rm -rf "$STATE/db"
    mariadb-install-db --no-defaults --datadir="$STATE/db" --user=root --skip-test-db \
        --auth-root-authentication-method=socket >"$LOG/mariadb-install-db.log" 2>&1 ||
        fail "mariadb-install-db failed; read $LOG/mariadb-install-db.log"
fi
launch mariadbd --no-defaults --datadir="$STATE/db" --user=root --socket="$DB_SOCK" \
    --pid-file="$RUN/mariadbd.pid" --log-error="$LOG/mariadbd.log" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
    --innodb-buffer-pool-size=512M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900
await mariadbd "SELECT 1 over $DB_SOCK" sql -e 'SELECT 1'
sql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm-local';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm-local';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" ||
    fail "could not create the accounting database/user; read $LOG/mariadbd.log"

# 3. slurmdbd, then register the cluster
launch slurmdbd -D
await slurmdbd "sacctmgr list cluster" timeout 10 sacctmgr -n list cluster
if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
    timeout 20 sacctmgr -i add cluster "$CLUSTER" >/dev/null ||
        fail "sacctmgr add cluster $CLUSTER failed; read $(logs_of slurmdbd)"
    say "registered cluster $CLUSTER"
fi

# 4. slurmctld
launch slurmctld -D
await slurmctld "scontrol ping" ctld_up

# 5. slurmd, and a node that accepts jobs
launch slurmd -D -N "$NODE"
deadline=$((SECONDS + WAIT_S))
resumed=0
until node_usable; do
    is_running slurmd || { show_logs slurmd; fail "slurmd exited; read $(logs_of slurmd)"; }
    state=$(node_state || true)
    # A DOWN/DRAIN state saved by an earlier run (e.g. after kill -9) is not cleared by itself.
    if [ $resumed -eq 0 ] && [[ $state =~ down|drain ]]; then
        say "node $NODE is '$state'; RESUME"
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        resumed=1
    fi
    if [ $SECONDS -ge $deadline ]; then
        scontrol show node "$NODE" >&2 || true
        fail "node $NODE not usable after ${WAIT_S}s (state '$state'). Read $(logs_of slurmd) and $(logs_of slurmctld)"
    fi
    sleep 0.2
done
say "node $NODE is $(node_state)"

# 6. end to end: one job step through munge, slurmctld and slurmd
timeout "$WAIT_S" srun --quiet --job-name=start-local-probe --time=1 true ||
    fail "probe 'srun true' failed; read $(logs_of slurmctld) and $(logs_of slurmd)"
say "probe job ok$([ $STARTED_ANY -eq 1 ] || echo ' (nothing had to be started)')"

for d in "${DAEMONS[@]}"; do say "  $d pid $(cat "$PIDS/$d.pid")"; done
echo "export SLURM_CONF=$SLURM_CONF"
