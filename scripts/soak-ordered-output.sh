#!/usr/bin/env bash
# Soak run of ordered output (issue 14): the turn-taking program
# (`tests/programs/fidelity_turns.rs`, 8 workers x 3 turns x 30 lines, then main) RUNS times on
# NODES nodes with two threads of node 0 spinning meanwhile, its stdout through a pipe; counts the
# runs whose output is exactly std's.
#
#   scripts/soak-ordered-output.sh [RUNS] [NODES] [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200}
nodes=${2:-4}
bin=${3:-target/release/fidelity_turns}
[ "$bin" != target/release/fidelity_turns ] || cargo build --release --bin fidelity_turns >/dev/null
ref=$(mktemp); out=$(mktemp)
RTHREADS_NODES=1 target/release/fidelity_turns 8 3 30 std >"$ref" 2>/dev/null
same=0; failed=0
start=$(date +%s)
for _ in $(seq "$runs"); do
    if ! RTHREADS_NODES=$nodes "$bin" 8 3 30 busy 2>/dev/null | cat >"$out"; then failed=$((failed + 1)); fi
    if cmp -s "$out" "$ref"; then same=$((same + 1)); fi
done
echo "$bin, $nodes nodes: output identical to std in $same/$runs runs ($failed failed) in $(( $(date +%s) - start )) s"
rm -f "$ref" "$out"
