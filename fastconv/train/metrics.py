"""Classification metrics (accuracy, per-class precision/recall/F1, confusion matrix) and metric logs."""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from .checkpoint import atomic_write_json, atomic_write_text

PathLike = Union[str, os.PathLike]


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` int64 counts; row = true class, column = predicted class."""
    preds = torch.as_tensor(preds).reshape(-1).to(torch.int64)
    targets = torch.as_tensor(targets).reshape(-1).to(torch.int64)
    if preds.shape != targets.shape:
        raise ValueError(f"preds and targets differ in length: {preds.numel()} vs {targets.numel()}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, t in (("preds", preds), ("targets", targets)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got values in "
                             f"[{int(t.min())}, {int(t.max())}]")
    idx = targets * num_classes + preds
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def classification_report(cm: torch.Tensor, class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Accuracy, per-class precision / recall / F1 / support, and macro / weighted averages.

    A class never predicted has precision 0; a class absent from the targets has recall 0 (and
    support 0, so it does not weigh in the weighted average).
    """
    cm = torch.as_tensor(cm, dtype=torch.float64)
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {tuple(cm.shape)}")
    n = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class confusion matrix")
    tp = cm.diag()
    support = cm.sum(dim=1)
    predicted = cm.sum(dim=0)
    total = float(cm.sum())
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-300), torch.zeros_like(tp))
    per_class = [
        {"class": names[i], "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
         "support": int(support[i])}
        for i in range(n)
    ]
    weights = support / total if total > 0 else torch.zeros_like(support)
    return {
        "accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "num_samples": int(total),
        "per_class": per_class,
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "weighted_avg": {"precision": float((precision * weights).sum()), "recall": float((recall * weights).sum()),
                         "f1": float((f1 * weights).sum())},
        "confusion_matrix": cm.to(torch.int64).tolist(),
        "class_names": names,
    }


def format_report(report: Dict[str, Any]) -> str:
    """A fixed-width table of the per-class metrics, like scikit-learn's."""
    width = max(12, *(len(r["class"]) for r in report["per_class"]))
    lines = [f"{'':>{width}}  precision  recall     f1  support"]
    for r in report["per_class"]:
        lines.append(f"{r['class']:>{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:6.4f}  "
                     f"{r['support']:7d}")
    for key in ("macro_avg", "weighted_avg"):
        a = report[key]
        lines.append(f"{key.replace('_', ' '):>{width}}  {a['precision']:9.4f}  {a['recall']:6.4f}  {a['f1']:6.4f}  "
                     f"{report['num_samples']:7d}")
    lines.append(f"{'accuracy':>{width}}  {report['accuracy']:.4f} on {report['num_samples']} samples")
    return "\n".join(lines)


def write_history(history: List[Dict[str, Any]], path: PathLike, fmt: str = "csv") -> None:
    """Write the per-epoch metrics (a list of flat dicts) as CSV or JSON, atomically."""
    if fmt == "json":
        atomic_write_json(path, history)
    elif fmt == "csv":
        fields: List[str] = []
        for row in history:
            fields.extend(k for k in row if k not in fields)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(path, buf.getvalue())
    else:
        raise ValueError(f"metrics format must be 'csv' or 'json', got {fmt!r}")
