#!/usr/bin/env python3
"""Shrinks a fuzz corpus to at most CAP files (99 by default) for committing.

`cargo fuzz cmin` keeps every input that adds a coverage feature, which is hundreds of
files per target here. This keeps the hand-made seeds (readable names), then picks
greedily the input that covers the most edges not yet covered, until CAP files or no
input adds anything; it prints how much of the edge coverage the result keeps.

    T=admission_review
    mkdir -p /tmp/merge-$T && nice -n 19 fuzz/target/x86_64-unknown-linux-gnu/release/$T \\
        -merge=1 -set_cover_merge=1 -use_counters=0 -rss_limit_mb=2048 \\
        -merge_control_file=/tmp/$T.ctl /tmp/merge-$T fuzz/corpus/$T
    python3 fuzz/cap-corpus.py /tmp/$T.ctl /tmp/capped-$T
    rm -r fuzz/corpus/$T && mv /tmp/capped-$T fuzz/corpus/$T

(`-set_cover_merge=1` makes libFuzzer record every feature of every input in the
control file, not only the ones new in size order; `-use_counters=0` counts edges, not
hit-count buckets.)
"""

import os
import re
import shutil
import sys


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    control, dest = sys.argv[1], sys.argv[2]
    cap = int(sys.argv[3]) if len(sys.argv) > 3 else 99
    max_bytes = int(sys.argv[4]) if len(sys.argv) > 4 else 1_000_000
    lines = open(control).read().split("\n")
    count = int(lines[0])
    files = lines[2 : 2 + count]
    features = {}
    for line in lines[2 + count :]:
        parts = line.split()
        if parts and parts[0] == "FT":
            features[int(parts[1])] = set(map(int, parts[2:]))
    every = set().union(*features.values())
    size = {i: os.path.getsize(files[i]) for i in features}

    chosen, covered, total = [], set(), 0
    for i in features:
        if not re.fullmatch(r"[0-9a-f]{40}", os.path.basename(files[i])):
            chosen.append(i)
            covered |= features[i]
            total += size[i]
    while len(chosen) < cap:
        best, gain = None, 0
        for i, f in features.items():
            if i in chosen:
                continue
            g = len(f - covered)
            if g > gain or (g == gain and g > 0 and size[i] < size[best]):
                best, gain = i, g
        if best is None:
            break
        if total + size[best] > max_bytes:
            features.pop(best)
            continue
        chosen.append(best)
        covered |= features[best]
        total += size[best]
    print(
        f"{count} inputs, {len(every)} features; kept {len(chosen)} inputs, "
        f"{total} bytes, {len(covered)} features ({100 * len(covered) / len(every):.1f}%)"
    )
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    for i in chosen:
        shutil.copy(files[i], os.path.join(dest, os.path.basename(files[i])))


if __name__ == "__main__":
    main()
