#!/usr/bin/env bash
# A real corosync cluster of 3 nodes (or 1 to 9) on one machine (see
# DESIGN.md §4).
#
# Every node is a network namespace (acpg-n1..acpg-nN) with one veth whose
# other end sits on a bridge inside a hub namespace (acpg-hub), so nothing
# touches the host's own network namespace. Each node runs its own corosync
# daemon (knet, token 1000 ms, votequorum with N expected votes) in a
# private mount namespace with a fresh /run, because corosync keeps its pid
# file there. CPG clients must run inside a node's namespace: libqb IPC uses
# abstract unix sockets, which belong to the network namespace.
#
# The number of nodes N is 3 unless `up` is given another (`up 5`, or
# ACPG_NODES=5); `up` records it, and every later command works on the
# recorded size until `down`. 5 and 7 nodes run on the project's 2-core,
# 24 GiB machine (each daemon takes about 10 MiB and little CPU when idle).
#
# knet encrypts and authenticates the traffic between the nodes by default
# (crypto_cipher aes256, crypto_hash sha256, DESIGN.md §6), with one authkey
# per cluster: 256 random bytes made at `up`, the same file (mode 0400) on
# all three nodes. ACPG_CRYPTO=none runs without it. The setting is fixed
# when the first daemon starts: `start-node` and an `up` that finds daemons
# running keep the running one; `down` then `up` to change it.
#
# Usage: scripts/cluster.sh COMMAND [ARGS]   (as root; see `help`)
#
# Environment:
#   ACPG_CLUSTER_DIR   state directory (default /tmp/actix-cpg-cluster)
#   ACPG_WAIT_TIMEOUT  seconds to wait for membership/quorum (default 60)
#   ACPG_CRYPTO        aes256 (default: aes256 + sha256) or none
#   ACPG_NODES         nodes of the cluster `up` builds (default 3; 1 to 9)
#   ACPG_TOKEN         totem token in ms (default 1000)
#   ACPG_TOKEN_COEFFICIENT  totem token_coefficient in ms (default: corosync's,
#                      650: the token grows by it per node above two)

set -euo pipefail

# Set by `settle_nodes` (main) before any command runs: 1..N.
NODES=()
readonly DEFAULT_NODES=3
readonly MAX_NODES=9
readonly HUB_NS=acpg-hub
readonly BRIDGE=acpg-br
readonly NODE_IF=eth0
# A small private range; it only exists inside the namespaces above.
readonly NET_PREFIX=10.213.57
readonly NET_MASK=24
readonly STATE_DIR=${ACPG_CLUSTER_DIR:-/tmp/actix-cpg-cluster}
readonly WAIT_TIMEOUT=${ACPG_WAIT_TIMEOUT:-60}
readonly MARKER=.actix-cpg-cluster
readonly REQUESTED_CRYPTO=${ACPG_CRYPTO:-aes256}
readonly TOKEN=${ACPG_TOKEN:-1000}
readonly TOKEN_COEFFICIENT=${ACPG_TOKEN_COEFFICIENT:-}
# Bytes of the knet authkey (corosync-keygen's default size).
readonly AUTHKEY_BYTES=256
readonly PACKAGES=(corosync libcpg-dev libquorum-dev libcfg-dev libcmap-dev
    libvotequorum-dev libcorosync-common-dev iproute2)

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    cat <<EOF
Usage: $0 COMMAND [ARGS]

  up [N]             install missing packages, build namespaces and bridge,
                     start N corosync daemons (default \$ACPG_NODES or 3),
                     wait for a quorate N-node view
  down               stop every daemon, delete namespaces and bridge, remove state
  status             show each node's daemon and quorum view (exit 0 iff healthy)
  exec N CMD...      run CMD inside node N's network namespace
  kill-daemon N      SIGKILL node N's daemon (others see NODEDOWN)
  stop-daemon N      SIGTERM node N's daemon and wait for it to exit
  start-node N       start node N's daemon again and wait until it rejoins
  cut N              set node N's link down (partition; others see NODEDOWN)
  restore N          set node N's link up again (merge)
  wait-members K [N] wait until node N (default 1) sees K nodes

Nodes are 1..N (namespaces acpg-n1..acpg-nN, addresses $NET_PREFIX.1-N); N is
what \`up\` recorded (now ${#NODES[@]}).
State: \$ACPG_CLUSTER_DIR (now $STATE_DIR). Wait timeout: \$ACPG_WAIT_TIMEOUT s.
Crypto between nodes: \$ACPG_CRYPTO=aes256 (default; knet aes256 + sha256,
one random authkey per cluster) or none; fixed at the first daemon's start
(\`down\` then \`up\` to change it). \`status\` shows the running setting.
EOF
}

# --- naming -----------------------------------------------------------------

node_ns() { printf 'acpg-n%s' "$1"; }
hub_if() { printf 'acpg-v%s' "$1"; }
node_addr() { printf '%s.%s' "$NET_PREFIX" "$1"; }
node_dir() { printf '%s/n%s' "$STATE_DIR" "$1"; }
pid_file() { printf '%s/corosync.pid' "$(node_dir "$1")"; }
log_file() { printf '%s/corosync.log' "$(node_dir "$1")"; }

check_node() {
    [[ ${1:-} =~ ^[1-9]$ ]] && ((${1} <= ${#NODES[@]})) ||
        die "node must be 1 to ${#NODES[@]} (got '${1:-}')"
}

# The size `up` recorded for the cluster in the state directory; empty if
# none (no cluster, or one started by an older script: 3 nodes).
recorded_nodes() {
    if [[ -f $STATE_DIR/nodes ]]; then
        cat "$STATE_DIR/nodes"
    elif [[ -d $STATE_DIR/n1 ]]; then
        echo "$DEFAULT_NODES"
    fi
}

# Sets NODES for COMMAND: `up` builds the requested size (its argument,
# else ACPG_NODES, else the recorded size, else 3) and refuses to change
# the size of a running cluster; every other command works on the recorded
# size.
settle_nodes() {
    local cmd=$1 requested=$2 recorded count i
    recorded=$(recorded_nodes)
    if [[ $cmd == up ]]; then
        count=${requested:-${ACPG_NODES:-${recorded:-$DEFAULT_NODES}}}
    else
        count=${recorded:-${ACPG_NODES:-$DEFAULT_NODES}}
    fi
    [[ $count =~ ^[1-9]$ ]] && ((count <= MAX_NODES)) ||
        die "the number of nodes must be 1 to $MAX_NODES (got '$count')"
    if [[ $cmd == up && -n $recorded && $recorded != "$count" ]]; then
        NODES=()
        for ((i = 1; i <= recorded; i++)); do NODES+=("$i"); done
        if any_daemon_running; then
            die "the cluster runs with $recorded nodes; \`down\` then \`up $count\` to change it"
        fi
    fi
    NODES=()
    for ((i = 1; i <= count; i++)); do NODES+=("$i"); done
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (namespaces, veths, corosync)"
}

ns_exists() { [[ -e /run/netns/$1 ]]; }

# --- packages ---------------------------------------------------------------

pkg_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
    [[ $status == "install ok installed" ]]
}

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    local c
    for c in corosync corosync-quorumtool ip unshare timeout; do
        command -v "$c" >/dev/null 2>&1 || missing+=("(command $c)")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        warn_root_corosync
        return 0
    fi
    log "missing: ${missing[*]}; installing with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${PACKAGES[@]}"
    stop_distro_corosync
}

# A corosync in the root namespace does not disturb this cluster (other
# network namespace), and this script did not start it: only mention it.
warn_root_corosync() {
    local root_ns pid
    root_ns=$(readlink /proc/self/ns/net)
    for pid in $(pgrep -x corosync || true); do
        if [[ $(readlink "/proc/$pid/ns/net" 2>/dev/null || true) == "$root_ns" ]]; then
            log "note: a corosync (pid $pid) runs in the root namespace; it is not part of this cluster"
        fi
    done
}

# The package's own service may start a corosync in the root namespace right
# after install; it is not part of this cluster.
stop_distro_corosync() {
    local root_ns pid pids
    root_ns=$(readlink /proc/self/ns/net)
    pids=$(pgrep -x corosync || true)
    for pid in $pids; do
        [[ $(readlink "/proc/$pid/ns/net" 2>/dev/null || true) == "$root_ns" ]] || continue
        log "stopping the distro corosync (pid $pid) in the root namespace"
        if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
            systemctl stop corosync.service || true
        elif command -v service >/dev/null 2>&1; then
            service corosync stop || true
        fi
        if pid_alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            wait_pid_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

# --- crypto -----------------------------------------------------------------

check_crypto() {
    case "$1" in
    aes256 | none) ;;
    *) die "ACPG_CRYPTO must be aes256 or none (got '$1')" ;;
    esac
}

# The setting the cluster's daemons run with: what `up` recorded, or (for a
# cluster started by an older script) what node 1's config says; empty if
# there is no cluster.
running_crypto() {
    local conf
    if [[ -f $STATE_DIR/crypto ]]; then
        cat "$STATE_DIR/crypto"
        return
    fi
    conf="$(node_dir 1)/corosync.conf"
    if [[ -f $conf ]]; then
        awk '$1 == "crypto_cipher:" { print $2; exit }' "$conf"
    fi
}

any_daemon_running() {
    local n
    for n in "${NODES[@]}"; do
        daemon_pid "$n" >/dev/null && return 0
    done
    return 1
}

# Fixes the cluster's crypto setting before `up` starts daemons: the
# requested one, unless daemons already run with another (mixing would
# split the ring), which is kept and reported.
settle_crypto() {
    local running
    check_crypto "$REQUESTED_CRYPTO"
    running=$(running_crypto)
    if any_daemon_running && [[ -n $running ]]; then
        if [[ $running != "$REQUESTED_CRYPTO" ]]; then
            log "note: the cluster already runs with crypto $running (ACPG_CRYPTO=$REQUESTED_CRYPTO ignored; down then up to change it)"
        fi
        printf '%s\n' "$running" >"$STATE_DIR/crypto"
        return
    fi
    printf '%s\n' "$REQUESTED_CRYPTO" >"$STATE_DIR/crypto"
}

# One authkey per cluster, the same bytes on every node; only the daemons
# (root) may read it.
ensure_authkey() {
    local key=$STATE_DIR/authkey n
    if [[ ! -s $key ]]; then
        (
            umask 077
            dd if=/dev/urandom of="$key.tmp" bs="$AUTHKEY_BYTES" count=1 status=none
        )
        mv -f -- "$key.tmp" "$key"
        chmod 0400 "$key"
        log "made a new knet authkey ($AUTHKEY_BYTES random bytes)"
    fi
    for n in "${NODES[@]}"; do
        mkdir -p "$(node_dir "$n")"
        install -m 0400 "$key" "$(node_dir "$n")/authkey"
    done
}

# --- processes --------------------------------------------------------------

# Prints node N's daemon pid if it is alive, is corosync, and runs in the
# node's namespace (guards against a stale pid file after a pid wrap).
daemon_pid() {
    local n=$1 file pid comm
    file=$(pid_file "$n")
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == corosync ]] || return 1
    pid_alive "$pid" || return 1
    [[ $(ip netns identify "$pid" 2>/dev/null || true) == "$(node_ns "$n")" ]] || return 1
    printf '%s\n' "$pid"
}

# Whether PID is still a live process (a zombie is not: it only waits for
# its parent, here often a slow-reaping init, to collect it).
pid_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

wait_pid_gone() {
    local pid=$1 secs=$2 i
    for ((i = 0; i < secs * 20; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.05
    done
    return 1
}

start_daemon() {
    local n=$1 ns dir conf pid i
    ns=$(node_ns "$n")
    dir=$(node_dir "$n")
    conf="$dir/corosync.conf"
    mkdir -p "$dir/state"
    write_conf "$n"
    # All fds go to files: a daemon that inherited a caller's pipe would keep
    # it open, and the caller would wait for EOF forever. Any other inherited
    # fd is closed too: one holding the caller's `flock` would keep the
    # cluster lock taken for as long as the daemon lives.
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    ip netns exec "$ns" unshare -m bash -c \
        'for fd in /proc/self/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done 2>/dev/null
         mount -t tmpfs tmpfs /run && exec corosync -f -c "$1"' bash "$conf" \
        </dev/null >>"$dir/stdout.log" 2>&1 &
    pid=$!
    # ip netns exec, unshare and sh all exec, so $! becomes corosync itself.
    for ((i = 0; i < 50; i++)); do
        if [[ $(cat "/proc/$pid/comm" 2>/dev/null || true) == corosync ]]; then
            break
        fi
        pid_alive "$pid" || break
        sleep 0.1
    done
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null || true) != corosync ]]; then
        log "node $n: corosync did not start; last lines of its output:"
        tail -n 20 "$dir/stdout.log" "$(log_file "$n")" 2>/dev/null >&2 || true
        die "node $n: failed to start corosync"
    fi
    printf '%s\n' "$pid" >"$(pid_file "$n")"
    printf '%s\n' "$pid" >>"$STATE_DIR/all-daemon-pids"
    log "node $n: corosync started (pid $pid, ns $ns)"
}

# --- network ----------------------------------------------------------------

ensure_network() {
    ns_exists "$HUB_NS" || ip netns add "$HUB_NS"
    ip -n "$HUB_NS" link set lo up
    if ! ip -n "$HUB_NS" link show "$BRIDGE" >/dev/null 2>&1; then
        ip -n "$HUB_NS" link add "$BRIDGE" type bridge stp_state 0 forward_delay 0
    fi
    ip -n "$HUB_NS" link set "$BRIDGE" up
    local n ns hif
    for n in "${NODES[@]}"; do
        ns=$(node_ns "$n")
        hif=$(hub_if "$n")
        ns_exists "$ns" || ip netns add "$ns"
        ip -n "$ns" link set lo up
        # A veth dies with either namespace; rebuild the pair if half is gone.
        if ! ip -n "$HUB_NS" link show "$hif" >/dev/null 2>&1 ||
            ! ip -n "$ns" link show "$NODE_IF" >/dev/null 2>&1; then
            ip -n "$HUB_NS" link del "$hif" >/dev/null 2>&1 || true
            ip -n "$ns" link del "$NODE_IF" >/dev/null 2>&1 || true
            ip -n "$HUB_NS" link add "$hif" type veth peer name "$NODE_IF" netns "$ns"
        fi
        ip -n "$HUB_NS" link set "$hif" master "$BRIDGE"
        ip -n "$ns" addr replace "$(node_addr "$n")/$NET_MASK" dev "$NODE_IF"
        ip -n "$ns" link set "$NODE_IF" up
        ip -n "$HUB_NS" link set "$hif" up
    done
}

link_is_up() {
    local flags
    flags=$(ip -n "$HUB_NS" -o link show "$(hub_if "$1")" 2>/dev/null) || return 1
    [[ $flags =~ [\<,]UP[,\>] ]]
}

# --- configuration ----------------------------------------------------------

write_conf() {
    local n=$1 dir i crypto cipher hash keyfile= coefficient=
    [[ $TOKEN =~ ^[0-9]+$ ]] || die "ACPG_TOKEN must be a number of ms (got '$TOKEN')"
    if [[ -n $TOKEN_COEFFICIENT ]]; then
        [[ $TOKEN_COEFFICIENT =~ ^[0-9]+$ ]] ||
            die "ACPG_TOKEN_COEFFICIENT must be a number of ms (got '$TOKEN_COEFFICIENT')"
        coefficient="    token_coefficient: $TOKEN_COEFFICIENT"
    fi
    dir=$(node_dir "$n")
    crypto=$(running_crypto)
    crypto=${crypto:-$REQUESTED_CRYPTO}
    check_crypto "$crypto"
    if [[ $crypto == aes256 ]]; then
        cipher=aes256
        hash=sha256
        [[ -s $dir/authkey ]] || die "node $n: no authkey in $dir (run: $0 up)"
        keyfile="    keyfile: $dir/authkey"
    else
        cipher=none
        hash=none
    fi
    {
        cat <<EOF
# Generated by scripts/cluster.sh for node $n; rewritten on every start.
totem {
    version: 2
    cluster_name: actix-cpg-test
    transport: knet
    crypto_cipher: $cipher
    crypto_hash: $hash
$keyfile
    # Short token for fast failure detection: NODEDOWN after ~3.5 s.
    token: $TOKEN
$coefficient
}

nodelist {
EOF
        for i in "${NODES[@]}"; do
            cat <<EOF
    node {
        name: n$i
        nodeid: $i
        ring0_addr: $(node_addr "$i")
    }
EOF
        done
        cat <<EOF
}

quorum {
    provider: corosync_votequorum
    expected_votes: ${#NODES[@]}
}

logging {
    to_logfile: yes
    logfile: $(log_file "$n")
    to_stderr: no
    to_syslog: no
    timestamp: on
    fileline: off
    debug: off
}

system {
    state_dir: $dir/state
}
EOF
    } >"$dir/corosync.conf"
}

# --- views ------------------------------------------------------------------

quorumtool() {
    local n=$1
    shift
    timeout 5 ip netns exec "$(node_ns "$n")" corosync-quorumtool "$@" 2>&1
}

# Prints "NODES QUORATE MEMBERS" as node N's quorum service sees it, e.g.
# "3 Yes 1,2,3"; fails when the daemon does not answer.
node_view() {
    local out nodes quorate members
    out=$(quorumtool "$1" -s) || true
    nodes=$(awk -F: '/^Nodes:/ { gsub(/[[:space:]]/, "", $2); print $2 }' <<<"$out")
    quorate=$(awk -F: '/^Quorate:/ { gsub(/[[:space:]]/, "", $2); print $2 }' <<<"$out")
    [[ -n $nodes && -n $quorate ]] || return 1
    members=$(awk '/Nodeid[[:space:]]+Votes/ { m = 1; next }
                   m && $1 ~ /^[0-9]+$/ { printf "%s%s", sep, $1; sep = "," }' <<<"$out")
    printf '%s %s %s\n' "$nodes" "$quorate" "${members:--}"
}

node_sees() {
    local n=$1 want=$2 quorate_needed=${3:-no} view nodes quorate
    view=$(node_view "$n") || return 1
    read -r nodes quorate _ <<<"$view"
    [[ $nodes == "$want" ]] || return 1
    [[ $quorate_needed == no || $quorate == Yes ]]
}

all_quorate() {
    local n pid
    for n in "${NODES[@]}"; do
        node_sees "$n" "${#NODES[@]}" yes || return 1
    done
}

print_views() {
    local n view
    for n in "${NODES[@]}"; do
        view=$(node_view "$n" 2>/dev/null) || view="(no answer)"
        log "  node $n: nodes/quorate/members = $view"
    done
}

tail_logs() {
    local n pid
    for n in "${NODES[@]}"; do
        log "---- node $n: last lines of $(log_file "$n")"
        tail -n 15 "$(log_file "$n")" >&2 2>/dev/null || log "(no log)"
    done
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
    local secs=$1 what=$2 start
    shift 2
    start=$SECONDS
    while ! "$@"; do
        if ((SECONDS - start >= secs)); then
            log "timed out after ${secs}s waiting for $what; current views:"
            print_views
            tail_logs
            return 1
        fi
        sleep 0.2
    done
    log "ok: $what (after $((SECONDS - start))s)"
}

# --- commands ---------------------------------------------------------------

cmd_up() {
    require_root
    ensure_packages
    mkdir -p "$STATE_DIR"
    touch "$STATE_DIR/$MARKER"
    printf '%s\n' "${#NODES[@]}" >"$STATE_DIR/nodes"
    settle_crypto
    ensure_authkey
    ensure_network
    local n pid
    for n in "${NODES[@]}"; do
        if pid=$(daemon_pid "$n"); then
            log "node $n: corosync already running (pid $pid)"
        else
            start_daemon "$n"
        fi
    done
    wait_for "$WAIT_TIMEOUT" "all ${#NODES[@]} nodes see a quorate ${#NODES[@]}-node membership" all_quorate ||
        die "cluster did not become quorate (see the logs above; scripts/cluster.sh down cleans up)"
    print_views
}

cmd_down() {
    require_root
    local n pid
    for n in "${NODES[@]}"; do
        if pid=$(daemon_pid "$n"); then
            kill -TERM "$pid" 2>/dev/null || true
            if ! wait_pid_gone "$pid" 10; then
                log "node $n: corosync (pid $pid) ignored SIGTERM; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                wait_pid_gone "$pid" 5 || true
            fi
            log "node $n: corosync (pid $pid) stopped"
        fi
    done
    local ns pids all_ns=()
    for n in "${NODES[@]}"; do all_ns+=("$(node_ns "$n")"); done
    # Node namespaces of any size this script made (a state directory lost
    # with its cluster up leaves no record of the size).
    for ns in /run/netns/acpg-n[0-9]; do
        [[ -e $ns ]] || continue
        ns=${ns##*/}
        [[ " ${all_ns[*]} " == *" $ns "* ]] || all_ns+=("$ns")
    done
    for ns in "${all_ns[@]}" "$HUB_NS"; do
        ns_exists "$ns" || continue
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [[ -n $pids ]]; then
            log "$ns: stopping leftover processes: $(tr '\n' ' ' <<<"$pids")"
            # shellcheck disable=SC2086 # one pid per word
            kill -TERM $pids 2>/dev/null || true
            for pid in $pids; do
                wait_pid_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true
            done
        fi
        ip netns del "$ns"
        log "deleted namespace $ns"
    done
    if [[ -d $STATE_DIR ]]; then
        if [[ -e $STATE_DIR/$MARKER ]]; then
            remove_shm_leftovers
            rm -rf -- "$STATE_DIR"
            log "removed $STATE_DIR"
        else
            log "not removing $STATE_DIR: it has no $MARKER marker (not made by this script)"
        fi
    fi
    log "down"
}

# A daemon killed with SIGKILL leaves its 8 MB flight recorder and the IPC
# ring buffers of its connected clients in /dev/shm (a clean exit removes
# them); drop those of the daemons this script started.
remove_shm_leftovers() {
    local pid
    [[ -f $STATE_DIR/all-daemon-pids ]] || return 0
    while read -r pid; do
        [[ $pid =~ ^[0-9]+$ ]] || continue
        pid_alive "$pid" && continue
        rm -rf -- "/dev/shm/qb-corosync-$pid-blackbox-data" \
            "/dev/shm/qb-corosync-$pid-blackbox-header" "/dev/shm/qb-$pid-"*
    done <"$STATE_DIR/all-daemon-pids"
}

cmd_status() {
    local n pid link view nodes quorate members healthy=0
    for n in "${NODES[@]}"; do
        if pid=$(daemon_pid "$n"); then
            pid="pid $pid alive"
        else
            pid="not running"
            healthy=1
        fi
        if link_is_up "$n"; then link=up; else
            link=down
            healthy=1
        fi
        if view=$(node_view "$n" 2>/dev/null); then
            read -r nodes quorate members <<<"$view"
            view="sees $nodes node(s) [$members], quorate: $quorate"
            [[ $nodes == "${#NODES[@]}" && $quorate == Yes ]] || healthy=1
        else
            view="no quorum answer"
            healthy=1
        fi
        printf 'node %s (%s, %s): corosync %s, link %s, %s\n' \
            "$n" "$(node_ns "$n")" "$(node_addr "$n")" "$pid" "$link" "$view"
    done
    local crypto
    crypto=$(running_crypto)
    case "$crypto" in
    aes256) echo "crypto between nodes: knet aes256 + sha256 (one authkey per cluster)" ;;
    none) echo "crypto between nodes: none" ;;
    *) echo "crypto between nodes: unknown (no cluster state)" ;;
    esac
    if ((healthy == 0)); then
        echo "cluster: healthy (${#NODES[@]} nodes up and quorate)"
    else
        echo "cluster: NOT healthy"
    fi
    return "$healthy"
}

cmd_exec() {
    check_node "${1:-}"
    local n=$1
    shift
    [[ $# -gt 0 ]] || die "exec needs a command"
    ns_exists "$(node_ns "$n")" || die "namespace $(node_ns "$n") does not exist (run: $0 up)"
    exec ip netns exec "$(node_ns "$n")" "$@"
}

cmd_kill_daemon() {
    check_node "${1:-}"
    local pid
    pid=$(daemon_pid "$1") || die "node $1: corosync is not running"
    kill -KILL "$pid"
    wait_pid_gone "$pid" 5 || die "node $1: corosync (pid $pid) survived SIGKILL"
    log "node $1: corosync (pid $pid) killed with SIGKILL at $(date +%T.%N)"
}

cmd_stop_daemon() {
    check_node "${1:-}"
    local pid
    pid=$(daemon_pid "$1") || die "node $1: corosync is not running"
    kill -TERM "$pid"
    wait_pid_gone "$pid" 20 || die "node $1: corosync (pid $pid) did not exit within 20 s of SIGTERM"
    log "node $1: corosync (pid $pid) stopped with SIGTERM"
}

# How many nodes node N should see once it has (re)joined: every node with a
# live daemon and an up link, or just itself when its own link is cut.
expected_view() {
    local n=$1 i count=0
    if ! link_is_up "$n"; then
        echo 1
        return
    fi
    for i in "${NODES[@]}"; do
        if daemon_pid "$i" >/dev/null && link_is_up "$i"; then
            count=$((count + 1))
        fi
    done
    echo "$count"
}

rejoined() {
    local n=$1 want=$2 i
    node_sees "$n" "$want" || return 1
    ((want > 1)) || return 0
    for i in "${NODES[@]}"; do
        [[ $i == "$n" ]] && continue
        if daemon_pid "$i" >/dev/null && link_is_up "$i"; then
            node_sees "$i" "$want" || return 1
        fi
    done
}

cmd_start_node() {
    check_node "${1:-}"
    local n=$1 pid want
    require_root
    if [[ ! -e $STATE_DIR/$MARKER ]] || ! ns_exists "$(node_ns "$n")"; then
        die "no cluster here (run: $0 up)"
    fi
    if pid=$(daemon_pid "$n"); then
        log "node $n: corosync already running (pid $pid)"
    else
        start_daemon "$n"
    fi
    # The expected view is read again at every try: daemons of other nodes
    # started at the same time (a whole cluster restarted at once) join it
    # while this one waits.
    wait_for "$WAIT_TIMEOUT" "node $n back in the membership of every live node" rejoined_now "$n" ||
        die "node $n did not rejoin (expected a $(expected_view "$n")-node membership)"
}

rejoined_now() {
    rejoined "$1" "$(expected_view "$1")"
}

cmd_cut() {
    check_node "${1:-}"
    ns_exists "$HUB_NS" || die "no cluster here (run: $0 up)"
    ip -n "$HUB_NS" link set "$(hub_if "$1")" down
    log "node $1: link cut at $(date +%T.%N)"
}

cmd_restore() {
    check_node "${1:-}"
    ns_exists "$HUB_NS" || die "no cluster here (run: $0 up)"
    ip -n "$HUB_NS" link set "$(hub_if "$1")" up
    log "node $1: link restored at $(date +%T.%N)"
}

cmd_wait_members() {
    local k=${1:-} n=${2:-1}
    [[ $k =~ ^[0-9]+$ ]] || die "wait-members needs a node count (got '$k')"
    check_node "$n"
    wait_for "$WAIT_TIMEOUT" "node $n sees $k node(s)" node_sees "$n" "$k" ||
        die "node $n did not see $k node(s) within ${WAIT_TIMEOUT}s"
}

main() {
    local cmd=${1:-help} size=
    [[ $# -gt 0 ]] && shift
    if [[ $cmd == up && $# -gt 0 ]]; then
        size=$1
        shift
    fi
    settle_nodes "$cmd" "$size"
    case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    exec) cmd_exec "$@" ;;
    kill-daemon) cmd_kill_daemon "$@" ;;
    stop-daemon) cmd_stop_daemon "$@" ;;
    start-node) cmd_start_node "$@" ;;
    cut) cmd_cut "$@" ;;
    restore) cmd_restore "$@" ;;
    wait-members) cmd_wait_members "$@" ;;
    help | -h | --help) usage ;;
    *)
        usage >&2
        die "unknown command '$cmd'"
        ;;
    esac
}

main "$@"
