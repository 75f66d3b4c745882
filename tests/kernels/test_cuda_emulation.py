"""The real CUDA kernels (csrc/cuda/*.cu), compiled as C++ against tests/cuda_emu/emu.h and run on CPU threads,
checked against float64 references by tests/cuda_emu/harness.cpp. This is how the CUDA sources are exercised on
machines without a GPU; it does not replace tests/cuda/test_cuda.py on a real GPU (cp.async timing, real mma/ldmatrix
hardware, alignment faults are not emulated)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUDA_INCLUDE = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "include")

pytestmark = pytest.mark.skipif(
    shutil.which("g++") is None or not os.path.exists(os.path.join(CUDA_INCLUDE, "cuda_runtime.h")),
    reason="needs g++ and the CUDA runtime headers",
)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda_emu")
    subprocess.run(["bash", os.path.join(ROOT, "tests", "cuda_emu", "build.sh"), str(out)], check=True, timeout=900)
    return str(out / "harness")


@pytest.mark.parametrize("engine,iters", [("conv", 20), ("tc", 6)])
def test_emulated_cuda_kernels_match_float64_reference(harness, engine, iters):
    result = subprocess.run([harness, str(iters), engine, "7"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " 0 failures" in result.stdout.splitlines()[-1], result.stdout[-2000:]
