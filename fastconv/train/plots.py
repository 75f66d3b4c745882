"""PNG plots of the training curves and the confusion matrix; matplotlib is optional.

Figures are drawn with matplotlib's object-oriented API on an Agg canvas, so the caller's
pyplot backend is left alone.  When matplotlib is missing the functions return ``False`` after a
one-time message.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Union

from .checkpoint import atomic_write

PathLike = Union[str, os.PathLike]
_warned = False


def matplotlib_available() -> bool:
    global _warned
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if not _warned:
            print("matplotlib is not installed: skipping plots (pip install matplotlib to get them)",
                  file=sys.stderr)
            _warned = True
        return False
    return True


def _save(fig, path: PathLike) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))


def plot_history(history: List[Dict[str, Any]], path: PathLike) -> bool:
    """Loss and accuracy per epoch (train and validation) side by side; returns whether a file was written."""
    if not history or not matplotlib_available():
        return False
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, metric, title in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            key = f"{split}_{metric}"
            pts = [(e, row[key]) for e, row in zip(epochs, history) if row.get(key) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=split, markersize=3)
        _epoch_axes(ax, title)
    _save(fig, path)
    return True


def _epoch_axes(ax, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()


def plot_confusion_matrix(cm: Sequence[Sequence[int]], path: PathLike, class_names: Optional[Sequence[str]] = None,
                          title: str = "confusion matrix") -> bool:
    """Row-normalised confusion matrix (rows: true class) with counts in the cells."""
    if not matplotlib_available():
        return False
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(cm, dtype=np.int64)
    n = counts.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    rows = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.6 * n + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.5 else "black")
    _save(fig, path)
    return True


def plot_comparison(histories: Dict[str, List[Dict[str, Any]]], path: PathLike, key: str = "val_acc",
                    title: str = "test accuracy") -> bool:
    """One curve of ``key`` per epoch for each named run (e.g. fine-tuned against from scratch)."""
    if not histories or not matplotlib_available():
        return False
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, history in histories.items():
        pts = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", label=name, markersize=3)
    _epoch_axes(ax, title)
    _save(fig, path)
    return True
