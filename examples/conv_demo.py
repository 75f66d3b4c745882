#!/usr/bin/env python
"""The classic worked convolution example, through fastconv and checked against torch.

Input: a 5x5 image holding 1..25 row by row.  Kernel: [[1, 0, 1], [0, 1, 0], [1, 0, 1]].
Stride 1, no padding, so the output is 3x3; each value is the sum of the five input pixels under
the kernel's ones.  The top-left one is 1 + 3 + 7 + 11 + 13 = 35, and the whole answer is

    35 40 45
    60 65 70
    85 90 95

Prints the input, kernel and output, runs the same input through ``fastconv.Conv2d`` (the layer)
and ``fastconv.functional.conv2d``, and exits with status 1 if anything differs from torch or
from the expected answer.  ``--device cuda`` runs it on a GPU.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

import fastconv

EXPECTED = [[35.0, 40.0, 45.0], [60.0, 65.0, 70.0], [85.0, 90.0, 95.0]]


def show(name: str, t: torch.Tensor) -> None:
    print(f"{name}:")
    for row in t.tolist():
        print("  " + " ".join(f"{v:4g}" for v in row))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="5x5 input 1..25, 3x3 cross kernel, stride 1, no padding")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    x = torch.arange(1, 26, dtype=dtype, device=device).reshape(1, 1, 5, 5)
    w = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=dtype, device=device).reshape(1, 1, 3, 3)

    layer = fastconv.Conv2d(1, 1, kernel_size=3, stride=1, padding=0, bias=False).to(device=device, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
        ours_layer = layer(x)
    ours_fn = fastconv.functional.conv2d(x, w, None, stride=1, padding=0)
    ref = F.conv2d(x, w, None, stride=1, padding=0)
    expected = torch.tensor(EXPECTED, dtype=dtype, device=device).reshape(1, 1, 3, 3)

    show("input (1..25)", x[0, 0])
    show("kernel", w[0, 0])
    show("fastconv.Conv2d output", ours_layer[0, 0])
    show("torch.nn.functional.conv2d output", ref[0, 0])
    checks = {
        "fastconv.Conv2d == torch": torch.equal(ours_layer, ref),
        "fastconv.functional.conv2d == torch": torch.equal(ours_fn, ref),
        "fastconv == expected 35 40 45 / 60 65 70 / 85 90 95": torch.equal(ours_layer, expected),
    }
    for name, ok in checks.items():
        print(f"{'OK  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
