#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders and the pure cores (see the
# "Fuzzing" section of README.md and `actix_cpg::fuzzing`).
#
#   bash scripts/fuzz.sh smoke [SECONDS]     every target for SECONDS (default 5)
#                                            from the committed seeds; fails on
#                                            a crash (what scripts/test.sh runs)
#   bash scripts/fuzz.sh run TARGET SECONDS  one target, growing its corpus in
#                                            fuzz/corpus/TARGET (seeds stay
#                                            apart: only seed-* is committed)
#
# cargo-fuzz drives libFuzzer, which needs nightly-only rustc flags;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Targets are built
# with optimizations and debug assertions, without a sanitizer: the library
# has no unsafe code for AddressSanitizer to watch, and leaving it out
# shortens the build. libFuzzer's own limits back the harness's memory
# checks: a process above 2 GiB is a crash (and, in a build with a
# sanitizer, `cargo fuzz run -s address`, so is one allocation above
# 512 MiB).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

TARGETS=(wire bodies group supervisor replicated election)
LIMITS=(-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -max_len=65536)
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null; then
    # About 40 s on two cores.
    cargo install cargo-fuzz --locked
fi

build() {
    cargo fuzz build -O --sanitizer none
}

case "${1:-smoke}" in
smoke)
    secs="${2:-5}"
    build
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    for t in "${TARGETS[@]}"; do
        mkdir -p "$scratch/$t" "artifacts/$t"
        # New inputs go to the scratch directory; the committed seeds and
        # regressions are read only. A crash leaves its input in
        # fuzz/artifacts/$t/.
        dirs=("$scratch/$t" "corpus/$t")
        if [ -d "regressions/$t" ]; then dirs+=("regressions/$t"); fi
        if ! cargo fuzz run -O --sanitizer none "$t" "${dirs[@]}" -- \
            -max_total_time="$secs" "${LIMITS[@]}" -artifact_prefix="artifacts/$t/" \
            -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
            tail -n 60 "$scratch/$t.log" >&2
            echo "fuzz target $t crashed; its input is in fuzz/artifacts/$t/" >&2
            exit 1
        fi
        echo "$t: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$scratch/$t.log" || echo 'no summary')"
    done
    ;;
run)
    t="${2:?target}"
    secs="${3:?seconds}"
    build
    mkdir -p "artifacts/$t" "corpus/$t"
    cargo fuzz run -O --sanitizer none "$t" "corpus/$t" -- \
        -max_total_time="$secs" "${LIMITS[@]}" -artifact_prefix="artifacts/$t/" -print_final_stats=1
    ;;
*)
    echo "usage: $0 smoke [SECONDS] | run TARGET SECONDS" >&2
    exit 2
    ;;
esac
