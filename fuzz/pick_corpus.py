#!/usr/bin/env python3
"""Picks a small corpus to check in: a greedy set cover over the features each input reaches.

libFuzzer's own merge keeps every input that adds a feature, in size order, which for
sc_protocol is over a hundred files. This picks, at most LIMIT times, the input that adds the
most features not yet covered. Make the control file with an edges-only merge, e.g.

    RUSTC_BOOTSTRAP=1 cargo fuzz run sc_protocol /tmp/empty fuzz/corpus-work/sc_protocol \
        -- -merge=1 -use_counters=0 -merge_control_file=/tmp/sc.ctl
    python3 fuzz/pick_corpus.py /tmp/sc.ctl fuzz/corpus/sc_protocol 40

Files are named by the SHA-1 of their contents, as libFuzzer names them.
"""
import hashlib
import os
import shutil
import sys

ctl, dest = sys.argv[1], sys.argv[2]
limit = int(sys.argv[3]) if len(sys.argv) > 3 else 10**9
lines = open(ctl).read().split("\n")
n = int(lines[0])
files = lines[2 : 2 + n]
features = {}
for line in lines[2 + n :]:
    parts = line.split()
    if parts and parts[0] == "FT":
        features[int(parts[1])] = set(parts[2:])
universe = set().union(*features.values())
chosen, covered = [], set()
while covered != universe and len(chosen) < limit:
    best = max(features, key=lambda i: (len(features[i] - covered), -os.path.getsize(files[i])))
    gain = features[best] - covered
    if not gain:
        break
    chosen.append(best)
    covered |= gain
os.makedirs(dest, exist_ok=True)
for i in chosen:
    data = open(files[i], "rb").read()
    shutil.copy(files[i], os.path.join(dest, hashlib.sha1(data).hexdigest()))
print(f"{len(chosen)} files, {len(covered)} of {len(universe)} features "
      f"({100 * len(covered) / len(universe):.1f} %)")
