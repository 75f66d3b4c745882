"""Training settings, validated up front so that bad input fails before any work is done."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "onecycle", "constant")
MONITORS = ("val_acc", "val_loss")


@dataclass
class TrainConfig:
    """Everything :class:`~fastconv.train.Trainer` needs besides the model and the data.

    Optimisation
        ``optimizer`` "sgd" (``momentum``, ``nesterov``) or "adamw" (``betas``); ``lr`` is the
        peak learning rate of the head (and of the whole model when ``head`` is None);
        ``weight_decay`` (decoupled for AdamW, L2 for SGD); ``grad_clip``: max global grad norm.
    Schedule (stepped every optimizer step)
        "cosine": linear warm-up over ``warmup_epochs`` then cosine decay to ``lr * min_lr_ratio``;
        "onecycle": torch's ``OneCycleLR`` (warm-up fraction ``warmup_epochs / epochs``, 0.3 when 0);
        "constant": warm-up then constant.
    Fine-tuning
        ``head``: name of the classifier submodule (e.g. "fc"); the rest is the backbone, trained
        at ``lr * backbone_lr_mult`` and frozen for the first ``freeze_backbone_epochs`` epochs
        (with ``freeze_bn_stats``, BatchNorm layers whose parameters are frozen also keep their
        running statistics).
    Loop
        ``batch_size`` is per process; ``label_smoothing``; ``amp`` (CUDA only; ``amp_dtype``
        "float16" with a GradScaler or "bfloat16"); ``early_stopping_patience`` epochs without
        improvement of ``monitor``; ``seed`` (None: leave the RNGs alone).
    Output (rank 0 only)
        ``output_dir`` gets ``last.pt`` (every epoch), ``best.pt``, ``metrics.csv``/``.json``
        (``metrics_format``), ``curves.png``, ``val_evaluation.json``, ``val_confusion_matrix.png``.
    """

    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: Optional[int] = None
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: Tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: Optional[float] = None
    amp: bool = False
    amp_dtype: str = "float16"
    head: Optional[Union[str, Sequence[str]]] = None
    backbone_lr_mult: float = 1.0
    freeze_backbone_epochs: int = 0
    freeze_bn_stats: bool = True
    early_stopping_patience: Optional[int] = None
    monitor: str = "val_acc"
    num_workers: int = 0
    seed: Optional[int] = 0
    device: Optional[str] = None
    output_dir: Optional[str] = None
    metrics_format: str = "csv"
    plots: bool = True
    progress: bool = True
    verbose: bool = True

    def __post_init__(self) -> None:
        def positive_int(name: str, allow_zero: bool = False) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
                raise ValueError(f"{name} must be {'a non-negative' if allow_zero else 'a positive'} int, got {v!r}")

        def non_negative(name: str) -> None:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")

        positive_int("epochs")
        positive_int("batch_size")
        if self.eval_batch_size is not None:
            positive_int("eval_batch_size")
        positive_int("num_workers", allow_zero=True)
        positive_int("freeze_backbone_epochs", allow_zero=True)
        if self.early_stopping_patience is not None:
            positive_int("early_stopping_patience")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}, got {self.monitor!r}")
        if self.metrics_format not in ("csv", "json"):
            raise ValueError(f"metrics_format must be 'csv' or 'json', got {self.metrics_format!r}")
        if self.amp_dtype not in ("float16", "bfloat16"):
            raise ValueError(f"amp_dtype must be 'float16' or 'bfloat16', got {self.amp_dtype!r}")
        for name in ("lr", "weight_decay", "warmup_epochs", "backbone_lr_mult", "momentum"):
            non_negative(name)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs})")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs optimizer='sgd' with momentum > 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(float(b) for b in self.betas)
        if self.head is None and (self.freeze_backbone_epochs > 0 or self.backbone_lr_mult != 1.0):
            raise ValueError("freeze_backbone_epochs and backbone_lr_mult need head= (the classifier's module name)")
        if isinstance(self.head, (list, tuple)):
            self.head = tuple(self.head)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
