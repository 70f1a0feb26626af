#!/usr/bin/env bash
# Where one message's work goes on the actor path, stage by stage: sender
# (try_tell -> gate and call queue -> op taken by the runtime -> send queue
# and window -> multicast) and every receiver (transport event -> decode ->
# runtime dispatch -> hand-off to the actor -> the actor), in instructions
# and in µs, next to the raw path and the floor of the same load.
#
# One bench member process runs the whole simulated group (valgrind's
# callgrind: this VM has no hardware counters for perf stat). Each path runs
# at COUNT and COUNT/5 messages; a stage's cost per message is the
# difference of its inclusive instructions over the difference in messages,
# so start-up and joining cancel out. Stages are function totals (release
# build, so inlined helpers count in their caller), taken apart by
# subtraction so that they do not overlap; "other" is what no stage names
# (the tokio and actix schedulers' polls, wake-ups). µs come from the same
# load run natively: CPU time of the process per message, spread over the
# stages in proportion to their instructions.
#
# Usage: bash scripts/profile-stages.sh [SIZE [COUNT [MEMBERS]]]   (64, 50000, 3)
# Needs valgrind (apt-get install valgrind) and a release build of the
# bench (built here if missing). Changes nothing in the library.
set -euo pipefail
cd "$(dirname "$0")/.."

size=${1:-64}
count=${2:-50000}
members=${3:-3}
exe=target/release/bench
if [[ ! -x $exe ]]; then
    cargo build --release -p actix-cpg-harness --bin bench
fi
command -v valgrind >/dev/null || {
    echo "profile-stages.sh: needs valgrind (apt-get install valgrind)" >&2
    exit 1
}
work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

spec() { # PATH COUNT
    printf 'backend=sim path=%s index=0 group=profile size=%s count=%s members=%s senders=1 window=64 rate=0 duration=0' \
        "$1" "$size" "$2" "$members"
}

# Inclusive instructions per function name, "Ir<TAB>name", of one run.
profile() { # PATH COUNT OUT
    ACPG_BENCH_CHILD=$(spec "$1" "$2") valgrind --tool=callgrind \
        --callgrind-out-file="$work/cg" "$exe" >/dev/null 2>"$work/valgrind.log"
    callgrind_annotate --inclusive=yes --threshold=100 "$work/cg" 2>/dev/null |
        awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 "\tTOTAL"; next }
             /^ *[0-9,]+ \(/ {
                 ir = $1; gsub(",", "", ir)
                 name = $0; sub(/^ *[0-9,]+ \( *[0-9.]+%\) +/, "", name)
                 sub(/ \[[^]]*\]$/, "", name); sub(/^[^:]*:/, "", name)
                 if (!(name in seen)) { seen[name] = 1; print ir "\t" name }
             }' >"$3"
    # The flush called from the runtime's commands (the rest is the pump's
    # own, after a turn), from the caller tree.
    callgrind_annotate --inclusive=yes --tree=caller --threshold=100 "$work/cg" 2>/dev/null |
        awk '/^ *$/ { nc = 0; next }
             / < / { ir = $1; gsub(",", "", ir); callers[++nc] = ir "\t" $0; next }
             / \*  / && /GroupActor::flush_or_close/ {
                 for (i = 1; i <= nc; i++) if (callers[i] ~ /commands::/) {
                     split(callers[i], f, "\t"); print f[1] "\tFLUSH_FROM_COMMANDS"
                 }
                 nc = 0; next
             }
             { nc = 0 }' >>"$3"
}

# CPU µs per message of the same load run natively (median of 3).
cpu_per_msg() { # PATH
    local i out
    for i in 1 2 3; do
        out=$(ACPG_BENCH_CHILD=$(spec "$1" $((count * 4))) "$exe")
        awk -v n=$((count * 4)) '/^REPORT index=0 / {
            for (i = 1; i <= NF; i++) if ($i ~ /^cpu=/) { sub("cpu=", "", $i); printf "%.4f\n", $i / n }
        }' <<<"$out"
    done | sort -n | sed -n 2p
}

small=$((count / 5))
for path in raw floor actor; do
    profile "$path" "$count" "$work/$path.big"
    profile "$path" "$small" "$work/$path.small"
    cpu_per_msg "$path" >"$work/$path.cpu"
done

# Per-message instructions of the function whose name contains PATTERN
# (the first such line: the largest total).
awk -v big="$count" -v small="$small" -v members="$members" -v size="$size" \
    -v raw_cpu="$(cat "$work/raw.cpu")" -v floor_cpu="$(cat "$work/floor.cpu")" \
    -v actor_cpu="$(cat "$work/actor.cpu")" '
    function per(path, pattern,   b, s) {
        b = find(path ".big", pattern); s = find(path ".small", pattern)
        return (b - s) / (big - small)
    }
    function find(file, pattern,   k) {
        for (k = 1; k <= n[file]; k++) if (index(names[file, k], pattern)) return irs[file, k]
        return 0
    }
    FNR == 1 { file = FILENAME; sub(".*/", "", file) }
    { n[file]++; split($0, f, "\t"); irs[file, n[file]] = f[1]; names[file, n[file]] = f[2] }
    END {
        total = per("actor", "TOTAL")
        ns = actor_cpu * 1000 / total
        encode = per("actor", "actix_cpg::wire::Codec::encode_with_written_head")
        tell = per("actor", "RemoteAddr<M>::try_tell")
        take = per("actor", "GroupActor>::take_op")
        flush = per("actor", "actix_cpg::group::runtime::GroupActor::flush_or_close")
        mcast = per("actor", "SimConnection as actix_cpg::transport::Connection>::mcast")
        event = per("actor", "SimConnection as actix_cpg::transport::Connection>::poll_event")
        pump = per("actor", "actix_cpg::pump::EventPump as actix::fut::future::ActorFuture<A>>::poll")
        decode = per("actor", "actix_cpg::group::inbound::handle_envelope") + per("actor", "actix_cpg::group::inbound::unpack") + per("actor", "actix_cpg::group::inbound::receive")
        handoff = per("actor", "actix_cpg::remote::Endpoint::dispatch")
        actor = per("actor", "actix::mailbox::Mailbox<A>::poll")
        producer = per("actor", "actix_cpg_harness::bench::actor_member::{{closure}}")
        handle = per("actor", "GroupActor as actix_cpg::pump::Pumped>::handle_event")
        from_commands = per("actor", "FLUSH_FROM_COMMANDS")
        in_order = handle - decode - handoff - from_commands
        turn = pump - event - take - handle - (flush - from_commands)
        printf "Sim, %d members, one sender, %d B, actor path unbatched: %.0f instructions and %.2f µs of CPU per message (%.2f ns per instruction)\n\n", members, size, total, actor_cpu, ns
        print "| side | stage | functions | instructions / msg | µs / msg | share |"
        print "|---|---|---|---|---|---|"
        row("sender", "try_tell: encode (request head + payload into the envelope)", "`Codec::encode_with_written_head`", encode)
        row("sender", "try_tell: gate and call queue (admission, op channel push)", "`RemoteAddr::try_tell` - encode", tell - encode)
        row("sender", "op channel: the runtime takes the call", "`GroupActor::take_op`", take)
        row("sender", "send queue: window, batcher, bookkeeping", "`GroupActor::flush_or_close` - multicast", flush - mcast)
        row("sender", "multicast (sim: the transport copies to each member)", "`SimConnection::mcast`", mcast)
        row("receivers", "transport event (sim: each member takes its copy)", "`SimConnection::poll_event`", event)
        row("receivers", "decode: frame, request head, routing check in the core", "`inbound::{receive, unpack, handle_envelope}`", decode)
        row("receivers", "runtime: each delivery in order (event bookkeeping, freeing the delivered bytes, commands)", "`handle_event` - decode, hand-off, flush", in_order)
        row("receivers", "runtime: the pump turn (event loop, budget, wake-up)", "`EventPump::poll` - `handle_event` - event, take_op, flush", turn)
        row("receivers (host)", "hand-off: user type decoded, `do_send`", "`Endpoint::dispatch`", handoff)
        row("receivers (host)", "the actor: mailbox and handler (bench tally)", "`Mailbox::poll`", actor)
        row("bench", "producer loop (clock reads, counters)", "`actor_member` closure - try_tell", producer - tell)
        named = encode + (tell - encode) + take + (flush - mcast) + mcast + event + decode + in_order + turn + handoff + actor + (producer - tell)
        row("-", "other: tokio and actix schedulers, wake-ups", "total - the rows above", total - named)
        printf "| | **total** | | %.0f | %.2f | 100%% |\n\n", total, total * ns / 1000
        rt = per("raw", "TOTAL"); ft = per("floor", "TOTAL")
        printf "Same load, whole process per message: raw %.0f instructions (%.2f µs), floor %.0f (%.2f µs), actor %.0f (%.2f µs).\n", rt, raw_cpu, ft, floor_cpu, total, actor_cpu
    }
    function row(side, stage, fns, ir) {
        printf "| %s | %s | %s | %.0f | %.3f | %.1f%% |\n", side, stage, fns, ir, ir * ns / 1000, 100 * ir / total
    }' "$work"/raw.big "$work"/raw.small "$work"/floor.big "$work"/floor.small "$work"/actor.big "$work"/actor.small
