#!/usr/bin/env python
"""Plot the per-epoch test accuracy of several runs on one chart (e.g. fine-tuned against from scratch).

    python examples/plot_runs.py runs/fine5 runs/scratch5 --labels "fine-tuned" "from scratch" --output cmp.png

Each run folder needs the metrics.csv an example wrote (column ``val_acc``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from fastconv.train.plots import plot_comparison


def read_history(folder: Path):
    with open(folder / "metrics.csv", newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--labels", nargs="+", default=None)
    ap.add_argument("--output", required=True)
    ap.add_argument("--title", default="test accuracy")
    args = ap.parse_args(argv)
    labels = args.labels or [p.name for p in args.runs]
    if len(labels) != len(args.runs):
        print(f"error: {len(labels)} labels for {len(args.runs)} runs", file=sys.stderr)
        return 2
    try:
        histories = {label: read_history(run) for label, run in zip(labels, args.runs)}
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not plot_comparison(histories, args.output, title=args.title):
        return 1
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
