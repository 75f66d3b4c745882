"""csrc/cpu/memory.h: the outputs of 32 MiB or more that our CPU ops fill are advised for transparent huge
pages (the VMA of their 2 MiB-aligned interior carries the kernel's "hg" flag), smaller ones are not, and
FASTCONV_HUGE_PAGES=0 turns the advice off.

Only the advice is checked, not that the kernel granted huge pages: that depends on free memory, so a test of
it could fail for reasons that are not ours. What the advice buys is measured by benchmarks/compare.py."""
import os
import subprocess
import sys

import pytest
import torch

import fastconv  # noqa: F401  (registers torch.ops.fastconv)

HUGE_PAGE = 2 << 20
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"



def _thp_available():
    if not sys.platform.startswith("linux") or not os.path.exists(THP_SETTING):
        return False
    with open(THP_SETTING) as setting:
        return "[never]" not in setting.read()


pytestmark = pytest.mark.skipif(not _thp_available(), reason="needs Linux with transparent huge pages available")

# Each op and the outputs it allocates, all of 32 MiB or more, and one output below that.
OPS_SCRIPT = r"""
import sys, torch, fastconv
ops = torch.ops.fastconv
torch.set_num_threads(2)
x = torch.randn(32, 64, 64, 64)  # 32 MiB
w = torch.randn(64, 64, 1, 1)
y = ops.conv2d(x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], 1)
dx = ops.conv2d_grad_input(y, x, w, [1, 1], [0, 0, 0, 0], [1, 1], 1)
pooled, indices = ops.max_pool2d(x, [3, 3], [1, 1], [1, 1], [1, 1], False)  # 64 x 64: 32 MiB
pool_dx = ops.max_pool2d_grad(pooled, x, indices)
small = ops.conv2d(x[:8], w, None, [1, 1], [0, 0, 0, 0], [1, 1], 1)  # 8 MiB

def vm_flags(address):
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(v, 16) for v in head.split("-"))
                inside = start <= address < end
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise LookupError(hex(address))

for name, t in [("conv2d", y), ("conv2d_grad_input", dx), ("max_pool2d", pooled), ("max_pool2d indices", indices),
                ("max_pool2d_grad", pool_dx), ("small conv2d", small)]:
    interior = (t.data_ptr() + %d - 1) // %d * %d
    assert interior + %d <= t.data_ptr() + t.nbytes, name
    print(name, "hg" in vm_flags(interior))
""" % (HUGE_PAGE, HUGE_PAGE, HUGE_PAGE, HUGE_PAGE)


def _advised(setting):
    # THP_MEM_ALLOC_ENABLE=1 would have torch advise every allocation itself
    env = {k: v for k, v in os.environ.items() if k not in ("FASTCONV_HUGE_PAGES", "THP_MEM_ALLOC_ENABLE")}
    if setting is not None:
        env["FASTCONV_HUGE_PAGES"] = setting
    out = subprocess.run([sys.executable, "-c", OPS_SCRIPT], capture_output=True, text=True, check=True,
                         env=env).stdout
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] == "True" for line in out.strip().splitlines()}


def test_large_outputs_are_advised():
    advised = _advised(None)
    assert len(advised) == 6 and not advised.pop("small conv2d") and all(advised.values()), advised


def test_advice_can_be_turned_off():
    advised = _advised("0")
    assert len(advised) == 6 and not any(advised.values()), advised
