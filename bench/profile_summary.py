"""Summarise a py-spy raw (collapsed) profile: where the samples went, by own frame and by
the metrogate or library function they were spent under.

    python bench/profile_summary.py PROFILE.txt [--top 30]
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile", type=Path)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        total += count
        frames = [re.sub(r" \((.*?):\d+\)$", r" (\1)", f) for f in stack.split(";")]
        own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    print(f"{total} samples")
    print("\nown time:")
    for f, c in own.most_common(args.top):
        print(f"{c / total:6.1%}  {f}")
    print("\ninclusive (our code and the libraries' entry points):")
    for f, c in inclusive.most_common(args.top * 3):
        if any(
            k in f
            for k in (
                "gateway/",
                "drivers/",
                "pymodbus/",
                "aiomqtt/",
                "paho/",
                "sqlite",
                "json",
                "cryptography",
            )
        ):
            print(f"{c / total:6.1%}  {f}")


if __name__ == "__main__":
    main()
