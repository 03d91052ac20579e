#!/usr/bin/env bash
# Issue 17's kernels, two builds side by side: one std thread, two std threads, and 2 nodes of one
# thread each under sc and lrc for the old build and the new one, every configuration once per
# round (ROUNDS rounds, interleaved), median wall seconds. Nothing is pinned.
#
#   OLD=/path/to/old/target/release/bench_worker benches/before_after.sh
#   ROUNDS=5 KERNELS=jacobi_plain,jacobi_main,matmul_512 OLD=... NEW=... benches/before_after.sh
#   OLD_ENV=RTHREADS_PREPARE=0 benches/before_after.sh   # one build, "before" with a setting
#
# Prints a markdown table (raw times to stderr); checksums must agree across all configurations.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/result.sh
ROUNDS=${ROUNDS:-5}
KERNELS=${KERNELS:-jacobi_plain,jacobi_main,matmul_512}
SIZE=${SIZE:-medium}
NEW=${NEW:-target/release/bench_worker}
OLD_ENV=${OLD_ENV:-}
if [ -n "$OLD_ENV" ]; then OLD=${OLD:-$NEW}; fi
: "${OLD:?set OLD to the bench_worker of the other build, or OLD_ENV to settings for the before runs}"
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
IFS=, read -r -a kernels <<<"$KERNELS"
for round in $(seq "$ROUNDS"); do
    for k in "${kernels[@]}"; do
        for cfg in std1 std2 old-sc new-sc old-lrc new-lrc; do
            case $cfg in
                std1) out=$(RTHREADS_NODES=1 "$NEW" "$k" std "$SIZE" 1) ;;
                std2) out=$(RTHREADS_NODES=1 "$NEW" "$k" std "$SIZE" 2) ;;
                old-*) out=$(env $OLD_ENV RTHREADS_NODES=2 RTHREADS_PROTOCOL=${cfg#old-} "$OLD" "$k" cluster "$SIZE" 1) ;;
                new-*) out=$(RTHREADS_NODES=2 RTHREADS_PROTOCOL=${cfg#new-} "$NEW" "$k" cluster "$SIZE" 1) ;;
            esac
            echo "$k $cfg $(wall_and_checksum "$out")" | tee -a "$raw" >&2
        done
    done
    echo "round $round done" >&2
done
python3 - "$raw" <<'PY'
import statistics, sys
t, sums = {}, {}
for k, cfg, wall, s in (l.split() for l in open(sys.argv[1]) if l.strip()):
    t.setdefault(k, {}).setdefault(cfg, []).append(float(wall))
    sums.setdefault(k, set()).add(s)
print("| kernel | std, 1 thread | std, 2 threads | sc before | sc after | lrc before | lrc after "
      "| after: speed-up over 1 thread sc / lrc | lrc / sc after |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for k, c in t.items():
    m = {cfg: statistics.median(v) for cfg, v in c.items()}
    ok = "" if len(sums[k]) == 1 else " (CHECKSUMS DIFFER)"
    print(f"| {k}{ok} | {m['std1']:.3f} | {m['std2']:.3f} | {m['old-sc']:.3f} | {m['new-sc']:.3f} | "
          f"{m['old-lrc']:.3f} | {m['new-lrc']:.3f} | {m['std1'] / m['new-sc']:.2f}× / "
          f"{m['std1'] / m['new-lrc']:.2f}× | {m['new-lrc'] / m['new-sc']:.2f} |")
PY
