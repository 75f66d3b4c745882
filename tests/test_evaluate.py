"""python -m fastconv.evaluate (fastconv/evaluate.py): the numbers a run printed, from its checkpoint alone."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastconv import evaluate
from fastconv.data import CIFAR10, write_synthetic_cifar10
from fastconv.models import FastCifarNet, lenet5
from fastconv.train import fast_cifar
from fastconv.train.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def run_module(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "fastconv.evaluate", *map(str, args), "--no-progress"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_cifar10(tmp_path_factory.mktemp("cifar"), num_train=200, num_test=60)


@pytest.mark.parametrize("precision", ["float32", "bf16_channels_last", "float32_muon"])
def test_fast_recipe_checkpoint_gives_the_runs_own_report(precision, data, tmp_path):
    """The same accuracy, confusion matrix and (to the bit) loss as the run's own final evaluation; a run under
    bfloat16 autocast in channels_last is evaluated that way too, and a Muon run with its logit scale."""
    train, test = CIFAR10(data, train=True), CIFAR10(data, train=False)
    low = precision.startswith("bf16")
    recipe = fast_cifar.FastCifarRecipe(epochs=2, batch_size=32, widths=(8, 16, 16), seed=1, bfloat16=low,
                                        channels_last=low, optimizer="muon" if "muon" in precision else "sgd")
    model, _, result = fast_cifar.train(recipe, train.data, torch.tensor(train.targets), test.data,
                                        torch.tensor(test.targets), class_names=test.classes, progress=False)
    path = save_checkpoint(fast_cifar.checkpoint(model, recipe, 10, test.classes), tmp_path / "model.pt")
    r = run_module(path, "--data-dir", data, "--json", tmp_path / "report.json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["accuracy"] == result["test"]["accuracy"] and report["tta_level"] == 2
    assert report["confusion_matrix"] == result["test"]["confusion_matrix"]
    assert report["loss"] == result["test"]["loss"]
    assert f"test accuracy {result['test']['accuracy']:.4f}" in r.stdout and "precision" in r.stdout


def test_class_subset_checkpoint_is_scored_on_its_classes(data):
    test = CIFAR10(data, train=False)
    names = ["cat", "dog", "ship"]
    net = FastCifarNet(num_classes=3, widths=(8, 16, 16))
    ckpt = fast_cifar.checkpoint(net, fast_cifar.FastCifarRecipe(widths=(8, 16, 16), tta_level=0), 3, names)
    labels = torch.tensor(test.targets)
    report = evaluate.evaluate(ckpt, test.data, labels, test.classes)
    keep = (labels == 3) | (labels == 5) | (labels == 8)
    remapped = torch.tensor([names.index(test.classes[i]) for i in labels[keep].tolist()])
    net.eval()
    with torch.no_grad():
        expected = fast_cifar.evaluate_logits(net(fast_cifar.normalize(test.data[keep])), remapped, names)
    assert report["class_names"] == names and report["num_samples"] == int(keep.sum())
    assert report["confusion_matrix"] == expected["confusion_matrix"]


def test_trainer_checkpoint_of_lenet(data, tmp_path):
    test = CIFAR10(data, train=False)
    net = lenet5()
    save_checkpoint({"format": "fastconv.train.checkpoint", "model": net.state_dict(),
                     "metadata": {"arch": "lenet5", "num_classes": 10}}, tmp_path / "best.pt")
    r = run_module(tmp_path / "best.pt", "--data-dir", data, "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    net.eval()
    x = fast_cifar.normalize(test.data)
    preds = net(x).argmax(1)
    acc = float((preds == torch.tensor(test.targets)).float().mean())
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"] == pytest.approx(acc)


def test_missing_or_foreign_inputs_exit_2_without_a_traceback(data, tmp_path):
    r = run_module(tmp_path / "nothing.pt", "--data-dir", data)
    assert r.returncode == 2 and "no checkpoint" in r.stderr and "Traceback" not in r.stderr
    save_checkpoint({"model": {}, "metadata": {"arch": "vgg"}}, tmp_path / "vgg.pt")
    r = run_module(tmp_path / "vgg.pt", "--data-dir", data)
    assert r.returncode == 2 and "unknown architecture" in r.stderr and "Traceback" not in r.stderr
    net = FastCifarNet(widths=(8, 16, 16))
    save_checkpoint(fast_cifar.checkpoint(net, fast_cifar.FastCifarRecipe(widths=(8, 16, 16)), 10), tmp_path / "m.pt")
    r = run_module(tmp_path / "m.pt", "--data-dir", tmp_path / "missing.tar.gz")
    assert r.returncode == 2 and "missing.tar.gz" in r.stderr and "Traceback" not in r.stderr


def test_a_copy_of_the_test_split_alone_gives_the_same_report(tmp_path):
    """Re-evaluating a checkpoint on a test set decoded elsewhere: a folder with test/<class>/ only (no train/)
    gives the report of the full copy."""
    import shutil
    from helpers.image_folders import write_folder
    write_folder(tmp_path / "full", suffix=".png")
    shutil.copytree(tmp_path / "full" / "test", tmp_path / "test_only" / "test")
    net = FastCifarNet(widths=(8, 16, 16))
    ckpt = fast_cifar.checkpoint(net, fast_cifar.FastCifarRecipe(widths=(8, 16, 16)), 10)
    save_checkpoint(ckpt, tmp_path / "m.pt")
    reports = []
    for source in ("full", "test_only"):
        assert evaluate.main([str(tmp_path / "m.pt"), "--data-dir", str(tmp_path / source), "--no-progress",
                              "--json", str(tmp_path / f"{source}.json")]) == 0
        reports.append(json.loads((tmp_path / f"{source}.json").read_text()))
    assert reports[0] == reports[1] and reports[0]["num_samples"] == 20
