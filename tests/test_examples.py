"""The examples, run as a user would run them, in their quick offline modes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from fastconv.train import load_checkpoint

from helpers_reference import randomize_, reference_resnet

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def run(script, *args, timeout=300):
    # one thread: the quick modes use tiny batches, and 2-thread OpenMP spins badly on a busy 2-core machine
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=REPO)
    return r


def test_conv_demo_prints_the_worked_example():
    r = run("conv_demo.py")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    i = lines.index("fastconv.Conv2d output:")
    grid = [[float(v) for v in line.split()] for line in lines[i + 1:i + 4]]
    assert grid == [[35, 40, 45], [60, 65, 70], [85, 90, 95]]
    assert r.stdout.count("OK  ") == 3 and "FAIL" not in r.stdout


def test_finetune_resnet_quick_run_then_resume(tmp_path):
    # a torchvision-layout ImageNet checkpoint (random weights: no network in tests)
    weights = tmp_path / "resnet18-imagenet.pth"
    torch.save(randomize_(reference_resnet("resnet18")).state_dict(), weights)
    out = tmp_path / "run"
    common = ["--synthetic", "--synthetic-train", 64, "--synthetic-test", 32, "--batch-size", 32,
              "--pretrained", weights, "--freeze-epochs", 1, "--output-dir", out, "--no-progress"]
    r = run("finetune_resnet.py", "--epochs", 1, *common)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "skipped fc.weight" in r.stdout and "(backbone frozen)" in r.stdout
    for name in ("last.pt", "best.pt", "metrics.csv", "val_evaluation.json"):
        assert (out / name).is_file(), name
    try:
        import matplotlib  # noqa: F401
        assert (out / "curves.png").is_file() and (out / "val_confusion_matrix.png").is_file()
    except ImportError:
        pass
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["metadata"]["arch"] == "resnet18" and ckpt["metadata"]["stem"] == "imagenet"

    r = run("finetune_resnet.py", "--epochs", 2, "--resume", *common)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from" in r.stdout and "1 of 2 epochs done" in r.stdout and "changed settings" not in r.stdout
    assert re.search(r"epoch\s+2/2", r.stdout) and "(backbone frozen)" not in r.stdout.split("resumed from")[1]
    assert len((out / "metrics.csv").read_text().splitlines()) == 3
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    report = json.loads((out / "val_evaluation.json").read_text())
    assert report["num_samples"] == 32

    r = run("finetune_resnet.py", "--synthetic", "--output-dir", out, "--resume", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr  # the saved run's settings: nothing left to do
    assert "nothing to train: 2/2 epochs done" in r.stdout and "changed settings" not in r.stdout
    assert "accuracy" in r.stdout and json.loads((out / "val_evaluation.json").read_text())["num_samples"] == 32

    r = run("finetune_resnet.py", "--epochs", 1, *common)  # a fresh run must not overwrite the saved one
    assert r.returncode != 0 and "already holds a checkpoint" in r.stderr


def test_finetune_resnet_rejects_bad_arguments():
    r = run("finetune_resnet.py", "--synthetic", "--image-size", 8)
    assert r.returncode == 2 and "--image-size" in r.stderr
    r = run("finetune_resnet.py", "--pretrained", "x.pth", "--from-scratch")
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_train_lenet_quick_run(tmp_path):
    out = tmp_path / "lenet"
    r = run("train_lenet.py", "--synthetic", "--epochs", 1, "--synthetic-train", 100, "--synthetic-test", 50,
            "--output-dir", out, "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LeNet-5 (62006 parameters)" in r.stdout and "done in" in r.stdout
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert len((out / "metrics.csv").read_text().splitlines()) == 2
    r = run("train_lenet.py", "--synthetic", "--output-dir", out, "--resume", "--epochs", 2, "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr  # the other settings come from the saved run
    assert "1 of 2 epochs done" in r.stdout and "changed settings" not in r.stdout and "100 train" in r.stdout
    assert len((out / "metrics.csv").read_text().splitlines()) == 3
