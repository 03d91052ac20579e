#!/usr/bin/env bash
# The cost of ordered output (issue 14): the turn-taking program
# (`tests/programs/fidelity_turns.rs`: 8 workers take turns through a Mutex, each printing a block
# of lines per turn, then main joins and prints) with and without output, this build against an
# older one, interleaved in one run.
#
#   scripts/bench-ordered-output.sh OLD_BINARY [NODES] [RUNS] [ROUNDS] [LINES]
#
# OLD_BINARY: `fidelity_turns` built from an older commit (copy tests/programs/fidelity_turns.rs
# into src/bin/ of a worktree of that commit and build it with --release). Prints, per
# configuration, the median of the program's own elapsed time (spawn to the last line of main) and
# how many runs printed exactly what std prints.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1
nodes=${2:-4}
runs=${3:-7}
rounds=${4:-20}
lines=${5:-30}
new=target/release/fidelity_turns
[ -x "$new" ] || cargo build --release --bin fidelity_turns >/dev/null
ref=$(mktemp)
RTHREADS_NODES=1 "$new" 8 "$rounds" "$lines" std >"$ref" 2>/dev/null
declare -A times same
for r in $(seq "$runs"); do
    for build in old new; do
        bin=$old; [ $build = new ] && bin=$new
        for mode in output quiet; do
            extra=""; [ $mode = quiet ] && extra=quiet
            out=$(mktemp)
            t=$(RTHREADS_NODES=$nodes "$bin" 8 "$rounds" "$lines" $extra 2>&1 >"$out" | sed -n 's/^elapsed: \([0-9.]*\) s$/\1/p')
            times[$build-$mode]+="$t "
            if [ $mode = output ] && cmp -s "$out" "$ref"; then same[$build]=$(( ${same[$build]:-0} + 1 )); fi
            rm -f "$out"
        done
    done
done
rm -f "$ref"
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "turn-taking, 8 workers, $rounds rounds x $lines lines, $nodes nodes, $runs interleaved runs (median s)"
for build in old new; do
    for mode in output quiet; do
        echo "$build $mode: $(echo "${times[$build-$mode]}" | median) s   (all: ${times[$build-$mode]})"
    done
    echo "$build: output identical to std in ${same[$build]:-0}/$runs runs"
done
