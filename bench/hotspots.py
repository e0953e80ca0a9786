"""Summarise a py-spy profile: the functions with the most samples, inclusive and self.

    .venv/bin/py-spy record -r 250 -f raw -o /tmp/w4.txt -- \\
        .venv/bin/python bench/dfhost_side.py --workload W4 --store sqlite:////tmp/w4.sqlite3 \\
        --params '{"count": 1000}'
    .venv/bin/python bench/hotspots.py /tmp/w4.txt [--top 25]

`-f raw` writes one collapsed stack per line ("frame;frame;... count"); py-spy samples every
thread that is not idle, so the percentages are of CPU samples across the engine's threads.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [frame_name(f) for f in stack.split(";") if f.strip()]
        # Thread names ("process 12 ..."/"thread ...") head some stacks: not functions.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        for name in set(frames):
            inclusive[name] += count
        if frames:
            own[frames[-1]] += count
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"\n{title}:")
        for name, count in counter.most_common(args.top):
            print(f"  {100 * count / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
