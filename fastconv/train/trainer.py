"""A supervised classification trainer for any ``nn.Module`` and any map-style Dataset / DataLoader.

One process or many under ``torchrun`` (DistributedDataParallel); rank 0 alone logs and writes.
Each epoch ends with an atomic ``last.pt`` holding everything needed to continue exactly -- model,
optimizer, scheduler, grad scaler, every rank's RNG states, epoch, history, best / early-stopping
state -- so ``fit(resume=True)`` after a kill at any moment replays the interrupted epoch and ends
bitwise where an uninterrupted run ends (same hardware, same settings, deterministic kernels).
"""

from __future__ import annotations

import gc
import math
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from . import distributed as D
from .checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, clean_stale_temporaries, get_rng_state,
                         is_training_checkpoint, load_checkpoint, save_checkpoint, set_rng_state,
                         atomic_write_json)
from .config import TrainConfig
from .metrics import classification_report, confusion_matrix, format_report, write_history
from .optim import build_optimizer, build_param_groups, build_scheduler
from .plots import plot_confusion_matrix, plot_history

LAST, BEST = "last.pt", "best.pt"
_OUTPUTS = (LAST, BEST, "metrics.csv", "metrics.json", "curves.png", "val_evaluation.json",
            "val_confusion_matrix.png", "test_evaluation.json", "test_confusion_matrix.png")
# settings whose change on resume is expected and harmless
_RESUME_FREE = {"epochs", "output_dir", "progress", "verbose", "num_workers", "device", "plots",
                "early_stopping_patience", "eval_batch_size", "metrics_format"}


class Trainer:
    """Train ``model`` on ``train_data``, validating on ``val_data`` after every epoch.

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to class logits ``(N, C)``.
        train_data / val_data: a map-style ``Dataset`` of ``(input, class index)`` pairs (the
            trainer builds the loaders, sharded across ranks) or a ready ``DataLoader`` (used as
            is; under DDP give it a ``DistributedSampler``).
        config: :class:`TrainConfig`.
        loss_fn: returns the batch-mean loss; default cross-entropy with ``config.label_smoothing``.
        class_names: for reports and plots (default: ``val_data.classes`` when present).
        batch_transform: applied to each input batch after it is moved to the device, in training
            and evaluation (e.g. ``fastconv.data.Resize(224)`` on the GPU).
        callbacks: objects with optional ``on_step_end(trainer)`` / ``on_epoch_end(trainer, row)``.
        metadata: plain data stored in every checkpoint (architecture, class count, ...).
    """

    def __init__(self, model: nn.Module, train_data, val_data=None, config: Optional[TrainConfig] = None, *,
                 loss_fn: Optional[Callable] = None, class_names: Optional[Sequence[str]] = None,
                 batch_transform: Optional[Callable] = None, callbacks: Iterable[Any] = (),
                 metadata: Optional[Dict[str, Any]] = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.config = cfg = config if config is not None else TrainConfig()
        self.ctx = D.init_distributed()
        self.device = torch.device(cfg.device) if cfg.device else D.default_device(self.ctx)
        if cfg.amp and self.device.type != "cuda":
            raise ValueError(f"amp=True needs a CUDA device, got {self.device}; AMP is used on CUDA only")
        self.model = model.to(self.device)
        self.loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.batch_transform = batch_transform
        self.callbacks = list(callbacks)
        self.metadata = dict(metadata or {})
        self.class_names = list(class_names) if class_names is not None else getattr(
            val_data, "classes", None) or getattr(train_data, "classes", None)
        self.output_dir = Path(cfg.output_dir) if cfg.output_dir else None
        self.is_main = self.ctx.is_main

        self.train_loader = self._make_train_loader(train_data)
        self.val_loader, self._val_sharded = self._make_eval_loader(val_data) if val_data is not None else (None, False)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError("the training loader yields no batches")
        groups, self._backbone = build_param_groups(self.model, cfg)
        self.optimizer = build_optimizer(groups, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self._amp_dtype = torch.float16 if cfg.amp_dtype == "float16" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and self._amp_dtype == torch.float16)

        self.epoch = 0          # epochs completed
        self.global_step = 0    # optimizer steps taken
        self.history: List[Dict[str, Any]] = []
        self.best: Optional[Dict[str, Any]] = None
        self.bad_epochs = 0
        self.stopped_early = False
        self.last_val_report: Optional[Dict[str, Any]] = None
        self._ddp: Optional[DistributedDataParallel] = None
        self._ddp_key: Optional[tuple] = None

    # ------------------------------------------------------------------ data
    def _make_train_loader(self, data) -> DataLoader:
        cfg, ctx = self.config, self.ctx
        if isinstance(data, DataLoader):
            if ctx.enabled and not isinstance(data.sampler, DistributedSampler):
                warnings.warn("under DDP the training DataLoader should use a DistributedSampler; every rank "
                              "now sees the whole dataset")
            return data
        _check_dataset(data, "train_data")
        sampler = DistributedSampler(data, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                     seed=cfg.seed or 0)
        # drop a ragged last batch (a batch of 1 breaks BatchNorm) unless that would drop everything
        return DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                          pin_memory=self.device.type == "cuda", drop_last=len(sampler) >= cfg.batch_size)

    def _make_eval_loader(self, data):
        cfg, ctx = self.config, self.ctx
        if isinstance(data, DataLoader):
            return data, False
        _check_dataset(data, "val_data")
        if ctx.enabled:  # an exact, unpadded shard per rank; the confusion matrices are summed
            data = Subset(data, range(ctx.rank, len(data), ctx.world_size))
        loader = DataLoader(data, batch_size=cfg.eval_batch_size or cfg.batch_size, shuffle=False,
                            num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda")
        return loader, ctx.enabled

    def _to_device(self, batch):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError("each batch must be an (inputs, targets) pair")
        x, y = batch
        x = x.to(self.device, non_blocking=True)
        y = torch.as_tensor(y).to(self.device, non_blocking=True)
        if self.batch_transform is not None:
            x = self.batch_transform(x)
        return x, y

    def _autocast(self):
        return torch.autocast("cuda", dtype=self._amp_dtype, enabled=self.config.amp)

    # ------------------------------------------------------------------ model state
    def _set_backbone_frozen(self, frozen: bool) -> None:
        if self._backbone is not None and self.config.freeze_backbone_epochs > 0:
            for p in self._backbone:
                p.requires_grad_(not frozen)

    def _train_mode(self) -> nn.Module:
        self.model.train()
        if self.config.freeze_bn_stats:
            for m in self.model.modules():
                params = list(m.parameters(recurse=False))
                if isinstance(m, _BatchNorm) and params and not any(p.requires_grad for p in params):
                    m.eval()
        if not self.ctx.enabled:
            return self.model
        key = tuple(p.requires_grad for p in self.model.parameters())
        if self._ddp is None or key != self._ddp_key:  # DDP fixes its set of trainable params when built
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = None
            gc.collect()  # the old wrapper's gradient hooks go with it
            self._ddp = DistributedDataParallel(self.model, device_ids=ids)
            self._ddp_key = key
        return self._ddp

    def _seed(self, extra: int = 0) -> None:
        if self.config.seed is None:
            return
        s = self.config.seed + 1000 * self.ctx.rank + extra
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.manual_seed(s)

    # ------------------------------------------------------------------ loops
    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        cfg = self.config
        model = self._train_mode()
        if hasattr(self.train_loader.sampler, "set_epoch"):
            self.train_loader.sampler.set_epoch(epoch)
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, count
        bar = tqdm(self.train_loader, total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and self.is_main), leave=False, dynamic_ncols=True)
        for i, batch in enumerate(bar):
            x, y = self._to_device(batch)
            with self._autocast():
                out = model(x)
                loss = self.loss_fn(out, y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            with warnings.catch_warnings():  # a step skipped by the GradScaler is expected with AMP
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
                self.scheduler.step()
            self.global_step += 1
            totals[0] += loss.detach().double() * y.shape[0]
            totals[1] += (out.argmax(1) == y).sum()
            totals[2] += y.shape[0]
            if bar.disable is False and i % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{self.optimizer.param_groups[-1]['lr']:.3g}")
            for cb in self.callbacks:
                if hasattr(cb, "on_step_end"):
                    cb.on_step_end(self)
        D.all_reduce_sum(totals)
        D.broadcast_buffers(self.model)  # every rank now holds exactly the model rank 0 saves
        loss_sum, correct, count = totals.tolist()
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"training loss became {loss_sum / count} in epoch {epoch + 1}; lower the "
                                     f"learning rate or set grad_clip")
        return {"train_loss": loss_sum / count, "train_acc": correct / count}

    @torch.no_grad()
    def evaluate(self, data=None, desc: str = "eval") -> Dict[str, Any]:
        """Loss, accuracy, per-class precision/recall/F1 and confusion matrix of the current model.

        ``data``: a Dataset, a DataLoader, or None for the validation data.  For a Dataset under
        DDP each rank evaluates its shard and the counts are summed, so every rank gets the
        full-dataset result (every rank must call this).
        """
        if data is None:
            loader, sharded = self.val_loader, self._val_sharded
        elif isinstance(data, DataLoader):
            loader, sharded = data, False
        else:
            loader, sharded = self._make_eval_loader(data)
        if loader is None:
            raise ValueError("no data to evaluate: pass a dataset or loader, or give the Trainer val_data")
        was_training = self.model.training
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        cm = None
        for batch in tqdm(loader, desc=desc, disable=not (self.config.progress and self.is_main), leave=False,
                          dynamic_ncols=True):
            x, y = self._to_device(batch)
            with self._autocast():
                out = self.model(x)
            out = out.float()
            loss_sum += self.loss_fn(out, y).double() * y.shape[0]
            batch_cm = confusion_matrix(out.argmax(1), y, out.shape[1])
            cm = batch_cm if cm is None else cm + batch_cm
        self.model.train(was_training)
        if cm is None:
            raise ValueError("the evaluation loader yields no batches")
        if sharded:
            D.all_reduce_sum(loss_sum)
            D.all_reduce_sum(cm)
        names = self.class_names if self.class_names is not None and len(self.class_names) == cm.shape[0] else None
        report = classification_report(cm.cpu(), names)
        report["loss"] = float(loss_sum) / max(1, report["num_samples"])
        return report

    def fit(self, resume: bool = False) -> List[Dict[str, Any]]:
        """Train until ``config.epochs`` (or early stopping); with ``resume`` continue from ``output_dir/last.pt``."""
        cfg, out = self.config, self.output_dir
        if resume:
            if out is None:
                raise ValueError("resume needs config.output_dir (where last.pt is)")
            if (out / LAST).is_file():
                self.load_state_dict(load_checkpoint(out / LAST, map_location="cpu"))
                self.log(f"resumed from {out / LAST}: {self.epoch} of {cfg.epochs} epochs done")
            else:
                self.log(f"no checkpoint in {out} yet: starting from the beginning")
                self._seed()
        else:
            if out is not None and any((out / n).exists() for n in (LAST, BEST)):
                raise FileExistsError(f"{out} already holds a checkpoint from an earlier run; resume it "
                                      f"(resume=True / --resume) or choose another output directory")
            self._seed()
        if self.is_main and out is not None:
            out.mkdir(parents=True, exist_ok=True)
            clean_stale_temporaries(out, _OUTPUTS)
        if self.epoch >= cfg.epochs or self.stopped_early:
            self.log(f"nothing to train: {self.epoch}/{cfg.epochs} epochs done"
                     + (" (stopped early)" if self.stopped_early else ""))
        for epoch in range(self.epoch, cfg.epochs):
            if self.stopped_early:
                break
            frozen = epoch < cfg.freeze_backbone_epochs
            self._set_backbone_frozen(frozen)
            t0 = time.time()
            row: Dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[-1]["lr"]}
            row.update(self.train_one_epoch(epoch))
            if self.val_loader is not None:
                self.last_val_report = rep = self.evaluate(desc="validate")
                row.update(val_loss=rep["loss"], val_acc=rep["accuracy"], val_macro_f1=rep["macro_avg"]["f1"])
            row.update(frozen_backbone=int(frozen), time_s=round(time.time() - t0, 3))
            self.epoch = epoch + 1
            self.history.append(row)
            improved = self._track_best(row)
            state = self.state_dict() if out is not None else None  # collective: every rank calls it
            if self.is_main and state is not None:
                if improved:
                    save_checkpoint({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": "best",
                                     "epoch": self.epoch, "model": state["model"], "metrics": row,
                                     "metadata": self.metadata, "class_names": self.class_names}, out / BEST)
                self._write_logs()
                save_checkpoint(state, out / LAST)  # last: the commit point of the epoch
            self.log(_format_row(row, cfg.epochs) + ("  *" if improved else ""))
            for cb in self.callbacks:
                if hasattr(cb, "on_epoch_end"):
                    cb.on_epoch_end(self, row)
            if self.stopped_early:
                self.log(f"early stopping: {cfg.monitor} has not improved for {self.bad_epochs} epochs "
                         f"(best {self.best['value']:.4f} at epoch {self.best['epoch']})")
        if self.val_loader is not None and self.epoch > 0:
            if self.last_val_report is None:
                self.last_val_report = self.evaluate(desc="validate")
            self.write_evaluation(self.last_val_report, "val")
        if self.is_main and out is not None:
            self._write_logs()
        D.barrier()
        return self.history

    # ------------------------------------------------------------------ bookkeeping
    def _track_best(self, row: Dict[str, Any]) -> bool:
        cfg = self.config
        value = row.get(cfg.monitor)
        if value is None:
            value, key = -row["train_loss"], "train_loss"  # no validation: keep the lowest training loss
        else:
            key = cfg.monitor
            value = -value if key == "val_loss" else value
        if self.best is None or value > self.best["score"]:
            self.best = {"epoch": row["epoch"], "score": value, "value": row[key], "metric": key}
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        if cfg.early_stopping_patience is not None and self.bad_epochs >= cfg.early_stopping_patience:
            self.stopped_early = True
        return False

    def _write_logs(self) -> None:
        cfg, out = self.config, self.output_dir
        write_history(self.history, out / f"metrics.{cfg.metrics_format}", cfg.metrics_format)
        if cfg.plots:
            plot_history(self.history, out / "curves.png")

    def write_evaluation(self, report: Dict[str, Any], name: str) -> None:
        """On rank 0 with an output_dir: ``{name}_evaluation.json`` and ``{name}_confusion_matrix.png``."""
        if not (self.is_main and self.output_dir is not None):
            return
        atomic_write_json(self.output_dir / f"{name}_evaluation.json", report)
        if self.config.plots:
            plot_confusion_matrix(report["confusion_matrix"], self.output_dir / f"{name}_confusion_matrix.png",
                                  report["class_names"], title=f"{name}: accuracy {report['accuracy']:.4f}")
        self.log(f"{name} evaluation:\n{format_report(report)}")

    def log(self, msg: str) -> None:
        if self.is_main and self.config.verbose:
            tqdm.write(msg)

    def state_dict(self) -> Dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": "last",
            "epoch": self.epoch, "global_step": self.global_step,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": D.all_gather_object(get_rng_state()), "world_size": self.ctx.world_size,
            "history": self.history, "best": self.best, "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early, "config": self.config.to_dict(),
            "steps_per_epoch": self.steps_per_epoch, "metadata": self.metadata, "class_names": self.class_names,
        }

    def load_state_dict(self, ckpt: Dict[str, Any]) -> None:
        if not is_training_checkpoint(ckpt) or ckpt.get("kind") != "last":
            raise ValueError("not a resumable training checkpoint (expected the last.pt a Trainer writes)")
        cfg = self.config
        old = ckpt["config"]
        changed = {k: (old.get(k), v) for k, v in cfg.to_dict().items() if k not in _RESUME_FREE and old.get(k) != v}
        if changed:
            self.log("warning: resuming with changed settings (exact continuation not guaranteed): "
                     + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        if old["epochs"] != cfg.epochs:
            if cfg.schedule == "onecycle":
                raise ValueError(f"cannot change epochs from {old['epochs']} to {cfg.epochs} when resuming a "
                                 f"one-cycle schedule")
            self.log(f"epochs changed from {old['epochs']} to {cfg.epochs}: the LR schedule is re-planned over "
                     f"{cfg.epochs} epochs")
        if ckpt["steps_per_epoch"] != self.steps_per_epoch:
            self.log(f"warning: {self.steps_per_epoch} steps per epoch now, {ckpt['steps_per_epoch']} in the "
                     f"checkpoint")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if old["epochs"] != cfg.epochs:  # the next step's LR from the re-planned schedule, not the old plan's
            s = self.scheduler
            for g, base, fn in zip(self.optimizer.param_groups, s.base_lrs, s.lr_lambdas):
                g["lr"] = base * fn(s.last_epoch)
            s._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        if self.scaler.is_enabled() and ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.global_step = int(ckpt["epoch"]), int(ckpt["global_step"])
        self.history, self.best = list(ckpt["history"]), ckpt["best"]
        self.bad_epochs, self.stopped_early = int(ckpt["bad_epochs"]), bool(ckpt["stopped_early"])
        if int(ckpt["world_size"]) == self.ctx.world_size:
            set_rng_state(ckpt["rng"][self.ctx.rank])
        else:
            self.log(f"warning: checkpoint from {ckpt['world_size']} processes, now {self.ctx.world_size}: "
                     f"RNG streams are re-seeded, the continuation is not bitwise exact")
            self._seed(extra=self.epoch)


def _check_dataset(data, name: str) -> None:
    if not isinstance(data, Dataset) and not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise TypeError(f"{name} must be a map-style Dataset or a DataLoader, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} is empty")


def _format_row(row: Dict[str, Any], epochs: int) -> str:
    s = (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.3g}  "
         f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}")
    if "val_loss" in row:
        s += f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}"
    if row.get("frozen_backbone"):
        s += "  (backbone frozen)"
    return s + f"  {row['time_s']:.1f}s"
