#!/usr/bin/env python
"""Bitwise A/B of the CPU kernels across a refactor: outputs of a fixed set of problems, saved before, compared after.

    python benchmarks/bitwise_ab.py --save before.pt     # on the old build
    python benchmarks/bitwise_ab.py --check before.pt    # on the new one: exit 1 at the first bit that differs

The problems reach every CPU algorithm (depthwise, Winograd with tile and image lanes (F(2x2) and F(4x4)), the direct few-outputs
forward and few-taps weight gradient, the GEMM forward, grad-input as a forward or by col2im, the GEMM weight
gradient with and without batch chunks) in float32 and float64, in both memory formats, and max_pool2d, each under
every ISA this CPU has (FASTCONV_ISA). Inputs are seeded; the results of these kernels do not depend on the
thread count, so the comparison is exact.
"""
import argparse
import os
import sys
import zlib

import torch

import fastconv

# (name, N, C, K, H, W, R, S, stride (int or [h, w]), padding, dilation, groups)
CONV_PROBLEMS = [
    ("depthwise", 4, 16, 16, 12, 12, 3, 3, 1, 1, 1, 16),
    ("depthwise_s2_mult2", 3, 8, 16, 11, 11, 3, 3, 2, 1, 1, 8),
    ("winograd_tile_lanes", 2, 32, 48, 9, 9, 3, 3, 1, 1, 1, 1),
    ("winograd_image_lanes", 8, 32, 32, 10, 10, 3, 3, 1, 1, 1, 1),
    ("winograd_wide_planes", 8, 256, 256, 4, 4, 3, 3, 1, 1, 1, 1),
    ("winograd_f4_image_lanes", 16, 32, 40, 12, 13, 3, 3, 1, 1, 1, 1),
    ("winograd_f4_wide_planes", 16, 256, 256, 8, 8, 3, 3, 1, 1, 1, 1),
    ("direct_few_outputs", 4, 16, 8, 12, 12, 3, 3, 1, 1, 1, 1),
    ("direct_few_taps", 4, 3, 16, 16, 16, 3, 3, 1, 1, 1, 1),
    ("direct_few_taps_rows", 4, 3, 16, 17, 17, 3, 3, [2, 1], 1, 1, 1),
    ("gemm_image_input_s2", 4, 3, 16, 17, 17, 3, 3, 2, 1, 1, 1),
    ("gemm_5x5", 4, 16, 40, 12, 12, 5, 5, 1, 2, 1, 1),
    ("gemm_1x1", 4, 24, 40, 9, 9, 1, 1, 1, 0, 1, 1),
    ("gemm_1x1_s2", 4, 24, 40, 9, 9, 1, 1, 2, 0, 1, 1),
    ("gemm_3x3_s2_planes", 4, 24, 40, 17, 17, 3, 3, 2, 1, 1, 1),
    ("gemm_3x3_s2_small_map", 16, 64, 64, 8, 8, 3, 3, 2, 1, 1, 1),
    ("gemm_groups2", 4, 16, 24, 10, 10, 3, 3, 1, 1, 1, 2),
    ("gemm_groups_to_depthwise_grad", 2, 8, 4, 9, 9, 3, 3, 1, 1, 1, 4),
    ("gemm_dilated", 2, 16, 40, 13, 13, 3, 3, 1, 2, 2, 1),
    ("gemm_wgrad_chunks", 64, 40, 48, 6, 6, 3, 3, 2, 1, 1, 1),
]
# (name, N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
POOL_PROBLEMS = [
    ("pool_2x2", 4, 16, 12, 12, 2, 2, 0, 1, False),
    ("pool_3x3_s2_pad_ceil", 3, 20, 15, 15, 3, 2, 1, 1, True),
    ("pool_dilated", 2, 8, 13, 11, 3, 1, 1, 2, False),
]


def available_isas():
    description = fastconv.cpu_info()[1]
    return [isa for isa in ("scalar", "avx2", "avx512") if isa == "scalar" or isa in description]


def run_all():
    ops = torch.ops.fastconv
    results = {}
    for isa in available_isas():
        os.environ["FASTCONV_ISA"] = isa
        for dtype in (torch.float32, torch.float64):
            for channels_last in (False, True):
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                tag = f"{isa}/{str(dtype)[6:]}/{'nhwc' if channels_last else 'nchw'}"
                for name, N, C, K, H, W, R, S, stride, pad, dil, groups in CONV_PROBLEMS:
                    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
                    x = torch.randn(N, C, H, W, generator=g, dtype=dtype).contiguous(memory_format=fmt)
                    w = torch.randn(K, C // groups, R, S, generator=g, dtype=dtype).contiguous(memory_format=fmt)
                    b = torch.randn(K, generator=g, dtype=dtype)
                    strides = stride if isinstance(stride, list) else [stride, stride]
                    args = (strides, [pad] * 4, [dil, dil], groups)
                    y = ops.conv2d(x, w, b, *args)
                    dy = torch.randn(y.shape, generator=g, dtype=dtype).contiguous(memory_format=fmt)
                    results[f"{tag}/{name}/forward"] = y
                    results[f"{tag}/{name}/grad_input"] = ops.conv2d_grad_input(dy, x, w, *args)
                    results[f"{tag}/{name}/grad_weight"] = ops.conv2d_grad_weight(dy, x, w, *args)
                    results[f"{tag}/{name}/grad_bias"] = ops.conv2d_grad_bias(dy)
                for name, N, C, H, W, k, stride, pad, dil, ceil in POOL_PROBLEMS:
                    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
                    x = torch.randn(N, C, H, W, generator=g, dtype=dtype).contiguous(memory_format=fmt)
                    y, idx = ops.max_pool2d(x, [k, k], [stride, stride], [pad, pad], [dil, dil], ceil)
                    dy = torch.randn(y.shape, generator=g, dtype=dtype).contiguous(memory_format=fmt)
                    results[f"{tag}/{name}/forward"] = y
                    results[f"{tag}/{name}/indices"] = idx
                    results[f"{tag}/{name}/grad_input"] = ops.max_pool2d_grad(dy, x, idx)
    os.environ.pop("FASTCONV_ISA", None)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--save", metavar="PATH")
    mode.add_argument("--check", metavar="PATH")
    args = ap.parse_args(argv)
    print(f"CPU: {fastconv.cpu_info()[1]}; ISAs: {', '.join(available_isas())}", file=sys.stderr)
    results = run_all()
    if args.save:
        torch.save(results, args.save)
        print(f"saved {len(results)} tensors to {args.save}")
        return 0
    before = torch.load(args.check)
    differ = [k for k in before if k in results and not torch.equal(before[k], results[k])]
    missing = [k for k in before if k not in results]
    for k in differ:
        diff = (before[k].double() - results[k].double()).abs().max().item()
        print(f"DIFFERS {k}: max |a - b| = {diff:.3g}")
    for k in missing:
        print(f"MISSING {k} (an ISA this CPU lacks?)")
    print(f"{len(before) - len(differ) - len(missing)} of {len(before)} tensors bitwise equal")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
