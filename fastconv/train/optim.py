"""Optimizer and learning-rate schedule construction from a :class:`TrainConfig`."""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .config import TrainConfig
from .finetune import split_parameters


def build_param_groups(model: nn.Module, cfg: TrainConfig) -> Tuple[List[Dict], Optional[List[nn.Parameter]]]:
    """Parameter groups (only parameters that require grad now) and the backbone parameters.

    With ``cfg.head`` set there are two groups, "backbone" at ``lr * backbone_lr_mult`` and "head"
    at ``lr``; otherwise one group "all".  The backbone list is None without a head.
    """
    if cfg.head is None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no parameter that requires grad")
        return [{"params": params, "lr": cfg.lr, "name": "all"}], None
    backbone, head = split_parameters(model, cfg.head)
    backbone = [p for _, p in backbone if p.requires_grad]
    head = [p for _, p in head if p.requires_grad]
    if not head:
        raise ValueError(f"head {cfg.head!r} has no parameter that requires grad")
    groups = []
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult, "name": "backbone"})
    groups.append({"params": head, "lr": cfg.lr, "name": "head"})
    return groups, backbone


def build_optimizer(groups: List[Dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.0, cosine: bool = True):
    """LR multiplier for step ``s``: linear ramp ``(s+1)/warmup`` then cosine from 1 down to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not cosine:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int,
                    epochs: Optional[int] = None):
    """A per-step scheduler for ``epochs`` (default ``cfg.epochs``) of ``steps_per_epoch`` steps."""
    epochs = cfg.epochs if epochs is None else epochs
    total = epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "onecycle":
        pct = cfg.warmup_epochs / epochs if cfg.warmup_epochs > 0 else 0.3
        cycle_momentum = cfg.optimizer == "adamw" or cfg.momentum > 0
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total, pct_start=pct,
            anneal_strategy="cos", cycle_momentum=cycle_momentum)
    factor = warmup_cosine(total, warmup, cfg.min_lr_ratio, cosine=cfg.schedule == "cosine")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor] * len(optimizer.param_groups))
