"""The examples, run as a user would run them, in their quick offline modes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from fastconv.train import load_checkpoint

from helpers.reference import randomize_, reference_resnet

REPO = Path(__file__).resolve().parents[2]
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


def test_train_cifar_fast_quick_run_and_evaluate(tmp_path):
    out = tmp_path / "fast"
    r = run("train_cifar_fast.py", "--synthetic", "--epochs", 2, "--output-dir", out, "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"]["layers"] == "fastconv" and summary["train_seconds"] > 0
    assert summary["test_accuracy"] > 0.3, summary  # 10 classes of generated images; chance is 0.1
    assert {"model.pt", "metrics.csv", "test_evaluation.json", "summary.json"} <= {p.name for p in out.iterdir()}
    assert len((out / "metrics.csv").read_text().splitlines()) == 3
    r = subprocess.run([sys.executable, "-m", "fastconv.evaluate", str(out / "model.pt"), "--data-dir",
                        str(out / "synthetic-cifar10"), "--no-progress"], capture_output=True, text=True, cwd=REPO,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"test accuracy {summary['test_accuracy']:.4f}" in r.stdout


def test_train_cifar_fast_fine_tunes_a_class_subset(tmp_path):
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    r = run("train_cifar_fast.py", "--synthetic", "--epochs", 1, "--classes", "airplane,automobile,bird,cat,deer",
            "--output-dir", pre, "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("train_cifar_fast.py", "--synthetic", "--epochs", 1, "--classes", "dog,frog,horse,ship,truck",
            "--pretrained", pre / "model.pt", "--freeze-epochs", 1, "--backbone-lr-mult", 0.1,
            "--output-dir", fine, "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((fine / "summary.json").read_text())
    assert summary["classes"] == ["dog", "frog", "horse", "ship", "truck"] and summary["pretrained"]
    before, after = load_checkpoint(pre / "model.pt")["model"], load_checkpoint(fine / "model.pt")["model"]
    assert torch.equal(before["block2.conv1.weight"], after["block2.conv1.weight"])  # frozen for its one epoch
    r = run("train_cifar_fast.py", "--synthetic", "--classes", "dog,kangaroo", "--output-dir", fine)
    assert r.returncode != 0 and "kangaroo" in r.stderr and "Traceback" not in r.stderr


def test_examples_exit_2_on_a_missing_dataset(tmp_path):
    missing = tmp_path / "cifar10-jpg.tar.gz"
    for script in ("train_cifar_fast.py", "train_lenet.py", "finetune_resnet.py"):
        r = run(script, "--data-dir", missing, "--output-dir", tmp_path / script, "--no-progress")
        assert r.returncode == 2, (script, r.stdout + r.stderr)
        assert "error:" in r.stderr and str(missing) in r.stderr and "Traceback" not in r.stderr, script


def test_plot_runs_draws_several_runs(tmp_path):
    for name, accs in (("a", (0.5, 0.7)), ("b", (0.4, 0.6))):
        (tmp_path / name).mkdir()
        rows = "\n".join(f"{i + 1},{acc}" for i, acc in enumerate(accs))
        (tmp_path / name / "metrics.csv").write_text("epoch,val_acc\n" + rows + "\n")
    r = run("plot_runs.py", tmp_path / "a", tmp_path / "b", "--labels", "fine", "scratch",
            "--output", tmp_path / "cmp.png")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    r = run("plot_runs.py", tmp_path / "a", tmp_path / "missing", "--output", tmp_path / "x.png")
    assert r.returncode == 2 and "metrics.csv" in r.stderr


def test_examples_read_an_image_folder_copy(tmp_path):
    from helpers.image_folders import write_folder
    write_folder(tmp_path / "cifar-jpg", per_class=(5, 2), suffix=".jpg")
    r = run("train_lenet.py", "--data-dir", tmp_path / "cifar-jpg", "--epochs", 1, "--batch-size", 16,
            "--output-dir", tmp_path / "lenet", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "50 train / 20 test images" in r.stdout
    r = run("train_cifar_fast.py", "--data-dir", tmp_path / "cifar-jpg", "--epochs", 1, "--batch-size", 16,
            "--output-dir", tmp_path / "fast", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "50 train / 20 test images of 10 classes" in r.stdout
