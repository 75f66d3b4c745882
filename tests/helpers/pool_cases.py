"""The max_pool2d case grid (hand-picked and seeded random configs) and its inputs, shared by the CPU tests
(functional/test_max_pool2d.py) and the GPU tests (cuda/test_cuda.py)."""
import random

import torch


def pair(v):
    if isinstance(v, (tuple, list)):
        return (v[0], v[-1]) if len(v) else None
    return (v, v)


def output_size(size, k, s, p, d, ceil_mode):
    """torch's pooling_output_shape."""
    span = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = span // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _valid(H, W, kernel, stride, padding, dilation, ceil_mode):
    k, p, d = pair(kernel), pair(padding), pair(dilation)
    s = pair(stride) if stride is not None and pair(stride) is not None else k
    for i, size in enumerate((H, W)):
        # torch checks the padding against half the kernel and half the dilated kernel
        if p[i] > k[i] // 2 or p[i] > ((k[i] - 1) * d[i] + 1) // 2:
            return False
        if output_size(size, k[i], s[i], p[i], d[i], ceil_mode) < 1:
            return False
    return True


def _random_configs(count, seed):
    rng = random.Random(seed)
    configs = []
    while len(configs) < count:
        kernel = rng.choice([1, 2, 3, 4, (2, 3), (3, 1), [3, 2]])
        stride = rng.choice([None, [], 1, 2, 3, (1, 2), (2, 3)])
        padding = rng.choice([0, 0, 1, 2, (1, 0), (0, 1)])
        dilation = rng.choice([1, 1, 2, (1, 2), (3, 1)])
        ceil_mode = rng.random() < 0.5
        H, W = rng.randint(1, 11), rng.randint(1, 11)
        if _valid(H, W, kernel, stride, padding, dilation, ceil_mode):
            configs.append((H, W, kernel, stride, padding, dilation, ceil_mode))
    return configs


# (H, W, kernel_size, stride, padding, dilation, ceil_mode)
HAND_CONFIGS = [
    (8, 8, 2, None, 0, 1, False),            # the classic 2x2/2
    (7, 9, 3, 2, 1, 1, False),               # ResNet stem pool, odd size
    (7, 9, 3, 2, 1, 1, True),                # ... with ceil_mode adding a window
    (5, 5, 2, 2, 1, 1, True),                # ceil_mode drops the last window (it would start in padding)
    (6, 7, 2, 2, 1, 1, True),                # ceil_mode, drop in H only
    (5, 7, 2, None, 0, 1, True),             # ceil_mode adds a partial window
    (9, 8, (3, 2), (2, 1), (1, 1), 1, False),  # tuple kernel / stride / padding
    (10, 11, 3, 1, 1, 2, False),             # dilation
    (11, 10, (2, 3), (3, 2), (1, 1), (3, 2), True),  # tuple dilation + ceil
    (6, 6, 1, 1, 0, 1, False),               # identity pool
    (4, 6, 4, 1, 2, 1, False),               # padding = half kernel
    (3, 3, 3, [], 0, 1, False),              # stride=[] means kernel_size
    (1, 9, (1, 3), (1, 2), 0, 1, True),      # single row
]
CONFIGS = HAND_CONFIGS + _random_configs(30, seed=99)
CONFIG_IDS = [f"{i:02d}-{H}x{W}-k{k}-s{s}-p{p}-d{d}-{'ceil' if c else 'floor'}".replace(" ", "")
              for i, (H, W, k, s, p, d, c) in enumerate(CONFIGS)]


def pool_input(N, C, H, W, dtype, values, layout, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (N, C, H, W) if N is not None else (C, H, W)
    numel = torch.Size(shape).numel()
    if values == "distinct":  # unique values: every window has one argmax
        x = (torch.randperm(numel, generator=gen).to(dtype) / numel - 0.5).reshape(shape)
    elif values == "ties":  # integer-valued, many equal maxima: the first one must win, as in torch
        x = torch.randint(0, 3, shape, generator=gen).to(dtype)
    else:  # "special": ties plus NaN, +inf, and whole windows of -inf
        x = torch.randint(-2, 2, shape, generator=gen).to(dtype)
        flat = x.view(-1)
        if numel:
            pick = torch.randperm(numel, generator=gen)
            flat[pick[: max(1, numel // 10)]] = float("-inf")
            flat[pick[numel // 10: numel // 10 + max(1, numel // 30)]] = float("nan")
            flat[pick[-1]] = float("inf")
            if x.dim() == 4 and H >= 3 and W >= 3:
                x[..., :3, :3] = float("-inf")
    if layout == "channels_last" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    return x
