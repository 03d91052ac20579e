#!/usr/bin/env bash
# Issue 17's table: the data-moving kernels on one std thread, two std threads, and 2 nodes of one
# thread each under sc and lrc, with the runtime's defaults and with read-ahead off
# (RTHREADS_READ_AHEAD=0: as before it existed), runs interleaved (every configuration once per
# round, ROUNDS rounds), median wall seconds per configuration. Nothing is pinned.
#
#   benches/speed.sh                  # builds the release tools first
#   ROUNDS=5 KERNELS=jacobi_plain,jacobi_main,matmul_512 NODES=2 benches/speed.sh
#   WORKER=/elsewhere/target/release/bench_worker benches/speed.sh   # another build, same table
#
# Prints a markdown table (and the raw times to stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/result.sh
ROUNDS=${ROUNDS:-5}
KERNELS=${KERNELS:-jacobi_plain,jacobi_main,matmul_512}
NODES=${NODES:-2}
SIZE=${SIZE:-medium}
if [ -z "${WORKER:-}" ]; then
    cargo build --release --locked --bin bench_worker >&2
    WORKER=target/release/bench_worker
fi
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
IFS=, read -r -a kernels <<<"$KERNELS"
for round in $(seq "$ROUNDS"); do
    for k in "${kernels[@]}"; do
        for cfg in std1 std2 sc lrc sc-no-ahead lrc-no-ahead; do
            case $cfg in
                std1) out=$(RTHREADS_NODES=1 "$WORKER" "$k" std "$SIZE" 1) ;;
                std2) out=$(RTHREADS_NODES=1 "$WORKER" "$k" std "$SIZE" 2) ;;
                sc | lrc) out=$(RTHREADS_NODES=$NODES RTHREADS_PROTOCOL=$cfg "$WORKER" "$k" cluster "$SIZE" 1) ;;
                *-no-ahead) out=$(RTHREADS_NODES=$NODES RTHREADS_PROTOCOL=${cfg%-no-ahead} RTHREADS_READ_AHEAD=0 \
                    "$WORKER" "$k" cluster "$SIZE" 1) ;;
            esac
            echo "$k $cfg $(wall_and_checksum "$out")" | tee -a "$raw" >&2
        done
    done
    echo "round $round done" >&2
done
python3 - "$raw" "$NODES" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
nodes = sys.argv[2]
t = {}
sums = {}
for k, cfg, wall, s in rows:
    t.setdefault(k, {}).setdefault(cfg, []).append(float(wall))
    sums.setdefault(k, set()).add(s)
print(f"| kernel | std, 1 thread | std, 2 threads | {nodes} nodes sc | {nodes} nodes lrc | sc, no read-ahead | lrc, no read-ahead | speed-up sc / lrc over 1 thread |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for k, c in t.items():
    m = {cfg: statistics.median(v) for cfg, v in c.items()}
    ok = "" if len(sums[k]) == 1 else " (CHECKSUMS DIFFER)"
    print(f"| {k}{ok} | {m['std1']:.3f} | {m['std2']:.3f} | {m['sc']:.3f} | {m['lrc']:.3f} | "
          f"{m['sc-no-ahead']:.3f} | {m['lrc-no-ahead']:.3f} | "
          f"{m['std1'] / m['sc']:.2f}× / {m['std1'] / m['lrc']:.2f}× |")
PY
