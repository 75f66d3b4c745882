"""CIFAR-10 from image folders: ``train/<class>/*.jpg|png`` and ``test/<class>/*``, as a folder or a ``.tar.gz``
of one (the layout Kaggle-style copies of CIFAR-10 come in).

The images are decoded once with Pillow into uint8 arrays and cached beside the source (``<source>.uint8.npz``),
or under ``~/.cache/fastconv`` when that folder is read-only; a later run loads the cache in seconds. A copy of
one split alone (``test/`` only, say, to evaluate a checkpoint on a test set decoded elsewhere) is read as well.
The cache records the source's size and modification time and is rebuilt when they change. It is written to a temporary
file and renamed into place, so a killed run leaves no half-written cache. Labels follow CIFAR-10's class order;
the folder names must be exactly CIFAR-10's ten classes, each split with the same number of images per class.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Tuple, Union

import numpy as np
import torch

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CACHE_VERSION = "1"

PathLike = Union[str, os.PathLike]


class ImageFolderError(ValueError):
    """The image folder is not a CIFAR-10 copy: a corrupt image, missing or extra classes, unequal splits."""


def _splits_of_folder(root: Path) -> Tuple[str, ...]:
    return tuple(split for split in SPLITS if (root / split).is_dir())


def is_image_folder_source(path: PathLike) -> bool:
    """Whether `path` is a folder with a train/ or test/ subfolder (or both), or a .tar.gz / .tgz file (of one)."""
    path = Path(path)
    if path.is_file():  # (the official archive, cifar-10-python.tar.gz, holds pickled batches instead)
        return path.name.endswith((".tar.gz", ".tgz")) and path.name != "cifar-10-python.tar.gz"
    return path.is_dir() and bool(_splits_of_folder(path))


def _entries_of_folder(root: Path) -> Iterator[Tuple[str, str, str, bytes]]:
    """(split, class, file name, bytes) of every image file under root/{train,test}/<class>/."""
    for split in _splits_of_folder(root):
        for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            for file in sorted(class_dir.iterdir()):
                if file.suffix.lower() in IMAGE_SUFFIXES:
                    yield split, class_dir.name, str(file), file.read_bytes()


def _entries_of_archive(archive: Path) -> Iterator[Tuple[str, str, str, bytes]]:
    """The same from a .tar.gz, read as a stream (nothing is extracted); an optional top folder is allowed."""
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or Path(member.name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            for i in range(len(parts) - 2):  # .../<split>/<class>/<file>
                if parts[i] in SPLITS and i == len(parts) - 3:
                    yield parts[i], parts[i + 1], f"{archive}:{member.name}", tar.extractfile(member).read()


def _signature(source: Path) -> str:
    """Size and modification time of the source (for a folder: of every split and class folder, and the
    number of files), so that the cache is rebuilt when the source changes."""
    if source.is_file():
        stat = source.stat()
        return f"v{CACHE_VERSION} file {stat.st_size} {stat.st_mtime_ns}"
    parts = [f"v{CACHE_VERSION} folder"]
    for split in _splits_of_folder(source):
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            files = [f for f in class_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
            parts.append(f"{split}/{class_dir.name} {len(files)} {class_dir.stat().st_mtime_ns}")
    return "\n".join(parts)


def cache_path(source: PathLike) -> Path:
    """Where the decoded arrays of `source` live: beside it when its folder is writable, else in ~/.cache."""
    source = Path(source).resolve()
    beside = source.parent / f"{source.name}.uint8.npz"
    if os.access(source.parent, os.W_OK):
        return beside
    digest = hashlib.sha256(str(source).encode()).hexdigest()[:16]
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fastconv" / f"{source.name}-{digest}.npz"


def _decode(data: bytes, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # Pillow raises several types for a broken file
        raise ImageFolderError(f"{name}: not a readable image ({e})") from None
    if array.shape != (32, 32, 3):
        raise ImageFolderError(f"{name}: expected a 32x32 image, got {array.shape[1]}x{array.shape[0]}")
    return array


def decode_image_folder(source: PathLike, progress: bool = True) -> Dict[str, np.ndarray]:
    """Decode every image of `source` (no cache): {'train_images': uint8 N x 32 x 32 x 3, 'train_labels': int64 N,
    'test_images', 'test_labels'}, for the splits it has. Raises ImageFolderError naming the file or the classes
    that are wrong, or when it holds no images at all."""
    from tqdm.auto import tqdm

    source = Path(source)
    entries = _entries_of_archive(source) if source.is_file() else _entries_of_folder(source)
    images: Dict[str, List[np.ndarray]] = {s: [] for s in SPLITS}
    labels: Dict[str, List[int]] = {s: [] for s in SPLITS}
    counts: Dict[str, Dict[str, int]] = {s: {} for s in SPLITS}
    for split, class_name, name, data in tqdm(entries, desc=f"decoding {source.name}", unit=" images",
                                              disable=not progress):
        if class_name not in CLASSES:
            raise ImageFolderError(f"{name}: class folder {class_name!r} is not one of CIFAR-10's {CLASSES}")
        images[split].append(_decode(data, name))
        labels[split].append(CLASSES.index(class_name))
        counts[split][class_name] = counts[split].get(class_name, 0) + 1
    present = [split for split in SPLITS if counts[split]]
    if not present:
        raise ImageFolderError(f"{source}: no images in train/<class>/ or test/<class>/ "
                               f"({', '.join(IMAGE_SUFFIXES)} files in folders named after CIFAR-10's classes)")
    for split in present:
        missing = [c for c in CLASSES if c not in counts[split]]
        if missing:
            raise ImageFolderError(f"{source}: {split}/ has no images of {', '.join(missing)}")
        if len(set(counts[split].values())) != 1:
            raise ImageFolderError(f"{source}: {split}/ has unequal classes: "
                                   + ", ".join(f"{c} {counts[split][c]}" for c in CLASSES))
    return {f"{s}_{kind}": (np.stack(images[s]) if kind == "images" else np.asarray(labels[s], dtype=np.int64))
            for s in present for kind in ("images", "labels")}


def load_image_folder(source: PathLike, progress: bool = True) -> Dict[str, torch.Tensor]:
    """The decoded arrays of `source` as tensors (images uint8 N x 3 x 32 x 32, labels int64) of the splits it
    has, from the cache when it matches the source, else decoded and cached (written atomically)."""
    source = Path(source)
    if not is_image_folder_source(source):
        raise FileNotFoundError(f"{source} is neither a folder with train/ or test/ nor a .tar.gz of one")
    cache, signature = cache_path(source), _signature(source)
    arrays = None
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as f:
                if str(f["signature"]) == signature:
                    arrays = {k: f[k] for k in f.files if k != "signature"}
        except (OSError, ValueError, KeyError):
            arrays = None  # an unreadable cache is rebuilt
    if arrays is None:
        arrays = decode_image_folder(source, progress=progress)
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, signature=np.asarray(signature), **arrays)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the cache from other users
            os.replace(tmp, cache)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return {k: (torch.from_numpy(v).permute(0, 3, 1, 2).contiguous() if k.endswith("images")
                else torch.from_numpy(v)) for k, v in arrays.items()}
