"""Builds fastconv._C: the CPU kernels always, the CUDA kernels when a toolkit and a CUDA torch are present.

FASTCONV_CUDA=1 forces the CUDA sources in (failing if they cannot build), FASTCONV_CUDA=0 leaves them out.
No -march=native: ISA-specific micro-kernels carry their own `#pragma GCC target` and are picked at run time.
"""
import glob
import os
import sys

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:
    sys.exit(
        "fastconv compiles against the torch you have installed, which this build environment cannot see.\n"
        "Install torch first (pip install torch==2.13.0), then build with:\n"
        "    pip install --no-build-isolation -e ."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))


def use_cuda():
    flag = os.environ.get("FASTCONV_CUDA")
    if flag is not None:
        return flag == "1"
    return CUDA_HOME is not None and torch.version.cuda is not None


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True))


# The C++ standard is left to torch.utils.cpp_extension, which picks the one its headers need.
cxx_flags = ["-O3", "-fopenmp", "-Wall", "-Wno-unknown-pragmas"]
cpu_sources = sources("csrc/*.cpp") + sources("csrc/cpu/**/*.cpp")
include_dirs = [os.path.join(ROOT, "csrc")]

if use_cuda():
    ext = CUDAExtension(
        "fastconv._C",
        cpu_sources + sources("csrc/cuda/*.cpp") + sources("csrc/cuda/*.cu"),
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--expt-relaxed-constexpr"]},
        extra_link_args=["-fopenmp"],
        define_macros=[("FASTCONV_WITH_CUDA", "1")],
    )
else:
    ext = CppExtension(
        "fastconv._C",
        cpu_sources,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExtension})
