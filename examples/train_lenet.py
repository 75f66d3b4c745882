#!/usr/bin/env python
"""Train LeNet-5 (fastconv layers) on CIFAR-10 from scratch.

Recipe: random crop (4-pixel padding) + horizontal flip, SGD with Nesterov momentum 0.9, lr 0.05,
weight decay 5e-4, cosine schedule with one warm-up epoch, batch 128, 30 epochs.

    python examples/train_lenet.py --output-dir runs/lenet            # downloads CIFAR-10
    python examples/train_lenet.py --output-dir runs/lenet --resume   # continue after a kill
    python examples/train_lenet.py --synthetic --epochs 1             # offline smoke run
    torchrun --nproc_per_node=2 examples/train_lenet.py ...           # data parallel (DDP)

``--output-dir`` receives last.pt, best.pt, metrics.csv, curves.png, val_evaluation.json and
val_confusion_matrix.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from fastconv.data import (ChecksumError, DatasetNotFoundError, ImageFolderError, cifar10_eval_transform, cifar10_train_transform, load_cifar10, prepare_cifar10,
                           write_synthetic_cifar10)
from fastconv.models import lenet5
from fastconv.train import TrainConfig, Trainer, init_distributed, load_checkpoint
from fastconv.train import distributed as D


# option -> (default, where a resumed run finds its saved value: ("config" | "metadata", key))
DEFAULTS = {
    "synthetic_train": (1000, ("metadata", "synthetic_train")), "synthetic_test": (200, ("metadata", "synthetic_test")),
    "epochs": (30, ("config", "epochs")), "batch_size": (128, ("config", "batch_size")), "lr": (0.05, ("config", "lr")),
    "optimizer": ("sgd", ("config", "optimizer")), "weight_decay": (5e-4, ("config", "weight_decay")),
    "schedule": ("cosine", ("config", "schedule")), "warmup_epochs": (None, ("config", "warmup_epochs")),
    "label_smoothing": (0.0, ("config", "label_smoothing")), "seed": (0, ("config", "seed")),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="CIFAR-10: the official archive's folder (default ./data, downloaded when missing), or "
                   "an image folder / .tar.gz with train/<class>/ and test/<class>/ (with --synthetic: "
                   "OUTPUT_DIR/synthetic-cifar10)")
    p.add_argument("--output-dir", default="runs/lenet5", help="checkpoints, metrics and plots (default runs/lenet5)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last.pt, with "
                   "its settings unless given again")
    p.add_argument("--synthetic", action="store_true", help="generate and use a small CIFAR-format dataset (offline)")
    p.add_argument("--synthetic-train", type=int, help="synthetic training images (default 1000)")
    p.add_argument("--synthetic-test", type=int, help="synthetic test images (default 200)")
    p.add_argument("--epochs", type=int, help="default 30")
    p.add_argument("--batch-size", type=int, help="per process (default 128)")
    p.add_argument("--lr", type=float, help="default 0.05")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), help="default sgd (Nesterov momentum 0.9)")
    p.add_argument("--weight-decay", type=float, help="default 5e-4")
    p.add_argument("--schedule", choices=("cosine", "onecycle", "constant"), help="default cosine")
    p.add_argument("--warmup-epochs", type=float, help="default min(1, epochs / 10)")
    p.add_argument("--label-smoothing", type=float, help="default 0")
    p.add_argument("--patience", type=int, help="early stopping after this many epochs without improvement")
    p.add_argument("--workers", type=int, help="DataLoader workers (default 4 with CUDA, 0 on CPU)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    args = p.parse_args(argv)
    last = Path(args.output_dir) / "last.pt"
    saved = load_checkpoint(last) if args.resume and last.is_file() else None
    for name, (default, (section, key)) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, saved[section][key] if saved is not None else default)
    if args.warmup_epochs is None:
        args.warmup_epochs = min(1.0, args.epochs / 10)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    ctx = init_distributed()
    device = torch.device(args.device) if args.device else D.default_device(ctx)
    out = Path(args.output_dir)
    if args.synthetic:
        root = Path(args.data_dir or out / "synthetic-cifar10")
        if ctx.is_main:
            write_synthetic_cifar10(root, num_train=args.synthetic_train, num_test=args.synthetic_test, seed=args.seed)
    else:
        root = Path(args.data_dir or "data")
    try:
        if ctx.is_main and not args.synthetic:
            prepare_cifar10(root, download=True)
        D.barrier()
        train_set, _, test_set = load_cifar10(root, cifar10_train_transform(), cifar10_eval_transform(),
                                              download=False)
    except (DatasetNotFoundError, ImageFolderError, ChecksumError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    torch.manual_seed(args.seed)
    model = lenet5(num_classes=len(test_set.classes))
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        nesterov=args.optimizer == "sgd", weight_decay=args.weight_decay, schedule=args.schedule,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
        early_stopping_patience=args.patience, amp=False,
        num_workers=args.workers if args.workers is not None else (4 if device.type == "cuda" else 0),
        seed=args.seed, device=str(device), output_dir=str(out), progress=not args.no_progress)
    if ctx.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"LeNet-5 ({n_params} parameters) on {'synthetic ' if args.synthetic else ''}CIFAR-10: "
              f"{len(train_set)} train / {len(test_set)} test images, device {device}, {ctx.world_size} process(es)")
    trainer = Trainer(model, train_set, test_set, config,
                      metadata={"arch": "lenet5", "num_classes": len(test_set.classes),
                                "synthetic_train": args.synthetic_train, "synthetic_test": args.synthetic_test})
    t0 = time.time()
    history = trainer.fit(resume=args.resume)
    if ctx.is_main and history:
        best = trainer.best
        print(f"done in {time.time() - t0:.1f}s: {len(history)} epochs, last test accuracy "
              f"{history[-1]['val_acc']:.4f}, best {best['value']:.4f} at epoch {best['epoch']}")
        print(f"outputs in {out}: " + ", ".join(sorted(p.name for p in out.iterdir() if p.is_file())))
    D.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
