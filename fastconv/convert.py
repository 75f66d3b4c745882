"""Swap torch.nn.Conv2d / MaxPool2d layers of any model for fastconv's."""
import torch

from .modules import Conv2d, MaxPool2d

__all__ = ["convert", "revert"]

_REPLACEMENTS = {torch.nn.Conv2d: Conv2d, torch.nn.MaxPool2d: MaxPool2d}


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Make every torch.nn.Conv2d and torch.nn.MaxPool2d in `model` (nested anywhere, the root included) run
    on fastconv, in place, and return `model`.

    Each layer keeps its identity, so parameters (the same Parameter objects, on their device and dtype, hence
    also any optimizer holding them), buffers, hooks and train/eval state stay as they were; only its class
    changes to fastconv's subclass, whose state_dict is the same. Subclasses of the torch layers are left
    alone: their own forward may do something fastconv's would not.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"convert() expects a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        replacement = _REPLACEMENTS.get(type(module))
        if replacement is not None:
            module.__class__ = replacement
    return model


def revert(model: torch.nn.Module) -> torch.nn.Module:
    """The inverse of :func:`convert`, in place: every fastconv.Conv2d / MaxPool2d becomes torch.nn's again (same
    parameters, buffers and state), e.g. to time a model on torch's kernels. Subclasses are left alone."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"revert() expects a torch.nn.Module, got {type(model).__name__}")
    originals = {ours: theirs for theirs, ours in _REPLACEMENTS.items()}
    for module in model.modules():
        original = originals.get(type(module))
        if original is not None:
            module.__class__ = original
    return model
