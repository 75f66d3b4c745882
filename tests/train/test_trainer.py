"""fastconv.train: learning, freezing, exact resume after a kill, DDP, checkpoints, metrics, fine-tuning."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastconv.data import CIFAR10, cifar10_eval_transform, write_synthetic_cifar10
from fastconv.models import lenet5, resnet18
from fastconv.train import (TrainConfig, Trainer, classification_report, confusion_matrix,
                            download_torchvision_weights, freeze_backbone, load_pretrained, load_state_dict_file,
                            replace_head, unfreeze)
from fastconv.train.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from fastconv.train.metrics import write_history
from fastconv.train.optim import build_optimizer, build_param_groups, build_scheduler

from helpers.reference import randomize_, reference_resnet

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "helpers" / "train_script.py"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    return env


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_cifar10(tmp_path_factory.mktemp("synthetic"), num_train=320, num_test=100)


@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory):
    return write_synthetic_cifar10(tmp_path_factory.mktemp("small"), num_train=96, num_test=40)


class TinyNet(nn.Module):
    """Plain torch layers: the trainer must not depend on fastconv."""

    def __init__(self, classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.body(x))


def _tensor_data(n=64, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float()
    return TensorDataset(x, y)


def test_learns_synthetic_task_and_writes_outputs(synthetic, tmp_path):
    train = CIFAR10(synthetic, train=True, transform=cifar10_eval_transform())
    test = CIFAR10(synthetic, train=False, transform=cifar10_eval_transform())
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=3, batch_size=32, optimizer="adamw", lr=3e-3, schedule="onecycle", warmup_epochs=1,
                      output_dir=str(tmp_path / "out"), progress=False, verbose=False)
    history = Trainer(lenet5(), train, test, cfg).fit()
    losses = [row["train_loss"] for row in history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert history[-1]["val_acc"] > 0.5, history  # chance is 0.1
    out = tmp_path / "out"
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss,train_acc,val_loss,val_acc") and len(rows) == 4
    report = json.loads((out / "val_evaluation.json").read_text())
    assert report["accuracy"] == pytest.approx(history[-1]["val_acc"])
    assert sum(map(sum, report["confusion_matrix"])) == 100 and len(report["per_class"]) == 10
    assert report["class_names"][0] == "airplane"
    assert load_checkpoint(out / "last.pt")["epoch"] == 3
    best = load_checkpoint(out / "best.pt")
    assert best["metrics"]["val_acc"] == max(r["val_acc"] for r in history)
    pytest.importorskip("matplotlib")
    for png in ("curves.png", "val_confusion_matrix.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plain_torch_model_with_user_dataloaders():
    torch.manual_seed(0)
    model = TinyNet(classes=4)
    data = _tensor_data()
    trainer = Trainer(model, DataLoader(data, batch_size=16, shuffle=True, drop_last=True),
                      DataLoader(data, batch_size=10), TrainConfig(epochs=2, lr=0.05, progress=False, verbose=False))
    trainer.fit()
    report = trainer.evaluate()
    model.eval()
    with torch.no_grad():
        preds = model(data.tensors[0]).argmax(1)
    assert report["confusion_matrix"] == confusion_matrix(preds, data.tensors[1], 4).tolist()
    assert report["accuracy"] == pytest.approx(float((preds == data.tensors[1]).float().mean()))


def test_frozen_backbone_stays_bitwise_unchanged():
    torch.manual_seed(0)
    model = TinyNet(classes=4)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    seen = {}

    class Snapshot:
        def on_epoch_end(self, trainer, row):
            seen[row["epoch"]] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.1, momentum=0.9, weight_decay=1e-2, head="fc",
                      freeze_backbone_epochs=1, backbone_lr_mult=0.1, progress=False, verbose=False)
    trainer = Trainer(model, _tensor_data(), None, cfg, callbacks=[Snapshot()])
    trainer.fit()
    body = [k for k in start if k.startswith("body.")]
    assert any("running_mean" in k for k in body)
    for k in body:  # parameters and BatchNorm statistics untouched during the frozen epoch
        assert torch.equal(seen[1][k], start[k]), k
    assert not torch.equal(seen[1]["fc.weight"], start["fc.weight"])
    assert not torch.equal(seen[2]["body.0.weight"], start["body.0.weight"])  # unfrozen in epoch 2
    assert not torch.equal(seen[2]["body.1.running_mean"], start["body.1.running_mean"])
    assert [r["frozen_backbone"] for r in trainer.history] == [1, 0]
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs["backbone"] == pytest.approx(0.1 * lrs["head"])
    assert all(p.requires_grad for p in model.parameters())


def _run_script(out, data, *extra, timeout=240):
    return subprocess.run([sys.executable, str(SCRIPT), "--data", str(data), "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=timeout, env=_env())


def test_resume_after_kill_mid_epoch_equals_uninterrupted_run(small_synthetic, tmp_path):
    full = _run_script(tmp_path / "full", small_synthetic)
    assert full.returncode == 0, full.stderr[-3000:]
    # 96 images / batch 16 = 6 steps per epoch: step 9 is in the middle of epoch 2
    killed = _run_script(tmp_path / "killed", small_synthetic, "--kill-after-steps", "9")
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert not (tmp_path / "killed" / "final_rank0.pt").exists()
    assert load_checkpoint(tmp_path / "killed" / "run" / "last.pt")["epoch"] == 1
    resumed = _run_script(tmp_path / "killed", small_synthetic, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "1 of 3 epochs done" in resumed.stdout
    a = torch.load(tmp_path / "full" / "final_rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "final_rank0.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["history"] == b["history"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    rows = (tmp_path / "killed" / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4  # header + 3 epochs, the replayed epoch not duplicated


def test_ddp_two_processes_end_with_identical_parameters(small_synthetic, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
           "--data", str(small_synthetic), "--out", str(tmp_path), "--epochs", "2", "--different-init-per-rank"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=_env())
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    a = torch.load(tmp_path / "final_rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "final_rank1.pt", weights_only=True)
    for k in a["model"]:  # ranks started from different weights: DDP broadcast + synced gradients
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["history"] == b["history"]  # metrics are reduced over both ranks
    assert r.stdout.count("epoch   1/2") == 1  # rank 0 alone logs
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["world_size"] == 2 and len(saved["rng"]) == 2
    for k, v in saved["model"].items():
        assert torch.equal(v, a["model"][k]), k


def test_atomic_writes_keep_the_old_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"value": torch.tensor([1.0])}, path)

    def crash(f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed while writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert torch.equal(load_checkpoint(path)["value"], torch.tensor([1.0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_existing_run_is_not_overwritten_and_stale_temporaries_are_cleaned(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.01, output_dir=str(tmp_path), progress=False, verbose=False)
    Trainer(TinyNet(4), _tensor_data(), _tensor_data(), cfg).fit()
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="resume"):
        Trainer(TinyNet(4), _tensor_data(), _tensor_data(), cfg).fit()
    assert (tmp_path / "last.pt").read_bytes() == before
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"left by a kill")
    cfg2 = TrainConfig(epochs=2, batch_size=16, lr=0.01, output_dir=str(tmp_path), progress=False, verbose=False)
    history = Trainer(TinyNet(4), _tensor_data(), _tensor_data(), cfg2).fit(resume=True)
    assert [r["epoch"] for r in history] == [1, 2]
    assert not (tmp_path / ".last.pt.abc123.tmp").exists()
    # our checkpoint feeds the fine-tuning loader
    sd = load_state_dict_file(tmp_path / "last.pt")
    assert sd.keys() == TinyNet(4).state_dict().keys()


def test_resume_with_more_epochs_replans_the_schedule(tmp_path):
    cfg = dict(batch_size=16, lr=0.2, output_dir=str(tmp_path), progress=False, verbose=False)
    Trainer(TinyNet(4), _tensor_data(), None, TrainConfig(epochs=1, **cfg)).fit()
    history = Trainer(TinyNet(4), _tensor_data(), None, TrainConfig(epochs=3, **cfg)).fit(resume=True)
    # 4 steps per epoch: epoch 2 starts at step 4 of 12 on the new cosine, not at the old plan's final 0
    assert [r["lr"] for r in history] == pytest.approx([0.2, 0.2 * 0.75, 0.2 * 0.25])


def test_early_stopping_and_best_checkpoint(tmp_path):
    cfg = TrainConfig(epochs=10, batch_size=16, lr=1e-12, schedule="constant", early_stopping_patience=2,
                      output_dir=str(tmp_path), progress=False, verbose=False)
    torch.manual_seed(0)

    def frozen_in_time():  # no BatchNorm statistics, and lr 1e-12: the accuracy cannot improve
        return nn.Sequential(nn.Flatten(), nn.Linear(192, 4))

    trainer = Trainer(frozen_in_time(), _tensor_data(), _tensor_data(seed=1), cfg)
    history = trainer.fit()
    assert len(history) == 3 and trainer.stopped_early  # no improvement after epoch 1, patience 2
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3
    again = Trainer(frozen_in_time(), _tensor_data(), _tensor_data(seed=1), cfg)
    assert len(again.fit(resume=True)) == 3  # stays stopped


def test_classification_metrics_on_a_hand_worked_example():
    targets = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 1, 1, 2, 2])
    cm = confusion_matrix(preds, targets, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    r = classification_report(cm, ["a", "b", "c", "d"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    got = [(c["precision"], c["recall"], c["f1"], c["support"]) for c in r["per_class"]]
    want = [(1.0, 2 / 3, 0.8, 3), (0.5, 0.5, 0.5, 2), (0.5, 1.0, 2 / 3, 1), (0.0, 0.0, 0.0, 0)]
    for g, w in zip(got, want):
        assert g == pytest.approx(w)
    assert r["macro_avg"]["precision"] == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)
    assert r["weighted_avg"]["recall"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="must lie in"):
        confusion_matrix(torch.tensor([4]), torch.tensor([0]), 4)


def test_history_csv_and_json(tmp_path):
    rows = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25, "val_acc": 0.9}]
    write_history(rows, tmp_path / "m.csv", "csv")
    assert (tmp_path / "m.csv").read_text().splitlines() == ["epoch,train_loss,val_acc", "1,0.5,", "2,0.25,0.9"]
    write_history(rows, tmp_path / "m.json", "json")
    assert json.loads((tmp_path / "m.json").read_text()) == rows
    with pytest.raises(ValueError):
        write_history(rows, tmp_path / "m.txt", "txt")


def _lrs(cfg, steps_per_epoch):
    p = nn.Parameter(torch.zeros(1))
    opt = build_optimizer([{"params": [p], "lr": cfg.lr, "name": "all"}], cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    lrs = []
    for _ in range(cfg.epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros(1)
        opt.step()
        sched.step()
    return lrs


def test_warmup_cosine_and_onecycle_schedules():
    lrs = _lrs(TrainConfig(epochs=3, lr=1.0, warmup_epochs=1, min_lr_ratio=0.1), steps_per_epoch=4)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    for s in range(4, 12):
        assert lrs[s] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 8)))
    lrs = _lrs(TrainConfig(epochs=4, lr=2.0, schedule="onecycle", warmup_epochs=1), steps_per_epoch=10)
    assert max(lrs) == pytest.approx(2.0, rel=1e-3) and lrs.index(max(lrs)) in (9, 10)
    assert lrs[0] == pytest.approx(2.0 / 25) and lrs[-1] < 1e-3
    assert _lrs(TrainConfig(epochs=2, lr=0.5, schedule="constant"), 3) == [0.5] * 6


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="head"):
        TrainConfig(freeze_backbone_epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(epochs=2, warmup_epochs=2)
    with pytest.raises(ValueError, match="CUDA"):
        Trainer(TinyNet(4), _tensor_data(), None, TrainConfig(amp=True, device="cpu"))
    with pytest.raises(TypeError, match="nn.Module"):
        Trainer(lambda x: x, _tensor_data())
    with pytest.raises(ValueError, match="empty"):
        Trainer(TinyNet(4), TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0)))
    with pytest.raises(ValueError, match="no submodule"):
        build_param_groups(TinyNet(4), TrainConfig(head="classifier"))


def test_load_torchvision_checkpoint_for_finetuning(tmp_path):
    ref = randomize_(reference_resnet("resnet18"))  # torchvision layout, 1000 classes, ImageNet stem
    sd = ref.state_dict()
    torch.save(sd, tmp_path / "resnet18-tv.pth")

    model = resnet18(num_classes=10)  # ImageNet stem: only the head is new
    report = load_pretrained(model, tmp_path / "resnet18-tv.pth", head="fc", verbose=False)
    assert set(report.skipped) == {"fc.weight", "fc.bias"} and "head" in report.skipped["fc.weight"]
    own = model.state_dict()
    assert all(torch.equal(own[k], sd[k]) for k in report.loaded) and len(report.loaded) == len(sd) - 2
    assert own["fc.weight"].shape == (10, 512)

    cifar = resnet18(num_classes=10, stem="cifar")
    report = load_pretrained(cifar, {"module." + k: v for k, v in sd.items()}, verbose=False)  # DDP prefix
    assert set(report.skipped) == {"fc.weight", "fc.bias", "conv1.weight"}
    assert "7x7" in report.skipped["conv1.weight"] and "stem='imagenet'" in report.skipped["conv1.weight"]
    assert torch.equal(cifar.state_dict()["layer4.1.bn2.running_var"], sd["layer4.1.bn2.running_var"])

    bad = dict(sd)
    bad["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(ValueError, match="layer1.0.conv1.weight"):
        load_pretrained(resnet18(num_classes=10), bad, verbose=False)
    missing = {k: v for k, v in sd.items() if k != "layer2.0.bn1.bias"}
    with pytest.raises(ValueError, match="missing"):
        load_pretrained(resnet18(num_classes=10), missing, verbose=False)
    with pytest.raises(ValueError, match="unexpected"):
        load_pretrained(lenet5(), sd, verbose=False)


def test_torchvision_weights_from_the_hub_cache_without_network(tmp_path):
    sd = reference_resnet("resnet18").state_dict()
    torch.save(sd, tmp_path / "resnet18-f37072fd.pth")  # the file name torch.hub caches the official URL under
    got = download_torchvision_weights("resnet18", model_dir=tmp_path, progress=False)
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="no torchvision weights"):
        download_torchvision_weights("vgg16", model_dir=tmp_path)


def test_replace_head_and_freeze_helpers():
    model = resnet18(num_classes=1000)
    new = replace_head(model, 7)
    assert model.fc is new and new.out_features == 7 and new.in_features == 512
    freeze_backbone(model, head="fc")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    unfreeze(model)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(TypeError, match="nn.Linear"):
        replace_head(model, 3, head="layer1")
    with pytest.raises(ValueError, match="no submodule"):
        replace_head(model, 3, head="classifier")
