"""Evaluate a saved model on the CIFAR-10 test set: accuracy and per-class precision / recall / F1.

    python -m fastconv.evaluate runs/cifar_fast/model.pt --data-dir ../shared/data/cifar10-jpg.tar.gz
    python -m fastconv.evaluate runs/lenet/best.pt --data-dir data --json report.json

Reads any checkpoint our examples write: ``model.pt`` of the fast recipe (examples/train_cifar_fast.py) and the
trainer's ``best.pt`` / ``last.pt`` (examples/train_lenet.py, examples/finetune_resnet.py).  The model, its input
normalisation, image size, class subset and test-time augmentation come from the checkpoint's metadata, so the
numbers are the ones the training run printed.  ``--data-dir`` takes the official archive's folder or an image
folder / ``.tar.gz`` (train/<class>/, test/<class>/); the test split alone will do (test/<class>/ only, or
cifar-10-batches-py/ with test_batch and batches.meta).  Exit code 2 for a missing checkpoint or dataset.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from .data import CIFAR10, CIFAR10_MEAN, CIFAR10_STD, DatasetNotFoundError, ImageFolderError, Resize
from .models import FastCifarNet, lenet5, resnet18
from .train.checkpoint import atomic_write_json, load_checkpoint
from .train.fast_cifar import evaluate_logits, normalize, predict, select_classes
from .train.metrics import format_report


class _Resized(nn.Module):
    def __init__(self, model: nn.Module, size: int) -> None:
        super().__init__()
        self.model, self.resize = model, Resize(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.resize(x))


def build_model(metadata: Dict[str, Any]) -> nn.Module:
    """The architecture a checkpoint's metadata names, freshly initialised."""
    arch, num_classes = metadata.get("arch"), int(metadata.get("num_classes", 10))
    if arch == "fast_cifar":
        return FastCifarNet(num_classes=num_classes, widths=tuple(metadata["widths"]),
                            scale=float(metadata.get("scale", 1 / 9)))
    if arch == "lenet5":
        return lenet5(num_classes=num_classes)
    if arch == "resnet18":
        return resnet18(num_classes=num_classes, stem=metadata.get("stem", "cifar"))
    raise ValueError(f"unknown architecture {arch!r} in the checkpoint's metadata "
                     "(expected fast_cifar, lenet5 or resnet18)")


def load_model(checkpoint: Dict[str, Any]) -> nn.Module:
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "metadata" not in checkpoint:
        raise ValueError("not a checkpoint of our examples: expected a dict with 'model' and 'metadata'")
    model = build_model(checkpoint["metadata"])
    model.load_state_dict(checkpoint["model"])
    size = int(checkpoint["metadata"].get("image_size", 32))
    return _Resized(model, size) if size != 32 else model


def evaluate(checkpoint: Dict[str, Any], images: torch.Tensor, labels: torch.Tensor,
             class_names: Sequence[str], tta_level: Optional[int] = None, batch_size: int = 500,
             progress: bool = False) -> Dict[str, Any]:
    """Report for uint8 test ``images`` with CIFAR-10 ``labels`` (restricted to the checkpoint's classes)."""
    meta = checkpoint["metadata"]
    model = load_model(checkpoint)
    names = list(meta.get("class_names") or class_names)
    if len(names) != int(meta.get("num_classes", 10)):
        raise ValueError(f"the checkpoint has {meta.get('num_classes')} outputs but names {len(names)} classes")
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise ValueError(f"the checkpoint's classes {unknown} are not in the dataset's {list(class_names)}")
    keep, labels = select_classes(labels, class_names, names)
    x = normalize(images[keep], meta.get("mean", CIFAR10_MEAN), meta.get("std", CIFAR10_STD))
    level = int(meta.get("tta_level", 0)) if tta_level is None else tta_level
    # As the run evaluated it: a recipe trained under bfloat16 autocast (and channels_last) predicts that way too.
    recipe = checkpoint.get("recipe") or {}
    logits = predict(model, x, level, batch_size=batch_size, bfloat16=bool(recipe.get("bfloat16", False)),
                     channels_last=bool(recipe.get("channels_last", False)), progress=progress)
    report = evaluate_logits(logits, labels, names)
    report["tta_level"] = level
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastconv.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="model.pt, best.pt or last.pt written by one of the examples")
    ap.add_argument("--data-dir", default="data", help="CIFAR-10: the official archive's folder or an image folder "
                                                       "/ .tar.gz (default: data)")
    ap.add_argument("--tta-level", type=int, choices=(0, 1, 2), default=None,
                    help="test-time augmentation (default: the checkpoint's, 0 when it has none)")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--json", default=None, help="also write the report (with the confusion matrix) here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        checkpoint = load_checkpoint(args.checkpoint)
        test = CIFAR10(args.data_dir, train=False)
    except (FileNotFoundError, DatasetNotFoundError, ImageFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # an unreadable checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        report = evaluate(checkpoint, test.data, torch.tensor(test.targets), test.classes, args.tta_level,
                          args.batch_size, progress=not args.no_progress)
    except ValueError as e:
        print(f"error: {args.checkpoint}: {e}", file=sys.stderr)
        return 2
    print(f"{args.checkpoint} on {test.root} (test split, {report['num_samples']} images, "
          f"TTA level {report['tta_level']})")
    print(format_report(report))
    print(f"test accuracy {report['accuracy']:.4f}")
    if args.json:
        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
