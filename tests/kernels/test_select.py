"""csrc/cpu/select.cpp: which CPU algorithm each conv pass runs, for problems users train (fastconv._ops.
cpu_conv2d_algorithms reads the same choice the ops make)."""
import pytest
import torch

import fastconv
from fastconv._ops import cpu_conv2d_algorithms

CL = torch.channels_last
W1 = "winograd_image_lanes"
W4 = "winograd_f4_image_lanes"
WT = "winograd_tile_lanes"

# (name, N, C, K, H, W, R, S, stride, padding, dilation, groups, memory format, dtype,
#  expected forward, grad-input, grad-weight)
PROBLEMS = [
    # ResNet-18 on CIFAR, batch 64
    ("resnet_stem", 64, 3, 64, 32, 32, 3, 3, 1, 1, 1, 1, None, torch.float32,
     "direct_few_outputs", "flipped_forward:direct_few_outputs", "direct_few_taps"),
    ("resnet_stem_cl", 64, 3, 64, 32, 32, 3, 3, 1, 1, 1, 1, CL, torch.float32,
     "direct_few_outputs", "flipped_forward:direct_few_outputs", "direct_few_taps"),
    ("resnet_64", 64, 64, 64, 32, 32, 3, 3, 1, 1, 1, 1, None, torch.float32, W4, f"flipped_forward:{W4}", W4),
    ("resnet_64_cl", 64, 64, 64, 32, 32, 3, 3, 1, 1, 1, 1, CL, torch.float32, W4, f"flipped_forward:{W4}", W4),
    ("resnet_64_batch4", 4, 64, 64, 32, 32, 3, 3, 1, 1, 1, 1, None, torch.float32, WT, f"flipped_forward:{WT}", WT),
    ("resnet_512_4x4", 64, 512, 512, 4, 4, 3, 3, 1, 1, 1, 1, None, torch.float32, W1, f"flipped_forward:{W1}", W1),
    ("resnet_down_3x3", 64, 64, 128, 32, 32, 3, 3, 2, 1, 1, 1, None, torch.float32, "gemm", "gemm_col2im", "gemm"),
    ("resnet_down_1x1", 64, 64, 128, 32, 32, 1, 1, 2, 0, 1, 1, CL, torch.float32, "gemm", "gemm_col2im", "gemm"),
    # LeNet-5
    ("lenet_conv1", 64, 3, 6, 32, 32, 5, 5, 1, 0, 1, 1, None, torch.float32,
     "direct_few_outputs", "flipped_forward:direct_few_outputs", "direct_few_taps"),
    ("lenet_conv2", 64, 6, 16, 14, 14, 5, 5, 1, 0, 1, 1, None, torch.float32,
     "direct_few_outputs", "flipped_forward:direct_few_outputs", "direct_few_taps"),
    # the fast recipe's 2x2 whitening-sized stem and a wide 3x3 block
    ("fast_stem_2x2", 256, 3, 24, 32, 32, 2, 2, 1, 0, 1, 1, CL, torch.float32,
     "direct_few_outputs", "flipped_forward:direct_few_outputs", "direct_few_taps"),
    ("fast_64_256", 256, 64, 256, 15, 15, 3, 3, 1, 1, 1, 1, None, torch.float32, W4, f"flipped_forward:{W4}", W4),
    # a 3x3 map: one GEMM per output pixel over the 49 of 81 taps inside the input (under 8 images: Winograd)
    ("fast_256_3x3", 256, 256, 256, 3, 3, 3, 3, 1, 1, 1, 1, None, torch.float32,
     "gemm_few_pixels", "flipped_forward:gemm_few_pixels", "gemm_few_pixels"),
    ("fast_256_3x3_cl", 256, 256, 256, 3, 3, 3, 3, 1, 1, 1, 1, CL, torch.float32,
     "gemm_few_pixels", "flipped_forward:gemm_few_pixels", "gemm_few_pixels"),
    ("3x3_map_batch4", 4, 256, 256, 3, 3, 3, 3, 1, 1, 1, 1, None, torch.float32, WT, f"flipped_forward:{WT}", WT),
    ("3x3_map_no_padding", 64, 64, 64, 5, 5, 3, 3, 1, 0, 1, 1, None, torch.float32, W1, f"flipped_forward:{W1}", W1),
    ("3x3_map_of_a_large_input", 8, 16, 32, 41, 41, 3, 3, 20, 1, 1, 1, None, torch.float32,
     "gemm", "gemm_col2im", "gemm"),
    # F(4x4, 3x3) tiles only where they save a quarter of the multiplies and a map has 4 of them
    ("f4_saves_too_little_5x5", 64, 64, 64, 5, 5, 3, 3, 1, 1, 1, 1, None, torch.float32,
     W1, f"flipped_forward:{W1}", W1),
    ("f4_7x7", 64, 64, 64, 7, 7, 3, 3, 1, 1, 1, 1, None, torch.float32, W4, f"flipped_forward:{W4}", W4),
    # image lanes from 16 channels (over 16 out), every pass
    ("fast_24_64", 256, 24, 64, 31, 31, 3, 3, 1, 1, 1, 1, None, torch.float32, W4, f"flipped_forward:{W4}", W4),
    ("fast_24_64_cl", 256, 24, 64, 31, 31, 3, 3, 1, 1, 1, 1, CL, torch.float32, W4, f"flipped_forward:{W4}", W4),
    ("resnet_512_4x4_cl", 64, 512, 512, 4, 4, 3, 3, 1, 1, 1, 1, CL, torch.float32, W1, f"flipped_forward:{W1}", W1),
    ("16_to_64", 64, 16, 64, 32, 32, 3, 3, 1, 1, 1, 1, None, torch.float32,
     W4, "flipped_forward:direct_few_outputs", W4),
    # other families
    ("depthwise", 8, 32, 32, 16, 16, 3, 3, 1, 1, 1, 32, None, torch.float32, "depthwise", "depthwise", "depthwise"),
    ("grouped_to_depthwise_grad", 2, 8, 4, 9, 9, 3, 3, 1, 1, 1, 4, None, torch.float32,
     "gemm", "flipped_forward:depthwise", "gemm"),
    ("grouped", 8, 64, 64, 16, 16, 3, 3, 1, 1, 1, 2, None, torch.float32, "gemm", "flipped_forward:gemm", "gemm"),
    ("dilated", 8, 64, 64, 16, 16, 3, 3, 1, 2, 2, 1, None, torch.float32, "gemm", "flipped_forward:gemm", "gemm"),
    ("5x5", 8, 64, 64, 16, 16, 5, 5, 1, 2, 1, 1, None, torch.float32, "gemm", "flipped_forward:gemm", "gemm"),
    ("float64", 64, 64, 64, 32, 32, 3, 3, 1, 1, 1, 1, None, torch.float64, "gemm", "flipped_forward:gemm", "gemm"),
    ("float64_few_outputs", 4, 3, 6, 12, 12, 5, 5, 1, 0, 1, 1, None, torch.float64,
     "gemm", "flipped_forward:gemm", "gemm"),
    ("bfloat16_computes_in_float", 64, 64, 64, 32, 32, 3, 3, 1, 1, 1, 1, None, torch.bfloat16,
     W4, f"flipped_forward:{W4}", W4),
    ("empty_batch", 0, 64, 64, 32, 32, 3, 3, 1, 1, 1, 1, None, torch.float32, "none", "none", "none"),
]
if "avx512_bf16" in fastconv.cpu_info()[1]:  # bfloat16 products: in NHWC they beat float Winograd but for 4x4 tiles
    PROBLEMS.append(("bfloat16_nhwc_products", 64, 256, 256, 5, 5, 3, 3, 1, 1, 1, 1, CL, torch.bfloat16,
                     "gemm_bf16_pairs", "flipped_forward:gemm_bf16_pairs", "gemm"))
    for fmt in (None, CL):  # maps of 16 outputs skip their padded taps (float32 keeps Winograd there)
        PROBLEMS.append((f"bfloat16_4x4_few_pixels_{'nhwc' if fmt else 'nchw'}", 64, 512, 512, 4, 4, 3, 3, 1, 1, 1, 1,
                         fmt, torch.bfloat16, "gemm_few_pixels", "flipped_forward:gemm_few_pixels", "gemm_few_pixels"))
    PROBLEMS.append(("bfloat16_nhwc_f4_tiles", 256, 64, 64, 15, 15, 3, 3, 1, 1, 1, 1, CL, torch.bfloat16,
                     W4, f"flipped_forward:{W4}", W4))
    PROBLEMS.append(("bfloat16_nhwc_odd_channels", 8, 25, 64, 5, 5, 3, 3, 1, 1, 1, 1, CL, torch.bfloat16,
                     "gemm", "flipped_forward:gemm_bf16_pairs", "gemm"))


def _tensors(N, C, K, H, W, R, S, groups, fmt, dtype):
    x = torch.empty(N, C, H, W, dtype=dtype)
    w = torch.empty(K, C // groups, R, S, dtype=dtype)
    if fmt is not None:
        x, w = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
    return x, w


@pytest.mark.parametrize("problem", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_each_pass_runs_the_expected_algorithm(problem, monkeypatch):
    monkeypatch.delenv("FASTCONV_WINOGRAD", raising=False)
    _, N, C, K, H, W, R, S, stride, padding, dilation, groups, fmt, dtype, fwd, gin, gw = problem
    x, w = _tensors(N, C, K, H, W, R, S, groups, fmt, dtype)
    got = cpu_conv2d_algorithms(x, w, stride, padding, dilation, groups)
    assert got == {"forward": fwd, "grad_input": gin, "grad_weight": gw}


def test_winograd_off_falls_back_to_gemm(monkeypatch):
    monkeypatch.setenv("FASTCONV_WINOGRAD", "0")
    x, w = _tensors(64, 64, 64, 32, 32, 3, 3, 1, None, torch.float32)
    got = cpu_conv2d_algorithms(x, w, 1, 1)
    assert got == {"forward": "gemm", "grad_input": "flipped_forward:gemm", "grad_weight": "gemm"}


def test_winograd_2_keeps_f2_tiles(monkeypatch):
    monkeypatch.setenv("FASTCONV_WINOGRAD", "2")
    x, w = _tensors(64, 64, 64, 32, 32, 3, 3, 1, None, torch.float32)
    got = cpu_conv2d_algorithms(x, w, 1, 1)
    assert got == {"forward": W1, "grad_input": f"flipped_forward:{W1}", "grad_weight": W1}


def test_arguments_take_torch_forms():
    x, w = _tensors(2, 8, 8, 9, 9, 3, 3, 1, None, torch.float32)
    assert cpu_conv2d_algorithms(x[0], w, (1, 1), "same", (1, 1))["forward"] == "direct_few_outputs"
    assert cpu_conv2d_algorithms(x, w, stride=(2, 1), padding=1)["grad_input"] == "gemm_col2im"
    with pytest.raises(RuntimeError, match="groups"):
        cpu_conv2d_algorithms(x, w, groups=3)
