#!/usr/bin/env bash
# From "something is wrong" to the member, the child and the decision, on
# the test cluster: the run the README's section of that name shows.
#
# Three `cpg-agent` members run the conformance test tree in group GROUP,
# one per node, each recording its stream; `acpg watch` runs on node 2; the
# member on node 3 is SIGKILLed. Then the three commands: `acpg status`
# (right after the kill, and once the children run again), what `acpg
# watch` printed, and `acpg replay` of node 1's recording. Then the same
# for an election group: three `rsm-agent elect` members, the leader
# SIGKILLed, `acpg status --election` right after.
#
# Usage (as root, the cluster up; builds nothing):
#   cargo build -p acpg -p actix-cpg-harness --features actix-cpg-harness/corosync --bins
#   flock /tmp/acpg-cluster.lock bash -c \
#       'bash scripts/cluster.sh up && bash scripts/three-commands.sh; bash scripts/cluster.sh down'
#
# Environment: BIN (default target/debug), OUT (default
# /tmp/acpg-three-commands: the agents' recordings and output, and
# transcript.txt, everything printed below), GROUP (default orders).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${BIN:-target/debug}")
OUT=${OUT:-/tmp/acpg-three-commands}
GROUP=${GROUP:-orders}
ELECT=${GROUP}-leader
rm -rf "$OUT" && mkdir -p "$OUT"
PIDS=()
trap 'kill -9 "${PIDS[@]}" 2>/dev/null || true' EXIT

# `on N CMD...`: CMD in node N's namespace, printed as the operator typed it.
on() {
    local n=$1
    shift
    printf '\n$ %s        # on node %s\n' "$*" "$n"
    ip netns exec "acpg-n$n" "$BIN/$@" 2>&1 || true
}

# `start NAME N CMD...`: a member in node N's namespace, its stdin a fifo
# kept open on fd 10+N (for `tell`), its stdout in $OUT/NAME.out.
start() {
    local name=$1 n=$2
    shift 2
    mkfifo "$OUT/$name.in"
    eval "exec $((10 + n))<>\"$OUT/$name.in\""
    ip netns exec "acpg-n$n" "$BIN/$@" <"$OUT/$name.in" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    PIDS+=($!)
    eval "PID_$name=$!"
    # Killed on purpose: no "Killed" line from bash in the transcript.
    disown $!
}
tell() { echo "$2" >&$((10 + $1)); }

# `wait_for FILE TEXT`: until FILE holds TEXT (30 s at most).
wait_for() {
    for _ in $(seq 300); do
        grep -qF -- "$2" "$1" && return 0
        sleep 0.1
    done
    echo "never saw '$2' in $1" >&2
    cat "$1" >&2
    exit 1
}

# `status_until N REGEX ARGS...`: acpg status from node N until it prints
# a line matching REGEX.
status_until() {
    local n=$1 text=$2
    shift 2
    for _ in $(seq 300); do
        ip netns exec "acpg-n$n" "$BIN/acpg" status "$@" 2>/dev/null | grep -qE -- "$text" && return 0
        sleep 0.1
    done
    echo "acpg status $* never said '$text'" >&2
    exit 1
}

exec > >(tee "$OUT/transcript.txt") 2>&1
echo "# registry group $GROUP: three members, the test tree"
for n in 1 2 3; do
    start "agent$n" "$n" cpg-agent "$GROUP" group --record "$OUT/$GROUP.rec.$n"
    wait_for "$OUT/agent$n.out" READY
    tell "$n" tree
    wait_for "$OUT/agent$n.out" "TREE ok"
done
status_until 1 "6 of 6 slots running" "$GROUP"
status_until 1 "hosts: node1/[0-9]+, node2/[0-9]+, node3/" "$GROUP"
on 1 acpg status "$GROUP"

ip netns exec acpg-n2 "$BIN/acpg" watch "$GROUP" >"$OUT/watch.out" 2>&1 &
WATCH=$!
PIDS+=("$WATCH")
wait_for "$OUT/watch.out" "watching group"

echo
echo "# kill -9 the member on node 3 (pid $PID_agent3)"
kill -9 "$PID_agent3"
on 1 acpg status "$GROUP"
on 1 acpg status --json "$GROUP"
sleep 2
on 2 acpg status "$GROUP"
sleep 1
kill -INT "$WATCH"
wait "$WATCH" || true
printf '\n$ acpg watch %s        # on node 2, from before the kill, then Ctrl-C\n' "$GROUP"
cat "$OUT/watch.out"

# The recording is complete once its member has left.
tell 1 leave
wait_for "$OUT/agent1.out" LEFT
sleep 0.5
on 1 acpg replay "$OUT/$GROUP.rec.1"

echo
echo "# election group $ELECT: three members, the leader killed"
for n in 1 2 3; do
    start "elect$n" "$n" rsm-agent elect "$ELECT"
    wait_for "$OUT/elect$n.out" READY
done
status_until 2 "3 of 3 participants reported" --election "$ELECT"
on 2 acpg status --election "$ELECT"
echo
echo "# kill -9 the leader, the member on node 1 (pid $PID_elect1)"
kill -9 "$PID_elect1"
on 2 acpg status --election "$ELECT"
on 2 acpg status --election --json "$ELECT"
sleep 2
on 2 acpg status --election "$ELECT"
