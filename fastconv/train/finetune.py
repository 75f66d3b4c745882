"""Fine-tuning helpers: load a checkpoint (ours or torchvision's) into a model, replace or skip the
classifier head, split parameters into backbone and head, freeze and unfreeze the backbone.

Nothing here depends on fastconv layers: any ``nn.Module`` works, the head being named by its
attribute path (``"fc"`` for ResNets, ``"fc3"`` for LeNet-5, ``"classifier.1"``, ...).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .checkpoint import is_training_checkpoint, load_checkpoint

TORCHVISION_RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
TORCHVISION_URLS = {
    "resnet18": TORCHVISION_RESNET18_URL,
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}

PathLike = Union[str, os.PathLike]


def _in_prefix(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _as_tuple(names: Union[None, str, Iterable[str]]) -> Tuple[str, ...]:
    if names is None:
        return ()
    if isinstance(names, str):
        return (names,)
    return tuple(names)


def extract_state_dict(obj: Any) -> Dict[str, torch.Tensor]:
    """The model weights inside a loaded checkpoint.

    Accepts a plain state_dict (torchvision's files), a :class:`~fastconv.train.Trainer` checkpoint
    (``{"model": ...}``) and the common ``{"state_dict": ...}`` wrapper; strips the ``module.``
    prefix that ``DistributedDataParallel`` / ``DataParallel`` add.
    """
    if is_training_checkpoint(obj):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise ValueError("checkpoint does not contain a state_dict (a mapping of parameter names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"checkpoint state_dict has non-tensor entries: {bad[:5]}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_state_dict_file(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read weights from a file with ``torch.load(weights_only=True)``; see :func:`extract_state_dict`."""
    return extract_state_dict(load_checkpoint(path, map_location="cpu"))


def download_torchvision_weights(arch: str = "resnet18", model_dir: Optional[PathLike] = None,
                                 progress: bool = True, timeout: float = 60.0) -> Dict[str, torch.Tensor]:
    """torchvision's published ImageNet weights for ``arch``, via ``torch.hub`` (cached, hash-checked).

    Files land in ``model_dir`` (default: torch hub's ``checkpoints`` folder).  Offline, the error
    says how to provide the file instead.
    """
    if arch not in TORCHVISION_URLS:
        raise ValueError(f"no torchvision weights known for {arch!r}; choose one of {sorted(TORCHVISION_URLS)}")
    url = TORCHVISION_URLS[arch]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # torch.hub's urlopen has none: a silent network would hang forever
    try:
        sd = torch.hub.load_state_dict_from_url(url, model_dir=None if model_dir is None else str(model_dir),
                                                map_location="cpu", progress=progress, check_hash=True,
                                                weights_only=True)
    except Exception as e:  # noqa: BLE001 - URLError, timeout, hash mismatch, ...: one clear message
        where = Path(model_dir) if model_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
        raise RuntimeError(
            f"could not get torchvision's {arch} weights from {url} ({e}). Without internet, download that "
            f"file elsewhere and pass it with --pretrained PATH (or put it in {where}), or train with "
            f"--from-scratch.") from e
    finally:
        socket.setdefaulttimeout(previous)
    return extract_state_dict(sd)


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did."""

    loaded: List[str] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)  # key -> why

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        lines += [f"  skipped {k}: {why}" for k, why in self.skipped.items()]
        return "\n".join(lines)


def load_pretrained(model: nn.Module, source: Union[PathLike, Mapping[str, torch.Tensor]],
                    head: Union[str, Sequence[str], None] = "fc", stem_keys: Sequence[str] = ("conv1.weight",),
                    verbose: bool = True) -> LoadReport:
    """Load pretrained weights into ``model``, strictly except for a new head and an adapted stem.

    ``source`` is a file (ours or torchvision's) or a state_dict.  Every key must match the model
    by name; shapes must match too, except:

    * tensors under ``head`` (e.g. ``fc.weight`` 1000x512 against a 10-class model): skipped,
      the model keeps its freshly initialised head for the new class count;
    * keys in ``stem_keys`` (``conv1.weight``): a torchvision ImageNet checkpoint has a 7x7 first
      conv; a ``stem="cifar"`` ResNet has a 3x3 one, which is left at its initialisation.

    Anything else (missing or unexpected keys, other shape mismatches) raises ``ValueError``.
    """
    sd = source if isinstance(source, Mapping) else load_state_dict_file(source)
    sd = extract_state_dict(sd)
    heads = _as_tuple(head)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise ValueError(
            "checkpoint does not match the model: "
            + (f"missing {len(missing)} keys (e.g. {missing[:5]})" if missing else "")
            + ("; " if missing and unexpected else "")
            + (f"unexpected {len(unexpected)} keys (e.g. {unexpected[:5]})" if unexpected else ""))
    report = LoadReport()
    filtered: Dict[str, torch.Tensor] = {}
    errors = []
    for key, value in sd.items():
        target = own[key]
        if value.shape == target.shape:
            filtered[key] = value
            report.loaded.append(key)
        elif _in_prefix(key, heads):
            report.skipped[key] = (f"head: checkpoint {tuple(value.shape)}, model {tuple(target.shape)}; "
                                   f"kept the model's new, randomly initialised head")
        elif key in stem_keys:
            report.skipped[key] = (
                f"stem: checkpoint {tuple(value.shape)}, model {tuple(target.shape)}"
                + (" (an ImageNet 7x7 stem into a CIFAR 3x3 stem)" if value.dim() == 4 and value.shape[-1] == 7
                   and target.shape[-1] == 3 else "")
                + "; re-initialised. Build the model with stem='imagenet' to keep the pretrained stem")
        else:
            errors.append(f"{key}: checkpoint {tuple(value.shape)}, model {tuple(target.shape)}")
    if errors:
        raise ValueError("checkpoint shapes do not match the model: " + "; ".join(errors[:10]))
    result = model.load_state_dict(filtered, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) == set(report.skipped), result
    if verbose:
        print(str(report))
    return report


def get_submodule(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as e:
        raise ValueError(f"model has no submodule {name!r} (used as the head)") from e


def replace_head(model: nn.Module, num_classes: int, head: str = "fc") -> nn.Linear:
    """Replace the ``nn.Linear`` at ``head`` by a fresh one with ``num_classes`` outputs; returns it."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    old = get_submodule(model, head)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"head {head!r} is a {type(old).__name__}, expected nn.Linear")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, attr = head.rpartition(".")
    setattr(get_submodule(model, parent_name) if parent_name else model, attr, new)
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes
    return new


def split_parameters(model: nn.Module, head: Union[str, Sequence[str]]) -> Tuple[List[Tuple[str, nn.Parameter]],
                                                                             List[Tuple[str, nn.Parameter]]]:
    """``(backbone, head)`` lists of ``(name, parameter)``; the head is everything under ``head``."""
    heads = _as_tuple(head)
    for h in heads:
        get_submodule(model, h)
    backbone, top = [], []
    for name, p in model.named_parameters():
        (top if _in_prefix(name, heads) else backbone).append((name, p))
    if not top:
        raise ValueError(f"head {heads} has no parameters")
    return backbone, top


def set_requires_grad(params: Iterable[nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def freeze_backbone(model: nn.Module, head: Union[str, Sequence[str]] = "fc") -> None:
    """Stop gradients for every parameter outside ``head``."""
    backbone, _ = split_parameters(model, head)
    set_requires_grad((p for _, p in backbone), False)


def unfreeze(model: nn.Module) -> None:
    """Let every parameter of ``model`` train again."""
    set_requires_grad(model.parameters(), True)
