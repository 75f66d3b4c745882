"""Training, evaluation and fine-tuning for any ``nn.Module`` (fastconv layers or not).

* :class:`Trainer` / :class:`TrainConfig`: SGD (momentum, Nesterov) or AdamW, cosine / one-cycle
  schedules with warm-up, label smoothing, AMP on CUDA, gradient clipping, atomic per-epoch
  checkpoints with exact resume, best checkpoint, early stopping, tqdm progress, CSV/JSON metrics,
  PNG curves and confusion matrix, DDP under torchrun (rank 0 alone logs and saves).
* :mod:`.finetune`: load ours or torchvision's checkpoints, new head, frozen backbone.
* :mod:`.metrics`: confusion matrix, per-class precision / recall / F1.
"""

from . import checkpoint, distributed, finetune, metrics, plots
from .checkpoint import atomic_write, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import DistContext, init_distributed
from .finetune import (TORCHVISION_RESNET18_URL, LoadReport, download_torchvision_weights, extract_state_dict,
                       freeze_backbone, load_pretrained, load_state_dict_file, replace_head, split_parameters,
                       unfreeze)
from .metrics import classification_report, confusion_matrix, format_report
from .trainer import Trainer

__all__ = [
    "Trainer", "TrainConfig", "DistContext", "init_distributed", "atomic_write", "load_checkpoint",
    "save_checkpoint", "TORCHVISION_RESNET18_URL", "LoadReport", "download_torchvision_weights",
    "extract_state_dict", "freeze_backbone", "load_pretrained", "load_state_dict_file", "replace_head",
    "split_parameters", "unfreeze", "classification_report", "confusion_matrix", "format_report",
    "checkpoint", "distributed", "finetune", "metrics", "plots",
]
