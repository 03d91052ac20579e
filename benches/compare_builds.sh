#!/usr/bin/env bash
# Two builds side by side: every kernel under sc and lrc, runs of build A and build B interleaved
# (kernel by kernel, protocol by protocol, ROUNDS rounds), median wall seconds and the ratio B / A.
# What `rthreads-protocols` measures for one build, for two, so a refactoring shows whether it costs.
#
#   OLD=/path/to/old/target/release/bench_worker benches/compare_builds.sh
#   ROUNDS=3 NODES=4 SIZE=medium KERNELS=jacobi,matmul OLD=... NEW=... benches/compare_builds.sh
#
# Prints a markdown table (raw times to stderr). Checksums of both builds must agree.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/result.sh
ROUNDS=${ROUNDS:-3}
NODES=${NODES:-4}
SIZE=${SIZE:-medium}
KERNELS=${KERNELS:-matmul,jacobi,nbody,mandelbrot,kmeans,montecarlo_pi,mergesort,false_sharing,lock_pingpong,producer_consumer,broadcast,stream_read}
: "${OLD:?set OLD to the bench_worker of the other build}"
NEW=${NEW:-target/release/bench_worker}
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
IFS=, read -r -a kernels <<<"$KERNELS"
for round in $(seq "$ROUNDS"); do
    for k in "${kernels[@]}"; do
        for proto in sc lrc; do
            for build in old new; do
                worker=$OLD
                [ "$build" = new ] && worker=$NEW
                out=$(RTHREADS_NODES=$NODES RTHREADS_PROTOCOL=$proto "$worker" "$k" cluster "$SIZE" 1) || {
                    echo "$k $proto $build failed" >&2
                    continue
                }
                echo "$k $proto $build $(wall_and_checksum "$out")" | tee -a "$raw" >&2
            done
        done
    done
    echo "round $round done" >&2
done
python3 - "$raw" <<'PY'
import statistics, sys
t, sums = {}, {}
for k, proto, build, wall, s in (l.split() for l in open(sys.argv[1]) if l.strip()):
    t.setdefault((k, proto), {}).setdefault(build, []).append(float(wall))
    sums.setdefault(k, set()).add(s)
print("| kernel | protocol | old s | new s | new / old |")
print("|---|---|---:|---:|---:|")
ratios = []
for (k, proto), c in t.items():
    if "old" not in c or "new" not in c:
        continue
    o, n = statistics.median(c["old"]), statistics.median(c["new"])
    ratios.append(n / o)
    bad = "" if len(sums[k]) == 1 else " (CHECKSUMS DIFFER)"
    print(f"| {k}{bad} | {proto} | {o:.3f} | {n:.3f} | {n / o:.2f} |")
if ratios:
    print(f"\nGeometric mean of new / old: {statistics.geometric_mean(ratios):.3f} over {len(ratios)} rows")
PY
