"""The package root (fastconv/__init__.py): a light import, the rest on first use."""
import subprocess
import sys


def test_import_fastconv_loads_the_layers_only():
    # (torch 2.13 itself imports tqdm, so what counts is what fastconv adds to torch's modules)
    code = ("import sys, torch; before = set(sys.modules); import fastconv; "
            "print(sorted(m for m in set(sys.modules) - before if not m.startswith('torch')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    added = r.stdout
    for lazy in ("fastconv.train", "fastconv.data", "fastconv.models", "fastconv.evaluate", "tqdm", "matplotlib",
                 "PIL"):
        assert f"'{lazy}" not in added, added
    assert "'fastconv.functional'" in added and "'fastconv.modules'" in added


def test_submodules_load_on_first_use():
    code = "import fastconv; m = fastconv.models.lenet5(); print(type(m.conv1).__name__, fastconv.train.Trainer)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Conv2d <class 'fastconv.train.trainer.Trainer'>")
    r = subprocess.run([sys.executable, "-c", "import fastconv; fastconv.nothing"], capture_output=True, text=True)
    assert r.returncode == 1 and "has no attribute 'nothing'" in r.stderr
