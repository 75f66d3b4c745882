"""A fast CIFAR-10 recipe: :class:`~fastconv.models.FastCifarNet` trained in ~10 epochs, after airbench94.

Written from the description in Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU" (arXiv 2404.00498),
and, for ``optimizer="muon"`` (the default), from airbench94_muon's notes (see ``_muon_optimizers`` and
:mod:`fastconv.train.muon`): the same net and data pipeline, Muon for the 3x3 filters, which reaches
airbench94's accuracy in 8 epochs instead of 9.9.  The rest, common to both unless said:

- Data lives in memory as one normalised float tensor; batches are gathered from it, not built per sample.
- Augmentation: 2-pixel translation (random crops of a reflect-padded copy) and *alternating* flips: each image
  gets a random flip once, and every odd epoch flips the whole set, so each image is seen both ways in turn
  instead of by chance.
- The loss is summed over the batch, label-smoothed (0.2).
- ``optimizer="sgd"``: Nesterov SGD, the learning rate given per 1024 examples and scaled by
  1 / (1 + 1 / (1 - momentum)) so that steps have the gradient's scale whatever the momentum; BatchNorm biases
  learn 64x faster; weight decay scaled the same way; a triangular schedule (0.2 -> 1 at 23% -> 0.07).
- The whitening layer's bias trains for the first 3 epochs only.
- ``optimizer="sgd"``: lookahead: every 5 steps the weights are pulled to an exponential average of themselves,
  with a decay rising as t^3 over the run; the final weights are that average.
- Test-time augmentation (``tta_level``): 0 plain, 1 adds the mirror image, 2 also two 1-pixel translations.

``layers="torch"`` runs the same recipe on torch.nn.Conv2d / MaxPool2d (for timing against torch), optionally
channels_last and under ``torch.autocast("cpu", bfloat16)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..convert import revert
from ..data.transforms import CIFAR10_MEAN, CIFAR10_STD
from ..models.fast_cifar import FastCifarNet
from .finetune import load_pretrained, replace_head
from .metrics import classification_report, confusion_matrix
from .muon import Muon

CHECKPOINT_FORMAT = "fastconv.model"


# (epochs, batch size) per optimizer: airbench94's 9.9 epochs of 1024; airbench94_muon's 8 epochs of 2000, which
# reach the same accuracy in ~20% less time (README "Accuracy (measured)"), under 30 minutes on the slowest CPUs seen
OPTIMIZER_DEFAULTS = {"sgd": (9.9, 1024), "muon": (8.0, 2000)}


@dataclass
class FastCifarRecipe:
    """The recipe's settings (defaults: airbench94's, or airbench94_muon's with ``optimizer="muon"``).

    ``epochs`` and ``batch_size`` left as None take the optimizer's defaults (:data:`OPTIMIZER_DEFAULTS`)."""

    epochs: Optional[float] = None
    batch_size: Optional[int] = None
    lr: float = 11.5                 # per 1024 examples, before the momentum scaling (see module docstring)
    momentum: float = 0.85
    weight_decay: float = 0.0153
    bias_scaler: float = 64.0
    label_smoothing: float = 0.2
    whiten_bias_epochs: int = 3
    whiten_eps: float = 5e-4         # added to the patch covariance's eigenvalues before the 1/sqrt
    whiten_images: int = 5000        # a random sample of the training set gives the patch statistics
    translate: int = 2
    tta_level: int = 2
    widths: Tuple[int, int, int] = (64, 256, 256)
    lookahead_every: int = 5
    # optimizer "muon" (after airbench94_muon): conv filters by Muon, the rest by Nesterov SGD, a linear decay
    # to 0, no lookahead; lr / momentum / weight_decay / bias_scaler above then do not apply, these do
    optimizer: str = "muon"
    muon_lr: float = 0.24
    muon_momentum: float = 0.6
    bias_lr: float = 0.053           # BatchNorm and whitening biases (per batch: the loss is summed)
    head_lr: float = 0.67
    sgd_momentum: float = 0.85
    muon_weight_decay: float = 2e-6  # per example, for the biases and the head
    seed: int = 0
    layers: str = "fastconv"         # or "torch"
    channels_last: bool = False
    bfloat16: bool = False           # torch.autocast("cpu", dtype=torch.bfloat16) around the forward
    # fine-tuning (train(..., pretrained=...)): the backbone's learning rate factor and frozen epochs
    backbone_lr_mult: float = 1.0
    freeze_backbone_epochs: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZER_DEFAULTS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_DEFAULTS)}, got {self.optimizer!r}")
        default_epochs, default_batch = OPTIMIZER_DEFAULTS[self.optimizer]
        self.epochs = default_epochs if self.epochs is None else self.epochs
        self.batch_size = default_batch if self.batch_size is None else self.batch_size
        if isinstance(self.epochs, bool) or not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            raise ValueError(f"epochs must be > 0, got {self.epochs!r}")
        for name in ("batch_size", "lookahead_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.tta_level not in (0, 1, 2):
            raise ValueError(f"tta_level must be 0, 1 or 2, got {self.tta_level!r}")
        if self.layers not in ("fastconv", "torch"):
            raise ValueError(f"layers must be 'fastconv' or 'torch', got {self.layers!r}")
        if not self.backbone_lr_mult >= 0:
            raise ValueError(f"backbone_lr_mult must be >= 0, got {self.backbone_lr_mult!r}")
        if isinstance(self.freeze_backbone_epochs, bool) or not isinstance(self.freeze_backbone_epochs, int) \
                or self.freeze_backbone_epochs < 0:
            raise ValueError(f"freeze_backbone_epochs must be an int >= 0, got {self.freeze_backbone_epochs!r}")
        if not 0 <= self.translate <= 8:
            raise ValueError(f"translate must be in [0, 8], got {self.translate!r}")
        self.widths = tuple(self.widths)


# ---------------------------------------------------------------------------------------------------- data

def normalize(images: torch.Tensor, mean: Sequence[float] = CIFAR10_MEAN,
              std: Sequence[float] = CIFAR10_STD) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` -> normalised float32."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255 - m) / s


def select_classes(labels: torch.Tensor, all_names: Sequence[str], names: Sequence[str]
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(mask of the samples whose class is in names, their labels renumbered as positions in names)``."""
    all_names = list(all_names)
    keep = torch.zeros(len(labels), dtype=torch.bool)
    renumber = torch.full((len(all_names),), -1, dtype=torch.int64)
    for new, name in enumerate(names):
        old = all_names.index(name)
        keep |= labels == old
        renumber[old] = new
    return keep, renumber[labels[keep]]


def random_crop(padded: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A ``size x size`` crop of each image at its own random offset (one slice per distinct offset)."""
    n, span = padded.shape[0], padded.shape[-1] - size + 1
    offsets = torch.randint(0, span * span, (n,), generator=generator)
    out = torch.empty(n, padded.shape[1], size, size, dtype=padded.dtype)
    for offset in offsets.unique().tolist():
        rows = (offsets == offset).nonzero().squeeze(1)
        dy, dx = divmod(offset, span)
        out[rows] = padded[rows, :, dy:dy + size, dx:dx + size]
    return out


class TrainBatches:
    """Epochs of ``(images, labels)`` batches with translation and alternating flips; the last partial batch is
    dropped (BatchNorm and the summed loss want full batches)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, translate: int,
                 generator: torch.Generator) -> None:
        if len(images) < batch_size:
            raise ValueError(f"batch_size {batch_size} is larger than the {len(images)} training images")
        self.labels, self.batch_size, self.translate, self.generator = labels, batch_size, translate, generator
        flip = torch.rand(len(images), generator=generator) < 0.5
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        self.images = F.pad(images, (translate,) * 4, mode="reflect") if translate else images
        self.size = images.shape[-1]

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def epoch(self, epoch: int):
        order = torch.randperm(len(self.labels), generator=self.generator)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[idx]
            if self.translate:
                x = random_crop(x, self.size, self.generator)
            yield (x.flip(-1) if epoch % 2 == 1 else x), self.labels[idx]


# ---------------------------------------------------------------------------------------------------- model

def build_model(recipe: FastCifarRecipe, num_classes: int = 10) -> nn.Module:
    # Muon's recipe starts the head at unit-std weights, so its logits are scaled down by the width
    scale = 1.0 / recipe.widths[2] if recipe.optimizer == "muon" else 1 / 9
    model = FastCifarNet(num_classes=num_classes, widths=recipe.widths, scale=scale)
    return revert(model) if recipe.layers == "torch" else model


class Lookahead:
    """An average of the weights (and BatchNorm statistics) that the live weights are reset to now and then."""

    def __init__(self, model: nn.Module) -> None:
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        live = model.state_dict()
        for k, avg in self.average.items():
            avg.lerp_(live[k], 1 - decay)
            live[k].copy_(avg)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, tta_level: int = 0, batch_size: int = 2000,
            bfloat16: bool = False, channels_last: bool = False, progress: bool = False) -> torch.Tensor:
    """Logits for normalised ``images`` with test-time augmentation: level 1 averages with the mirror image,
    level 2 also with 1-pixel translations up-left and down-right (each mirrored too)."""
    model.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            return model(x).float()

    def mirrored(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * run(x) + 0.5 * run(x.flip(-1)) if tta_level >= 1 else run(x)

    outs = []
    for start in tqdm(range(0, len(images), batch_size), desc="predict", leave=False, disable=not progress):
        x = images[start:start + batch_size]
        logits = mirrored(x)
        if tta_level >= 2:
            size = x.shape[-1]
            padded = F.pad(x, (1,) * 4, mode="reflect")
            shifted = [mirrored(padded[:, :, 0:size, 0:size]), mirrored(padded[:, :, 2:size + 2, 2:size + 2])]
            logits = 0.5 * logits + 0.25 * (shifted[0] + shifted[1])
        outs.append(logits)
    return torch.cat(outs)


def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor, class_names: Optional[Sequence[str]] = None
                    ) -> Dict[str, Any]:
    cm = confusion_matrix(logits.argmax(1), labels, logits.shape[1])
    report = classification_report(cm, class_names)
    report["loss"] = float(F.cross_entropy(logits, labels))
    return report


# ---------------------------------------------------------------------------------------------------- training

def triangle(steps: int, start: float, peak_at: float, end: float) -> np.ndarray:
    """Multipliers for steps 0..steps: linear start -> 1 at ``peak_at * steps`` -> end."""
    return np.interp(np.arange(steps + 1), [0, int(peak_at * steps), steps], [start, 1.0, end])


def _sgd_optimizers(recipe: FastCifarRecipe, model: nn.Module, total_steps: int, backbone_mult: float):
    """airbench94's: one Nesterov SGD, BatchNorm biases at ``bias_scaler`` times the LR, a triangular schedule."""
    kilostep_scale = 1024 * (1 + 1 / (1 - recipe.momentum))
    lr = recipe.lr / kilostep_scale
    wd = recipe.weight_decay * recipe.batch_size / kilostep_scale
    lr_biases = lr * recipe.bias_scaler
    groups = []
    for in_head in (False, True):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n.startswith("fc.") == in_head]
        mult = 1.0 if in_head else backbone_mult
        for params, group_lr in (([p for n, p in named if "norm" in n], lr_biases), ([p for n, p in named
                                                                                        if "norm" not in n], lr)):
            if params:  # weight decay is given divided by the LR, since SGD multiplies them
                groups.append(dict(params=params, lr=group_lr * mult, weight_decay=wd / group_lr))
    optimizer = torch.optim.SGD(groups, momentum=recipe.momentum, nesterov=True)
    lr_schedule = triangle(total_steps, start=0.2, peak_at=0.23, end=0.07)
    return [optimizer], [torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_schedule[i])]


def _muon_optimizers(recipe: FastCifarRecipe, model: nn.Module, total_steps: int, steps_per_epoch: int,
                     backbone_mult: float):
    """airbench94_muon's: Muon for the 3x3 filters; Nesterov SGD for the biases and the head; LRs fall linearly
    to 0 (the whitening bias's over its ``whiten_bias_epochs``).  The head starts at unit-std weights (the
    model divides the logits by its width, see build_model)."""
    with torch.no_grad():
        model.fc.weight.div_(model.fc.weight.std())
    wd = recipe.muon_weight_decay * recipe.batch_size
    filters = [p for p in model.parameters() if p.requires_grad and p.dim() == 4]
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and p.requires_grad]
    sgd_groups = []  # weight decay is given divided by the LR, since SGD multiplies them
    for params, lr, mult in (([model.whiten.bias], recipe.bias_lr, backbone_mult),
                             (norm_biases, recipe.bias_lr, backbone_mult),
                             (list(model.fc.parameters()), recipe.head_lr, 1.0)):
        sgd_groups.append(dict(params=params, lr=lr * mult, weight_decay=wd / lr))
    sgd = torch.optim.SGD(sgd_groups, momentum=recipe.sgd_momentum, nesterov=True)
    muon = Muon(filters, lr=recipe.muon_lr * backbone_mult, momentum=recipe.muon_momentum)
    whiten_steps = max(1, recipe.whiten_bias_epochs * steps_per_epoch)
    decay = lambda i: max(0.0, 1 - i / total_steps)
    sgd_schedule = torch.optim.lr_scheduler.LambdaLR(
        sgd, [lambda i: max(0.0, 1 - i / whiten_steps), decay, decay])
    return [sgd, muon], [sgd_schedule, torch.optim.lr_scheduler.LambdaLR(muon, decay)]


def train(recipe: FastCifarRecipe, train_images: torch.Tensor, train_labels: torch.Tensor,
          test_images: Optional[torch.Tensor] = None, test_labels: Optional[torch.Tensor] = None, *,
          num_classes: int = 10, class_names: Optional[Sequence[str]] = None, eval_every_epoch: bool = True,
          progress: bool = True, pretrained: Optional[Dict[str, torch.Tensor]] = None,
          on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None
          ) -> Tuple[nn.Module, List[Dict[str, Any]], Dict[str, Any]]:
    """Train from uint8 images ``(N, 3, 32, 32)`` and int64 labels.

    Returns ``(model, history, result)``: ``history`` has one row per epoch (train loss / accuracy on the
    augmented batches, and, with ``eval_every_epoch``, plain test loss / accuracy of the live weights);
    ``result`` has ``train_seconds`` (the optimisation alone), the final test report with TTA
    (``test``) and its logits.  The per-epoch evaluations are timed apart from training.

    Fine-tuning: ``pretrained`` is a FastCifarNet state_dict; everything but the classifier ``fc`` is loaded
    (the whitening layer included), ``fc`` is a new layer for ``num_classes``, and the rest (the backbone)
    trains at ``lr * backbone_lr_mult``, frozen for the first ``freeze_backbone_epochs`` epochs.
    """
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    x_train = normalize(train_images)
    y_train = torch.as_tensor(train_labels, dtype=torch.int64)
    x_test = normalize(test_images) if test_images is not None else None
    y_test = torch.as_tensor(test_labels, dtype=torch.int64) if test_labels is not None else None

    model = build_model(recipe, num_classes)
    if pretrained is None:  # (a random sample: folder copies of CIFAR-10 come sorted by class)
        sample = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(recipe.seed))
        model.init_whitening(x_train[sample[:recipe.whiten_images]], eps=recipe.whiten_eps)
    else:
        load_pretrained(model, pretrained, head="fc", stem_keys=(), verbose=progress)
        replace_head(model, num_classes, "fc")
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    batches = TrainBatches(x_train, y_train, recipe.batch_size, recipe.translate, gen)
    total_steps = math.ceil(len(batches) * recipe.epochs)

    backbone_mult = recipe.backbone_lr_mult if pretrained is not None else 1.0
    if recipe.optimizer == "muon":
        optimizers, schedulers = _muon_optimizers(recipe, model, total_steps, len(batches), backbone_mult)
        lookahead = None
    else:
        optimizers, schedulers = _sgd_optimizers(recipe, model, total_steps, backbone_mult)
        decay_schedule = 0.95 ** 5 * (torch.arange(total_steps + 1) / total_steps) ** 3
        lookahead = Lookahead(model)
    head_params = list(model.fc.parameters())
    backbone = [p for o in optimizers for g in o.param_groups for p in g["params"]
                if not any(p is q for q in head_params)]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing, reduction="none")

    history: List[Dict[str, Any]] = []
    step, train_seconds, eval_seconds = 0, 0.0, 0.0
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    for epoch in range(math.ceil(recipe.epochs)):
        frozen = pretrained is not None and epoch < recipe.freeze_backbone_epochs
        for p in backbone:
            p.requires_grad_(not frozen)
        model.whiten.bias.requires_grad_(epoch < recipe.whiten_bias_epochs and not frozen)
        model.train()
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in batches.epoch(epoch):
            if recipe.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bfloat16):
                out = model(x)
            loss = loss_fn(out.float(), y).sum()
            model.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            for scheduler in schedulers:
                scheduler.step()
            step += 1
            loss_sum += loss.item()
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            if lookahead is not None and step % recipe.lookahead_every == 0:
                lookahead.update(model, decay=float(decay_schedule[step]))
            bar.update(1)
            if step >= total_steps:
                if lookahead is not None:
                    lookahead.update(model, decay=1.0)  # end on the average itself
                break
        train_seconds += time.perf_counter() - t0
        row: Dict[str, Any] = {"epoch": epoch + 1, "step": step, "train_loss": loss_sum / seen,
                               "train_acc": correct / seen, "train_seconds": round(train_seconds, 2)}
        if eval_every_epoch and x_test is not None:
            t1 = time.perf_counter()
            report = evaluate_logits(predict(model, x_test, 0, bfloat16=recipe.bfloat16,
                                             channels_last=recipe.channels_last), y_test)
            eval_seconds += time.perf_counter() - t1
            row.update(val_loss=report["loss"], val_acc=report["accuracy"])
        history.append(row)
        bar.set_postfix(epoch=epoch + 1, loss=f"{row['train_loss']:.3f}",
                        **({"test_acc": f"{row['val_acc']:.4f}"} if "val_acc" in row else {}))
        if on_epoch_end is not None:
            on_epoch_end(row)
        if step >= total_steps:
            break
    bar.close()

    result: Dict[str, Any] = {"train_seconds": train_seconds, "epoch_eval_seconds": eval_seconds,
                              "steps": step, "images_seen": step * recipe.batch_size}
    if x_test is not None:
        t1 = time.perf_counter()
        logits = predict(model, x_test, recipe.tta_level, bfloat16=recipe.bfloat16,
                         channels_last=recipe.channels_last, progress=progress)
        result["tta_seconds"] = time.perf_counter() - t1
        result["test"] = evaluate_logits(logits, y_test, class_names)
        result["test_logits"] = logits
    return model, history, result


def checkpoint(model: nn.Module, recipe: FastCifarRecipe, num_classes: int,
               class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """What ``python -m fastconv.evaluate`` reads: the weights and how to rebuild and feed the model."""
    return {"format": CHECKPOINT_FORMAT, "model": {k: v.contiguous() for k, v in model.state_dict().items()},
            "metadata": {"arch": "fast_cifar", "widths": list(recipe.widths), "num_classes": num_classes,
                         "scale": model.scale,
                         "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD), "tta_level": recipe.tta_level,
                         "class_names": list(class_names) if class_names is not None else None},
            "recipe": dataclasses.asdict(recipe)}
