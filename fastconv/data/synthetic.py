"""A small, learnable dataset in the exact CIFAR-10 python-pickle format, for tests and offline runs.

Each class has a fixed smooth colour pattern; an image is its class pattern, shifted by a few
pixels, plus noise.  A small CNN learns it in a few epochs, so training code can be checked end to
end without the real data.  The files (``data_batch_1..5``, ``test_batch``, ``batches.meta``) are
read by :class:`fastconv.data.CIFAR10` like the real ones, and :func:`make_cifar10_archive` packs
them like the official ``cifar-10-python.tar.gz``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import tarfile
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .cifar10 import ARCHIVE_NAME, BASE_FOLDER, CLASSES, META_FILE, TEST_FILES, TRAIN_FILES, md5sum

MARKER = "synthetic.json"
PathLike = Union[str, os.PathLike]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def synthetic_images(num_images: int, num_classes: int = 10, seed: int = 0, split_seed: int = 0,
                     noise: float = 40.0, max_shift: int = 3) -> Tuple[np.ndarray, list]:
    """``(uint8 array (num_images, 3072) in CIFAR row layout, labels)`` for the synthetic task.

    The class patterns depend on ``seed`` only; ``split_seed`` varies the images (labels, shifts,
    noise), so train and test splits share the classes but not the samples.
    """
    if num_classes < 2 or num_classes > len(CLASSES):
        raise ValueError(f"num_classes must be in [2, {len(CLASSES)}], got {num_classes}")
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num_classes, 3, 4, 4, generator=g)
    patterns = F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    patterns = patterns / patterns.flatten(1).std(dim=1).view(-1, 1, 1, 1)

    g = torch.Generator().manual_seed(1_000_003 * (split_seed + 1) + seed)
    labels = torch.arange(num_images) % num_classes
    labels = labels[torch.randperm(num_images, generator=g)]
    images = patterns[labels]
    if max_shift > 0 and num_images:
        shifts = torch.randint(-max_shift, max_shift + 1, (num_images, 2), generator=g)
        images = torch.stack([torch.roll(img, (int(dy), int(dx)), dims=(1, 2))
                              for img, (dy, dx) in zip(images, shifts)])
    images = 128.0 + 45.0 * images + noise * torch.randn(images.shape, generator=g)
    data = images.round().clamp(0, 255).to(torch.uint8).reshape(num_images, 3 * 32 * 32)
    return data.numpy(), labels.tolist()


def write_synthetic_cifar10(root: PathLike, num_train: int = 500, num_test: int = 100, num_classes: int = 10,
                            seed: int = 0, make_archive: bool = False) -> Path:
    """Write a CIFAR-10-format dataset to ``root/cifar-10-batches-py``; return ``root``.

    ``num_train`` images are spread over the five training batches, ``num_test`` go to
    ``test_batch``.  Calling it again with the same arguments reuses the files.  A folder that was
    not written by this function (for instance the real CIFAR-10) is never overwritten.
    With ``make_archive`` the folder is also packed into ``root/cifar-10-python.tar.gz``.
    """
    if num_train < len(TRAIN_FILES):
        raise ValueError(f"num_train must be >= {len(TRAIN_FILES)} (one image per training batch), got {num_train}")
    if num_test < 1:
        raise ValueError(f"num_test must be >= 1, got {num_test}")
    root = Path(root)
    folder = root / BASE_FOLDER
    params = {"num_train": num_train, "num_test": num_test, "num_classes": num_classes, "seed": seed, "version": 1}
    marker = folder / MARKER
    if folder.exists():
        if not marker.is_file():
            raise FileExistsError(f"{folder} exists and was not written by write_synthetic_cifar10 "
                                  f"(no {MARKER}); refusing to overwrite it")
        if json.loads(marker.read_text()) == params and all((folder / n).is_file()
                                                            for n in (*TRAIN_FILES, *TEST_FILES, META_FILE)):
            if make_archive and not (root / ARCHIVE_NAME).is_file():
                make_cifar10_archive(root)
            return root
        marker.unlink()  # ours, with other parameters: regenerate below
    folder.mkdir(parents=True, exist_ok=True)

    names = list(CLASSES[:num_classes])
    meta = {"label_names": names, "num_cases_per_batch": -(-num_train // len(TRAIN_FILES)), "num_vis": 3072}
    _atomic_write_bytes(folder / META_FILE, pickle.dumps(meta, protocol=2))
    data, labels = synthetic_images(num_train, num_classes, seed=seed, split_seed=1)
    chunks = np.array_split(np.arange(num_train), len(TRAIN_FILES))
    for i, (name, idx) in enumerate(zip(TRAIN_FILES, chunks)):
        batch = {"batch_label": f"synthetic training batch {i + 1} of {len(TRAIN_FILES)}",
                 "labels": [labels[j] for j in idx], "data": np.ascontiguousarray(data[idx]),
                 "filenames": [f"synthetic_train_{j:05d}.png" for j in idx]}
        _atomic_write_bytes(folder / name, pickle.dumps(batch, protocol=2))
    data, labels = synthetic_images(num_test, num_classes, seed=seed, split_seed=2)
    batch = {"batch_label": "synthetic testing batch 1 of 1", "labels": labels, "data": data,
             "filenames": [f"synthetic_test_{j:05d}.png" for j in range(num_test)]}
    _atomic_write_bytes(folder / TEST_FILES[0], pickle.dumps(batch, protocol=2))
    _atomic_write_bytes(marker, json.dumps(params).encode())  # written last: marks the folder complete
    if make_archive:
        make_cifar10_archive(root)
    return root


def make_cifar10_archive(root: PathLike, archive: Optional[PathLike] = None,
                         members: Sequence[str] = (*TRAIN_FILES, *TEST_FILES, META_FILE)) -> Tuple[Path, str]:
    """Pack ``root/cifar-10-batches-py`` like the official archive; return ``(path, md5)``.

    The archive is byte-for-byte reproducible (fixed mtimes, owners and gzip header).
    """
    root = Path(root)
    archive = Path(archive) if archive is not None else root / ARCHIVE_NAME
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo(BASE_FOLDER)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(info)
        for name in members:
            payload = (root / BASE_FOLDER / name).read_bytes()
            info = tarfile.TarInfo(f"{BASE_FOLDER}/{name}")
            info.size, info.mode, info.mtime = len(payload), 0o644, 0
            tar.addfile(info, io.BytesIO(payload))
    archive.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(archive, buf.getvalue())
    return archive, md5sum(archive)
