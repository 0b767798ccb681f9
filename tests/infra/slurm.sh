#!/usr/bin/env bash
# Real Slurm for sqenv's tests, on this one machine (Debian 12, run as root).
#
#   tests/infra/slurm.sh start    bring up munge, slurmctld, a slurmd for this host
#                                 (partition "debug", default) and, if possible, N
#                                 more nodes node1..nodeN (default two) in network
#                                 namespaces on a private bridge (partition "multi");
#                                 idempotent
#   tests/infra/slurm.sh stop     cancel jobs, stop the Slurm daemons (and munged if
#                                 this script started it), remove the namespaces
#   tests/infra/slurm.sh status   print what runs; exit 0 when the cluster answers
#
# Each extra node has its own tmpfs /tmp (node-local); every other path is shared,
# like a parallel file system. The namespaces talk only to the bridge address.
# When the extra nodes cannot be had, the single node still comes up and the reason
# is printed and written to /run/sqenv-slurm/multi-unavailable.
#
# 'start' returns only when the cluster really works: our slurmctld answers, every
# node is registered and responding (idle), and one job step has run on each node.
# This script owns Slurm on this machine (it writes /etc/slurm/slurm.conf): a
# slurmctld or slurmd it did not start that holds a Slurm port (a leftover of a run
# by hand or of a run whose pid files are gone) is stopped first, with a message.
# Such a leftover used to answer in place of ours with another slurm.conf, while
# our new daemon died on "Address already in use" (the cause of "nodes node1 node2
# did not become idle in time (vm idle)").
#
# Environment: SQENV_SLURM_TIMEOUT (seconds to wait for the daemons and for the
# nodes to become idle, each; default 180); SQENV_SLURM_NO_MULTI=1 (single node
# only); SQENV_SLURM_NODES=N (1..8: the number of extra nodes; unset: as many as
# the running cluster has, else 2 — so a plain 'start' keeps a bigger cluster up
# instead of restarting it). Once the extra nodes were found unavailable, later
# 'start's keep the single node until a 'stop'.
set -euo pipefail

readonly RUN_DIR=/run/sqenv-slurm
readonly LOG_DIR=$RUN_DIR/log
readonly SPOOL_DIR=/var/spool/sqenv-slurm
readonly CONF=/etc/slurm/slurm.conf
readonly MULTI_FILE=$RUN_DIR/multi-unavailable
readonly MUNGE_MARK=$RUN_DIR/munged-started-here
readonly MARKER="# sqenv-test-slurm: written by tests/infra/slurm.sh"
readonly HOSTS_TAG="# sqenv-test-slurm"
# The project's own private /24, on a bridge this script creates. The namespaces get
# no default route: nothing is sent anywhere but to these addresses.
readonly BRIDGE=sqenvbr0
readonly NET_PREFIX=10.213.77
readonly BRIDGE_IP=$NET_PREFIX.1
readonly MAX_NODES=8
EXTRA_NODES=(node1 node2) # chosen by choose_nodes
readonly LOCAL_CPUS=2
TIMEOUT=${SQENV_SLURM_TIMEOUT:-180}
CHECKOUT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
SHARED_CHECKOUT="" # this checkout, when it is under /tmp (which the nodes do not share)
[[ $CHECKOUT == /tmp/* ]] && SHARED_CHECKOUT=$CHECKOUT
readonly CHECKOUT SHARED_CHECKOUT
LOCAL_NODE=$(hostname -s)
readonly LOCAL_NODE

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export DEBIAN_FRONTEND=noninteractive

log() { printf '[slurm.sh] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

node_ip() { # node1 -> 10.213.77.11
    printf '%s.%d' "$NET_PREFIX" $((10 + ${1#node}))
}

# ---------------------------------------------------------------- processes
# pid_alive PIDFILE COMM: the pid in PIDFILE runs a process named COMM
# (each file may vanish between two reads: the daemon is exiting)
pid_alive() {
    local pid comm stat
    { read -r pid <"$1"; } 2>/dev/null || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    { read -r comm <"/proc/$pid/comm"; } 2>/dev/null || return 1
    [[ $comm == "$2" ]] || return 1
    { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != [ZX] ]] # a zombie is dead
}

# port_holders PORT [NETNS]: pids listening on TCP PORT (in that network namespace)
port_holders() {
    local out
    if [[ -n ${2:-} ]]; then
        [[ -e /run/netns/$2 ]] || return 0
        out=$(nsenter --net="/run/netns/$2" ss -ltnpH "sport = :$1" 2>/dev/null) || return 0
    else
        out=$(ss -ltnpH "sport = :$1" 2>/dev/null) || return 0
    fi
    grep -o 'pid=[0-9]*' <<<"$out" | cut -d= -f2 | sort -u
}

# stop_foreign PORT PIDFILE [NETNS]: stop whatever holds PORT but the daemon of PIDFILE
# (ours). Without this a leftover daemon answers in place of ours, with its own
# slurm.conf, while ours dies on "Address already in use".
stop_foreign() {
    local pid ours="" i
    { read -r ours <"$2"; } 2>/dev/null || true
    for pid in $(port_holders "$1" "${3:-}"); do
        [[ $pid == "$ours" ]] && continue
        log "stopping pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)): it holds port $1${3:+ in netns $3} and is not the daemon this script tracks"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            [[ -e /proc/$pid ]] || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < 50; i++)); do
        port_holders "$1" "${3:-}" | grep -qvxF "${ours:-none}" || return 0
        sleep 0.1
    done
    die "port $1${3:+ in netns $3} is still held by $(port_holders "$1" "${3:-}" | tr '\n' ' ')"
}

ctld_alive() { pid_alive "$RUN_DIR/slurmctld.pid" slurmctld; }
slurmd_alive() { pid_alive "$RUN_DIR/slurmd-$1.pid" slurmd; }

# kill_pidfile PIDFILE COMM: TERM, then KILL after 10 s; only that one process
kill_pidfile() {
    local pid i
    pid_alive "$1" "$2" || {
        rm -f "$1"
        return 0
    }
    pid=$(<"$1")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        pid_alive "$1" "$2" || break
        sleep 0.1
    done
    if pid_alive "$1" "$2"; then
        log "$2 ($pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$1"
}

any_slurm_daemon_alive() {
    local f
    ctld_alive && return 0
    for f in "$RUN_DIR"/slurmd-*.pid; do
        [[ -e $f ]] || continue
        pid_alive "$f" slurmd && return 0
    done
    return 1
}

cancel_all_jobs() {
    local jobs
    ctld_alive || return 0
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null) || return 0
    [[ -n $jobs ]] || return 0
    log "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
    # shellcheck disable=SC2086 # one job id per word
    timeout 10 scancel $jobs 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -z $(timeout 10 squeue -h -o %A 2>/dev/null) ]] && break
        sleep 0.1
    done
}

stop_slurmds() { # stop_slurmds NODE...
    local n
    for n in "$@"; do
        kill_pidfile "$RUN_DIR/slurmd-$n.pid" slurmd
    done
}

stop_slurm_daemons() {
    local f n
    cancel_all_jobs
    for f in "$RUN_DIR"/slurmd-*.pid; do
        [[ -e $f ]] || continue
        n=${f##*/slurmd-}
        stop_slurmds "${n%.pid}"
    done
    kill_pidfile "$RUN_DIR/slurmctld.pid" slurmctld
}

# ---------------------------------------------------------------- packages
ensure_packages() {
    local pkgs=()
    command -v slurmctld >/dev/null || pkgs+=(slurm-wlm)
    command -v munged >/dev/null || pkgs+=(munge)
    command -v ip >/dev/null || pkgs+=(iproute2)
    command -v nsenter >/dev/null || pkgs+=(util-linux)
    ((${#pkgs[@]})) || return 0
    [[ " ${pkgs[*]} " == *" slurm-wlm "* ]] && pkgs+=(munge)
    log "installing ${pkgs[*]}"
    if ! apt-get install -y -q "${pkgs[@]}" </dev/null >"$LOG_DIR/apt.log" 2>&1; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update -q </dev/null >>"$LOG_DIR/apt.log" 2>&1 || true
        apt-get install -y -q "${pkgs[@]}" </dev/null >>"$LOG_DIR/apt.log" 2>&1 ||
            {
                tail -n 20 "$LOG_DIR/apt.log" >&2
                die "could not install ${pkgs[*]}"
            }
    fi
    command -v slurmctld >/dev/null || die "slurmctld still missing after apt-get install"
}

# ---------------------------------------------------------------- munge
munge_works() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

# Sets MUNGE_STARTED=1 when munged had to be started.
MUNGE_STARTED=0
ensure_munge() {
    local i
    if munge_works; then return 0; fi
    log "starting munged"
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    chmod 0700 /etc/munge /var/log/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    # munged refuses to run as root; a stale pid file or socket from a dead one blocks it
    if [[ -e /run/munge/munged.pid ]] && ! pid_alive /run/munge/munged.pid munged; then
        rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    fi
    runuser -u munge -- /usr/sbin/munged </dev/null >>"$LOG_DIR/munged.start.log" 2>&1 ||
        {
            cat "$LOG_DIR/munged.start.log" >&2
            tail -n 20 /var/log/munge/munged.log >&2 2>/dev/null || true
            die "munged did not start"
        }
    for ((i = 0; i < 50; i++)); do
        munge_works && break
        sleep 0.1
    done
    munge_works || die "munged started but munge -n | unmunge fails"
    touch "$MUNGE_MARK"
    MUNGE_STARTED=1
}

# ---------------------------------------------------------------- network
# net CMD...: run a network set-up command; on failure print why (for the reason)
net() {
    if ! "$@" >>"$LOG_DIR/net.log" 2>&1; then
        echo "could not set up the test network ('$*' failed: $(tail -n 1 "$LOG_DIR/net.log"))"
        return 1
    fi
}

# setup_net: bridge + one namespace per extra node. Prints a reason and returns 1
# when it cannot be done.
setup_net() {
    local n ip host_if conflict
    command -v ip >/dev/null || {
        echo "the 'ip' command (iproute2) is missing"
        return 1
    }
    conflict=$(ip -4 route show 2>/dev/null | grep -F "$NET_PREFIX." | grep -vF "dev $BRIDGE" || true)
    if [[ -n $conflict ]]; then
        echo "the private subnet $NET_PREFIX.0/24 is already routed on this machine: $conflict"
        return 1
    fi
    : >"$LOG_DIR/net.log"
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        net ip link add "$BRIDGE" type bridge || return 1
    fi
    net ip addr replace "$BRIDGE_IP/24" dev "$BRIDGE" || return 1
    net ip link set "$BRIDGE" up || return 1
    for n in "${EXTRA_NODES[@]}"; do
        ip=$(node_ip "$n")
        host_if=sqv-$n
        if [[ ! -e /run/netns/$n ]]; then
            net ip netns add "$n" || return 1
        fi
        if ! ip -n "$n" link show eth0 >/dev/null 2>&1; then
            ip link del "$host_if" >/dev/null 2>&1 || true
            net ip link add "$host_if" type veth peer name eth0 netns "$n" || return 1
        fi
        net ip link set "$host_if" master "$BRIDGE" || return 1
        net ip link set "$host_if" up || return 1
        net ip -n "$n" link set lo up || return 1
        net ip -n "$n" addr replace "$ip/24" dev eth0 || return 1
        net ip -n "$n" link set eth0 up || return 1
    done
    ensure_hosts_entries
}

ensure_hosts_entries() {
    local n line
    for n in "${EXTRA_NODES[@]}"; do
        line="$(node_ip "$n") $n $HOSTS_TAG"
        grep -qxF "$line" /etc/hosts || echo "$line" >>/etc/hosts
    done
}

remove_hosts_entries() {
    local kept
    grep -qF "$HOSTS_TAG" /etc/hosts 2>/dev/null || return 0
    kept=$(grep -vF "$HOSTS_TAG" /etc/hosts || true)
    # rewrite in place (keeps a bind-mounted /etc/hosts working)
    printf '%s\n' "$kept" >/etc/hosts
}

teardown_net() {
    local n i
    for ((i = 1; i <= MAX_NODES; i++)); do # whatever node count set them up
        n=node$i
        [[ -e /run/netns/$n ]] && ip netns del "$n" 2>/dev/null
        ip link del "sqv-$n" 2>/dev/null || true
    done
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE" 2>/dev/null
    remove_hosts_entries
    return 0
}

# ---------------------------------------------------------------- config
mem_mb() { awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo; }

# render_conf MULTI(0|1)
render_conf() {
    local multi=$1 total local_mem node_mem ctld_addr n
    total=$(mem_mb)
    local_mem=$((total / 4))
    ((local_mem > 8000)) && local_mem=8000
    node_mem=$((total / 8))
    ((node_mem > 4000)) && node_mem=4000
    ctld_addr=127.0.0.1
    ((multi)) && ctld_addr=$BRIDGE_IP
    cat <<EOF
$MARKER
# Regenerated by every 'slurm.sh start'; edits are lost.
ClusterName=sqenv
SlurmctldHost=$LOCAL_NODE($ctld_addr)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SPOOL_DIR/ctld
SlurmdSpoolDir=$SPOOL_DIR/slurmd-%n
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
MessageTimeout=20
SlurmdTimeout=120
SlurmctldTimeout=120
NodeName=$LOCAL_NODE NodeAddr=127.0.0.1 CPUs=$LOCAL_CPUS RealMemory=$local_mem State=UNKNOWN
PartitionName=debug Nodes=$LOCAL_NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES AllowGroups=ALL
EOF
    if ((multi)); then
        for n in "${EXTRA_NODES[@]}"; do
            echo "NodeName=$n NodeAddr=$(node_ip "$n") CPUs=2 RealMemory=$node_mem State=UNKNOWN"
        done
        local IFS=,
        echo "PartitionName=multi Nodes=${EXTRA_NODES[*]} MaxTime=INFINITE State=UP OverSubscribe=YES AllowGroups=ALL"
    fi
}

# write_conf MULTI: returns 0 when the file changed, 1 when it was already so
write_conf() {
    local want
    want=$(render_conf "$1")
    if [[ -f $CONF ]] && [[ $(<"$CONF") == "$want" ]]; then
        return 1
    fi
    mkdir -p "${CONF%/*}"
    if [[ -f $CONF ]] && ! grep -qxF "$MARKER" "$CONF" && [[ ! -e $CONF.sqenv-orig ]]; then
        log "keeping the previous $CONF as $CONF.sqenv-orig"
        cp -p "$CONF" "$CONF.sqenv-orig"
    fi
    printf '%s\n' "$want" >"$CONF.tmp"
    chmod 0644 "$CONF.tmp"
    mv -f "$CONF.tmp" "$CONF"
    return 0
}

conf_has_multi() { [[ -f $CONF ]] && grep -q '^PartitionName=multi ' "$CONF"; }

# choose_nodes: EXTRA_NODES=(node1 .. nodeN) from SQENV_SLURM_NODES, else the running
# cluster's partition multi (when this script wrote slurm.conf), else two nodes
choose_nodes() {
    local n=${SQENV_SLURM_NODES:-} i line
    if [[ -z $n ]] && conf_has_multi && grep -qxF "$MARKER" "$CONF"; then
        line=$(grep '^PartitionName=multi ' "$CONF")
        line=${line#*Nodes=}
        line=${line%% *}
        IFS=, read -r -a EXTRA_NODES <<<"$line"
        n=${#EXTRA_NODES[@]}
    fi
    n=${n:-2}
    if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > MAX_NODES)); then
        die "SQENV_SLURM_NODES=$n: give a number of extra nodes from 1 to $MAX_NODES"
    fi
    EXTRA_NODES=()
    for ((i = 1; i <= n; i++)); do EXTRA_NODES+=("node$i"); done
}

# ---------------------------------------------------------------- daemons
# wait_listening PIDFILE COMM PORT NETNS LOG: until the daemon of PIDFILE listens on
# PORT (NETNS "" = this one). The daemons fork into the background before they bind
# their port: one that then dies ("Address already in use", a bad slurm.conf) is
# caught here; prints why (the last error of LOG) and returns 1.
wait_listening() {
    local pidfile=$1 comm=$2 port=$3 netns=$4 logf=$5 deadline=$((SECONDS + TIMEOUT)) pid
    while :; do
        if { read -r pid <"$pidfile"; } 2>/dev/null && [[ $pid =~ ^[0-9]+$ ]] &&
            port_holders "$port" "$netns" | grep -qxF "$pid"; then
            return 0
        fi
        if { [[ -s $pidfile ]] && ! pid_alive "$pidfile" "$comm"; } || ((SECONDS >= deadline)); then
            echo "not listening on port $port after $((TIMEOUT - deadline + SECONDS))s:" \
                "$( (grep -E 'fatal|error' "$logf" 2>/dev/null || echo 'nothing logged') | tail -n 1)"
            return 1
        fi
        sleep 0.1
    done
}

# up_or_die WHAT WHY...: the daemon did not come up
up_or_die() {
    local what=$1
    shift
    diagnostics
    die "$what did not come up: $*"
}

start_ctld() {
    log "starting slurmctld"
    stop_foreign 6817 "$RUN_DIR/slurmctld.pid"
    rm -rf "${SPOOL_DIR:?}/ctld"
    mkdir -p "$SPOOL_DIR/ctld"
    rm -f "$RUN_DIR/slurmctld.pid"
    slurmctld </dev/null >>"$LOG_DIR/slurmctld.start.log" 2>&1 || {
        cat "$LOG_DIR/slurmctld.start.log" >&2
        diagnostics
        die "slurmctld did not start"
    }
    local why
    why=$(wait_listening "$RUN_DIR/slurmctld.pid" slurmctld 6817 "" "$LOG_DIR/slurmctld.log") ||
        up_or_die slurmctld "$why"
}

start_local_slurmd() {
    log "starting slurmd $LOCAL_NODE"
    stop_foreign 6818 "$RUN_DIR/slurmd-$LOCAL_NODE.pid"
    rm -rf "${SPOOL_DIR:?}/slurmd-$LOCAL_NODE"
    mkdir -p "$SPOOL_DIR/slurmd-$LOCAL_NODE"
    rm -f "$RUN_DIR/slurmd-$LOCAL_NODE.pid"
    slurmd -N "$LOCAL_NODE" </dev/null >>"$LOG_DIR/slurmd.start.log" 2>&1 || {
        cat "$LOG_DIR/slurmd.start.log" >&2
        diagnostics
        die "slurmd $LOCAL_NODE did not start"
    }
    local why
    why=$(wait_listening "$RUN_DIR/slurmd-$LOCAL_NODE.pid" slurmd 6818 "" "$LOG_DIR/slurmd-$LOCAL_NODE.log") ||
        up_or_die "slurmd $LOCAL_NODE" "$why"
}

# start_ns_slurmd NODE: (prints why and returns 1 when it does not come up) slurmd in the node's network namespace and a private mount
# namespace whose /tmp is a fresh tmpfs. Not 'ip netns exec': that remounts /sys.
# A checkout under /tmp (CI clones there) is bound into the node's /tmp at the same
# path: the software lives on the shared file system, as on a real cluster.
start_ns_slurmd() {
    local n=$1 keep
    keep=$RUN_DIR/checkout-$n
    log "starting slurmd $n (netns $n, own /tmp${SHARED_CHECKOUT:+, sharing $SHARED_CHECKOUT})"
    (stop_foreign 6818 "$RUN_DIR/slurmd-$n.pid" "$n") >&2 || {
        echo "port 6818 in netns $n is held by another process"
        return 1
    }
    rm -rf "${SPOOL_DIR:?}/slurmd-$n"
    mkdir -p "$SPOOL_DIR/slurmd-$n" "$keep"
    rm -f "$RUN_DIR/slurmd-$n.pid"
    # shellcheck disable=SC2016 # expanded by the inner sh
    nsenter --net="/run/netns/$n" unshare -m --propagation private sh -c '
        set -e
        [ -z "$2" ] || mount --bind "$2" "$3"
        mount -t tmpfs -o mode=1777,size=1g tmpfs /tmp
        if [ -n "$2" ]; then mkdir -p "$2" && mount --bind "$3" "$2" && umount "$3"; fi
        exec slurmd -N "$1"' sh "$n" "$SHARED_CHECKOUT" "$keep" \
        </dev/null >>"$LOG_DIR/slurmd-$n.start.log" 2>&1 || {
        tail -n 2 "$LOG_DIR/slurmd-$n.start.log" | tr '\n' ' '
        return 1
    }
    printf '%s\n' "$SHARED_CHECKOUT" >"$RUN_DIR/shared-checkout-$n"
    wait_listening "$RUN_DIR/slurmd-$n.pid" slurmd 6818 "$n" "$LOG_DIR/slurmd-$n.log"
}

# shares_checkout NODE: that node's slurmd was started with this checkout's sharing
# (and still sees it: read through its own mount namespace, /proc/PID/root)
shares_checkout() {
    [[ $(cat "$RUN_DIR/shared-checkout-$1" 2>/dev/null) == "$SHARED_CHECKOUT" ]] || return 1
    [[ -z $SHARED_CHECKOUT ]] && return 0
    local pid
    pid=$(cat "$RUN_DIR/slurmd-$1.pid" 2>/dev/null) || return 1
    [[ -d /proc/$pid/root$SHARED_CHECKOUT/tests ]]
}

# node_states: "NODE STATE" lines from sinfo
node_states() { timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null | sort -u; }

# wait_nodes DEADLINE NODE...: until each node is up (idle/mix/alloc/comp) in sinfo
wait_nodes() {
    local deadline=$1 n st ok states
    shift
    while :; do
        states=$(node_states || true)
        ok=1
        for n in "$@"; do
            st=$(awk -v n="$n" '$1 == n {print $2}' <<<"$states" | head -n 1)
            case $st in
            idle | mix | alloc | comp) ;;
            *) ok=0 ;;
            esac
        done
        ((ok)) && return 0
        ((SECONDS >= deadline)) && return 1
        sleep 0.3
    done
}

# run_step PARTITION NODE...: one task on each node, as root: the controller reaches
# each slurmd, the slurmd reaches back, munge works. Prints why and returns 1 if not.
run_step() {
    local part=$1 out nodes
    shift
    nodes=$(IFS=, && echo "$*")
    # shellcheck disable=SC2016 # expanded by the task's shell
    if ! out=$(timeout 60 srun -p "$part" -w "$nodes" -N $# -n $# --ntasks-per-node=1 --chdir=/ -J sqenv-check \
        -t 1 sh -c 'echo "$SLURMD_NODENAME"' 2>&1 </dev/null); then
        echo "a job step on $nodes failed: $(tail -n 2 <<<"$out" | tr '\n' ' ')"
        return 1
    fi
    if [[ $(sort <<<"$out" | tr '\n' ' ') != "$(printf '%s\n' "$@" | sort | tr '\n' ' ')" ]]; then
        echo "a job step on $* ran on: $(tr '\n' ' ' <<<"$out")"
        return 1
    fi
}

# node_failure_hint NODE: the last error lines of that node's slurmd logs
node_failure_hint() {
    local f hint=""
    for f in "$LOG_DIR/slurmd-$1.log" "$LOG_DIR/slurmd-$1.start.log"; do
        [[ -s $f ]] || continue
        if [[ $f == *.start.log ]]; then
            hint+="$(tail -n 2 "$f" | tr '\n' ' ')"
        else
            hint+="$( (grep -iE 'error|fatal' "$f" || true) | tail -n 2 | tr '\n' ' ')"
        fi
    done
    echo "${hint:-no error logged}"
}

diagnostics() {
    local f
    {
        echo "==== diagnostics ($(date -Is))"
        echo "---- sinfo"
        timeout 10 sinfo -N -l 2>&1 || true
        echo "---- sinfo -R"
        timeout 10 sinfo -R 2>&1 || true
        echo "---- scontrol show nodes"
        timeout 10 scontrol show nodes 2>&1 | grep -E 'NodeName|State=|Reason=' || true
        for f in "$LOG_DIR"/*.log /var/log/munge/munged.log; do
            [[ -s $f ]] || continue
            echo "---- tail $f"
            tail -n 25 "$f"
        done
    } >&2
}

# ---------------------------------------------------------------- commands
cmd_start() {
    local t0=$SECONDS want_multi reason="" changed=0 n deadline started=0 why
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    mkdir -p "$RUN_DIR" "$LOG_DIR" "$SPOOL_DIR"
    ensure_packages
    ensure_munge
    if ((MUNGE_STARTED)) && any_slurm_daemon_alive; then
        log "munged was (re)started: restarting the Slurm daemons"
        stop_slurm_daemons
    fi

    want_multi=1
    if ctld_alive && [[ -f $MULTI_FILE ]] && ! conf_has_multi; then
        # decided already while this cluster has been up ('stop' then 'start' retries)
        want_multi=0
        reason=$(<"$MULTI_FILE")
    fi
    if ((want_multi)) && [[ -n ${SQENV_SLURM_NO_MULTI:-} ]]; then
        want_multi=0
        reason="disabled by SQENV_SLURM_NO_MULTI=$SQENV_SLURM_NO_MULTI"
        teardown_net
    fi
    if ((want_multi)); then
        if ! reason=$(setup_net); then
            want_multi=0
        fi
    fi

    write_conf "$want_multi" && changed=1
    if ((changed)) && any_slurm_daemon_alive; then
        log "slurm.conf changed: restarting the Slurm daemons"
        stop_slurm_daemons
    fi
    if ! ctld_alive; then
        stop_slurm_daemons # no slurmd outlives its controller here: clean start
        start_ctld
        started=1
    fi
    if ! slurmd_alive "$LOCAL_NODE"; then
        start_local_slurmd
        started=1
    fi
    local multi_failed=""
    if ((want_multi)); then
        for n in "${EXTRA_NODES[@]}"; do
            if slurmd_alive "$n" && ! shares_checkout "$n"; then
                log "slurmd $n does not share this checkout ($CHECKOUT): restarting it"
                stop_slurmds "$n"
            fi
            slurmd_alive "$n" && continue
            started=1
            why=$(start_ns_slurmd "$n") || multi_failed+="slurmd $n did not come up: $why; "
        done
    fi

    deadline=$((SECONDS + TIMEOUT))
    if ! wait_nodes "$deadline" "$LOCAL_NODE"; then
        diagnostics
        die "node $LOCAL_NODE not idle within ${TIMEOUT}s"
    fi
    if ((started)) && ! why=$(run_step debug "$LOCAL_NODE"); then
        diagnostics
        die "$why"
    fi

    if ((want_multi)); then
        deadline=$((SECONDS + TIMEOUT)) # the nodes' own wait, not what the local node left
        if [[ -z $multi_failed ]] && ! wait_nodes "$deadline" "${EXTRA_NODES[@]}"; then
            multi_failed="nodes ${EXTRA_NODES[*]} did not become idle within ${TIMEOUT}s ($(node_states | tr '\n' ' ' || true))"
            for n in "${EXTRA_NODES[@]}"; do
                slurmd_alive "$n" || multi_failed+="; slurmd $n is not running"
                multi_failed+="; $n: $(node_failure_hint "$n")"
            done
        fi
        if [[ -z $multi_failed ]] && ((started)) && ! why=$(run_step multi "${EXTRA_NODES[@]}"); then
            multi_failed=$why
        fi
        if [[ -n $multi_failed ]]; then
            reason=$multi_failed
            want_multi=0
            log "multi-node failed; falling back to the single node"
            stop_slurm_daemons
            teardown_net
            write_conf 0 || true
            start_ctld
            start_local_slurmd
            if ! wait_nodes $((SECONDS + TIMEOUT)) "$LOCAL_NODE"; then
                diagnostics
                die "node $LOCAL_NODE not idle within ${TIMEOUT}s"
            fi
        fi
    fi

    if ((want_multi)); then
        rm -f "$MULTI_FILE"
        log "multi-node: partition multi = ${EXTRA_NODES[*]}"
    else
        printf '%s\n' "$reason" >"$MULTI_FILE"
        log "multi-node unavailable: $reason"
    fi
    log "ready in $((SECONDS - t0))s: $(node_states | tr '\n' ' ' || true)"
}

cmd_stop() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    stop_slurm_daemons
    teardown_net
    if [[ -e $MUNGE_MARK ]]; then
        kill_pidfile /run/munge/munged.pid munged
        rm -f "$MUNGE_MARK"
    fi
    rm -f "$MULTI_FILE"
    log "stopped"
}

cmd_status() {
    local n rc=0
    if ctld_alive; then echo "slurmctld: running"; else
        echo "slurmctld: not running"
        rc=1
    fi
    if slurmd_alive "$LOCAL_NODE"; then echo "slurmd $LOCAL_NODE: running"; else
        echo "slurmd $LOCAL_NODE: not running"
        rc=1
    fi
    for n in "${EXTRA_NODES[@]}"; do
        if slurmd_alive "$n"; then echo "slurmd $n: running"; fi
    done
    if munge_works; then echo "munge: ok"; else echo "munge: not working"; fi
    if ((rc)); then
        :
    elif [[ -f $MULTI_FILE ]]; then
        echo "multi-node: unavailable: $(<"$MULTI_FILE")"
    elif conf_has_multi; then
        echo "multi-node: available (partition multi)"
    fi
    if ((rc == 0)); then
        timeout 10 sinfo -N || rc=1
    fi
    return "$rc"
}

choose_nodes
case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
