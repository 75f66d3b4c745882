#!/usr/bin/env python
"""Train a small network on CIFAR-10 in minutes on a CPU, every conv and max-pool on fastconv (90.75% on the
JPEG copy in 20-31 minutes on 2 Zen 3 cores; airbench94, which this follows, reaches 94% on the official images).

The recipe is fastconv.train.fast_cifar (after airbench94 and airbench94_muon: whitening first layer, alternating
flips, Muon for the conv filters, label smoothing, test-time augmentation); the network is
fastconv.models.FastCifarNet.  ``--optimizer sgd`` is airbench94's Nesterov SGD with lookahead (9.9 epochs).

    python examples/train_cifar_fast.py --data-dir ../shared/data/cifar10-jpg.tar.gz     # an image-folder copy
    python examples/train_cifar_fast.py --data-dir data                                    # the official archive
    python examples/train_cifar_fast.py --layers torch --channels-last                     # the same on torch.nn
    python examples/train_cifar_fast.py --layers torch --channels-last --bf16              # torch + bf16 autocast
    python examples/train_cifar_fast.py --synthetic --epochs 1                             # offline smoke run

Fine-tuning (new head, backbone at a lower LR, frozen at first), e.g. pretrain on five classes, then the others:

    python examples/train_cifar_fast.py --classes airplane,automobile,bird,cat,deer --output-dir runs/pre5
    python examples/train_cifar_fast.py --classes dog,frog,horse,ship,truck --pretrained runs/pre5/model.pt \
        --freeze-epochs 1 --backbone-lr-mult 0.1 --epochs 3

``--output-dir`` receives model.pt (read by ``python -m fastconv.evaluate``), metrics.csv, curves.png,
test_evaluation.json, test_confusion_matrix.png and summary.json (times, accuracy, machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

import fastconv
from fastconv.data import CIFAR10, DatasetNotFoundError, ImageFolderError, write_synthetic_cifar10
from fastconv.train import fast_cifar
from fastconv.train.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from fastconv.train.memory import keep_freed_memory
from fastconv.train.metrics import format_report, write_history
from fastconv.train.plots import plot_confusion_matrix, plot_history


def parse_args(argv=None) -> argparse.Namespace:
    d = fast_cifar.FastCifarRecipe()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data",
                    help="CIFAR-10: the official archive's folder (downloaded there when missing), or an image "
                         "folder / .tar.gz with train/<class>/ and test/<class>/ (default: data)")
    ap.add_argument("--output-dir", default="runs/cifar_fast")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--epochs", type=float, default=None,
                    help="default: the optimizer's (muon 8, sgd 9.9; fastconv.train.fast_cifar.OPTIMIZER_DEFAULTS)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the optimizer's (muon 2000, sgd 1024)")
    ap.add_argument("--lr", type=float, default=None,
                    help=f"muon: the filters' Muon LR (default {d.muon_lr}); sgd: airbench94's LR per 1024 examples "
                         f"(default {d.lr})")
    ap.add_argument("--optimizer", default=d.optimizer, choices=sorted(fast_cifar.OPTIMIZER_DEFAULTS),
                    help="sgd: airbench94's Nesterov SGD with lookahead; muon: Muon for the conv filters "
                         "(airbench94_muon's), the same accuracy in fewer epochs")
    ap.add_argument("--tta-level", type=int, default=d.tta_level, choices=(0, 1, 2))
    ap.add_argument("--layers", default=d.layers, choices=("fastconv", "torch"),
                    help="whose conv / max-pool kernels run (torch: torch.nn's, for comparison)")
    ap.add_argument("--channels-last", action="store_true", help="run the model in channels_last memory format")
    ap.add_argument("--bf16", action="store_true", help='torch.autocast("cpu", dtype=torch.bfloat16)')
    ap.add_argument("--classes", default=None,
                    help="comma-separated class names: train and test on those classes only (labels renumbered)")
    ap.add_argument("--pretrained", default=None, help="a model.pt of this recipe to fine-tune from (new head)")
    ap.add_argument("--freeze-epochs", type=int, default=0, help="with --pretrained: epochs with a frozen backbone")
    ap.add_argument("--backbone-lr-mult", type=float, default=1.0, help="with --pretrained: the backbone's LR factor")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--no-epoch-eval", action="store_true", help="skip the per-epoch test accuracy (curves)")
    ap.add_argument("--synthetic", action="store_true", help="tiny generated data (smoke run, no download)")
    ap.add_argument("--no-download", action="store_true", help="fail instead of downloading the official archive")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.synthetic and args.batch_size is None:
        args.batch_size = 64
    return args


def cpu_family_model() -> str:
    """"family F model M" from /proc/cpuinfo (which tells e.g. Zen 4 from Zen 5), or the platform's name."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()[:30]
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}
        return f"family {fields['cpu family']} model {fields['model']}"
    except (OSError, KeyError):
        return platform.processor() or platform.machine()


def load_data(args, out: Path):
    if args.synthetic:
        root = out / "synthetic-cifar10"
        write_synthetic_cifar10(root, num_train=512, num_test=128, seed=args.seed)
    else:
        root = Path(args.data_dir)
    train = CIFAR10(root, train=True, download=not args.synthetic and not args.no_download)
    test = CIFAR10(root, train=False)
    names = list(test.classes)
    if args.classes:
        wanted = [c.strip() for c in args.classes.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in names]
        if unknown or len(set(wanted)) != len(wanted) or len(wanted) < 2:
            raise SystemExit(f"error: --classes needs two or more distinct names of {names}, got {args.classes!r}")
        names = wanted
    splits = []
    for ds in (train, test):
        keep, labels = fast_cifar.select_classes(torch.tensor(ds.targets), test.classes, names)
        splits += [ds.data[keep], labels]
    return (*splits, names, train.root)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = keep_freed_memory()
    lr = {} if args.lr is None else {"muon_lr" if args.optimizer == "muon" else "lr": args.lr}
    recipe = fast_cifar.FastCifarRecipe(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                                        **lr,
                                        tta_level=args.tta_level, seed=args.seed, layers=args.layers,
                                        channels_last=args.channels_last, bfloat16=args.bf16,
                                        backbone_lr_mult=args.backbone_lr_mult,
                                        freeze_backbone_epochs=args.freeze_epochs)
    try:
        x_train, y_train, x_test, y_test, classes, root = load_data(args, out)
        pretrained = load_checkpoint(args.pretrained)["model"] if args.pretrained else None
    except (DatasetNotFoundError, ImageFolderError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    isa, cpu = fastconv.cpu_info()
    cpu = f"{cpu} ({cpu_family_model()})"
    layers = recipe.layers + (", channels_last" if recipe.channels_last else "") + (
        ", bf16 autocast" if recipe.bfloat16 else "")
    print(f"FastCifarNet {recipe.widths} on CIFAR-10 from {root}: {len(y_train)} train / {len(y_test)} test "
          f"images of {len(classes)} classes; {'fine-tuning ' + args.pretrained + '; ' if pretrained else ''}"
          f"layers {layers}; {torch.get_num_threads()} threads")
    print(f"machine: {cpu}; fastconv ISA {isa}; torch {torch.__version__}; malloc: {malloc or 'system default'}")
    print("recipe: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(recipe).items()))

    t0 = time.time()
    model, history, result = fast_cifar.train(
        recipe, x_train, y_train, x_test, y_test, num_classes=len(classes), class_names=classes,
        eval_every_epoch=not args.no_epoch_eval, progress=not args.no_progress, pretrained=pretrained,
        on_epoch_end=lambda row: print(json.dumps(row), flush=True))
    wall = time.time() - t0
    report = result["test"]

    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(fast_cifar.checkpoint(model, recipe, len(classes), classes), out / "model.pt")
    write_history(history, out / "metrics.csv")
    plot_history(history, out / "curves.png")
    atomic_write_json(out / "test_evaluation.json", report)
    plot_confusion_matrix(report["confusion_matrix"], out / "test_confusion_matrix.png", classes,
                          title=f"CIFAR-10 test, TTA level {recipe.tta_level}: accuracy {report['accuracy']:.4f}")
    summary = {"data": str(root), "classes": classes, "pretrained": args.pretrained,
               "recipe": dataclasses.asdict(recipe), "test_accuracy": report["accuracy"],
               "train_seconds": round(result["train_seconds"], 1), "tta_seconds": round(result["tta_seconds"], 1),
               "epoch_eval_seconds": round(result["epoch_eval_seconds"], 1), "wall_seconds": round(wall, 1),
               "images_seen": result["images_seen"], "cpu": cpu, "fastconv_isa": isa, "threads":
               torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
               "malloc": malloc}
    atomic_write_json(out / "summary.json", summary)
    print(format_report(report))
    speed = result["images_seen"] / result["train_seconds"]
    print(f"test accuracy {report['accuracy']:.4f} (TTA level {recipe.tta_level}); training "
          f"{result['train_seconds']:.1f} s ({speed:.0f} img/s), per-epoch evaluation "
          f"{result['epoch_eval_seconds']:.1f} s, final TTA evaluation {result['tta_seconds']:.1f} s, "
          f"wall {wall:.1f} s")
    print(f"outputs in {out}: " + ", ".join(sorted(p.name for p in out.iterdir() if p.is_file())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
