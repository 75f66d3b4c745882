"""CIFAR-10 from the official python-pickle archive.

The archive is downloaded when missing from :data:`CIFAR10_URL`, its md5 is checked before it is
moved into place (so a partial or corrupted download never sits under the final name), and it is
extracted only after every member has been checked to stay inside the target folder.  The
extracted folder is renamed into place in one step, so a killed extraction leaves nothing behind
that looks complete.  Without internet the error says exactly where to put the files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from .image_folder import ImageFolderError, is_image_folder_source, load_image_folder

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
BASE_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

PathLike = Union[str, os.PathLike]


class ChecksumError(RuntimeError):
    """A downloaded or local file does not have the expected md5."""


class UnsafeArchiveError(RuntimeError):
    """An archive member would be written outside the target folder, or is not a plain file/folder."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not on disk and could not be downloaded."""


def md5sum(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def download_file(url: str, dest: PathLike, md5: Optional[str] = None, timeout: float = 60.0,
                  progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically, checking ``md5`` before the file gets its final name.

    Raises :class:`ChecksumError` (and leaves nothing at ``dest``) when the md5 does not match, and
    lets ``urllib.error.URLError`` / ``OSError`` through when the URL cannot be read.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length") if hasattr(response, "headers") else None
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"downloading {dest.name}", disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        if md5 is not None:
            got = md5sum(tmp)
            if got != md5:
                raise ChecksumError(f"checksum mismatch for {url}: md5 {got}, expected {md5}; the download "
                                    f"was discarded (nothing was written to {dest})")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def check_archive_members(archive: PathLike, dest: PathLike) -> List[tarfile.TarInfo]:
    """Return the members of a tar archive after checking that extracting them into ``dest`` is safe.

    Refuses (with :class:`UnsafeArchiveError`) absolute paths, paths that leave ``dest`` (``../``),
    links of any kind, and anything that is not a regular file or a folder.
    """
    root = os.path.realpath(dest)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
    for m in members:
        name = m.name
        drive = len(name) > 1 and name[0].isalpha() and name[1] == ":"
        if not name or os.path.isabs(name) or name.startswith(("/", "\\")) or drive:
            raise UnsafeArchiveError(f"refusing to extract {archive}: member {name!r} has an absolute path")
        target = os.path.realpath(os.path.join(root, name))
        if os.path.commonpath([root, target]) != root:
            raise UnsafeArchiveError(f"refusing to extract {archive}: member {name!r} would be written "
                                     f"outside {dest}")
        if m.issym() or m.islnk():
            raise UnsafeArchiveError(f"refusing to extract {archive}: member {name!r} is a link")
        if not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"refusing to extract {archive}: member {name!r} is not a regular file "
                                     f"or folder")
    return members


def safe_extract(archive: PathLike, dest: PathLike) -> None:
    """Extract a tar archive into ``dest`` after :func:`check_archive_members` accepted every member."""
    members = check_archive_members(archive, dest)
    with tarfile.open(archive, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: a second, independent line of defence
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - older Pythons; members were checked above
            tar.extractall(dest, members=members)


def _missing_files(folder: Path, train: bool = True) -> List[str]:
    """The batch files of `folder` missing for both splits (train=True) or for the test split alone."""
    names = (*TRAIN_FILES, *TEST_FILES, META_FILE) if train else (*TEST_FILES, META_FILE)
    return [n for n in names if not (folder / n).is_file()]


def _help(root: Path, url: str, md5: str) -> str:
    return (f"Without internet, download {url} on another machine and copy it to "
            f"{root / ARCHIVE_NAME} (md5 {md5}), or extract it there so that "
            f"{root / BASE_FOLDER / 'data_batch_1'} exists. To try the code without the real data, "
            f"generate a small dataset with fastconv.data.write_synthetic_cifar10 (examples: --synthetic).")


def prepare_cifar10(root: PathLike, download: bool = True, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5,
                    progress: bool = True, test_only: bool = False) -> Path:
    """Make sure ``root/cifar-10-batches-py`` holds the CIFAR-10 batches; return that folder.

    Uses the extracted folder when complete, else extracts ``root/cifar-10-python.tar.gz`` (after
    checking its md5), else downloads it from ``url`` when ``download`` is true.  Never deletes or
    overwrites files the user put there: a bad local archive or an incomplete folder is an error.
    An image-folder copy (see :class:`CIFAR10`) needs no preparing: its path is returned as it is. With
    ``test_only`` an extracted folder holding ``test_batch`` and ``batches.meta`` alone will do.
    """
    root = Path(root)
    if root.name.endswith((".tar.gz", ".tgz")) and root.name != ARCHIVE_NAME and not root.exists():
        raise DatasetNotFoundError(f"no CIFAR-10 image archive at {root}")
    if is_image_folder_source(root):
        return root
    folder = root / BASE_FOLDER
    if folder.is_dir():
        missing = _missing_files(folder, train=not test_only)
        if not missing:
            return folder
        raise DatasetNotFoundError(f"{folder} exists but is incomplete (missing {', '.join(missing)}); "
                                   f"delete it or complete it. " + _help(root, url, md5))
    archive = root / ARCHIVE_NAME
    if archive.is_file():
        got = md5sum(archive)
        if got != md5:
            raise ChecksumError(f"{archive} has md5 {got}, expected {md5}: the file is corrupted or not the "
                                f"official archive. Delete it to download it again. " + _help(root, url, md5))
    elif download:
        try:
            download_file(url, archive, md5=md5, progress=progress)
        except ChecksumError:
            raise
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise DatasetNotFoundError(f"CIFAR-10 is not in {root} and downloading {url} failed ({e}). "
                                       + _help(root, url, md5)) from e
    else:
        raise DatasetNotFoundError(f"CIFAR-10 is not in {root} (download disabled). " + _help(root, url, md5))

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".cifar10-extract-"))
    try:
        safe_extract(archive, staging)
        extracted = staging / BASE_FOLDER
        missing = _missing_files(extracted) if extracted.is_dir() else ["the whole " + BASE_FOLDER + " folder"]
        if missing:
            raise DatasetNotFoundError(f"{archive} does not contain a complete CIFAR-10 python dataset "
                                       f"(missing {', '.join(missing)})")
        os.replace(extracted, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR batches: allows numpy array reconstruction and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in a protocol-2 pickle
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR-10 batch file refers to {module}.{name}, which is not allowed")
        if module.startswith("numpy.core.") and importlib.util.find_spec("numpy._core") is not None:
            module = "numpy._core." + module[len("numpy.core."):]  # numpy >= 2 name, without its warning
        return super().find_class(module, name)


def load_batch(path: PathLike) -> dict:
    """Load one CIFAR-10 pickle batch (Python 2 or 3 pickle); keys are returned as ``str``."""
    with open(path, "rb") as f:
        raw = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a CIFAR-10 batch (expected a dict, got {type(raw).__name__})")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in raw.items()}


def load_split(folder: PathLike, train: bool) -> Tuple[torch.Tensor, List[int], List[str]]:
    """Read the train (5 batches) or test split: ``(uint8 images N x 3 x 32 x 32, labels, class names)``."""
    folder = Path(folder)
    meta = load_batch(folder / META_FILE)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get("label_names", [])]
    if not classes:
        raise ValueError(f"{folder / META_FILE} has no label_names")
    images, labels = [], []
    for name in TRAIN_FILES if train else TEST_FILES:
        batch = load_batch(folder / name)
        if "data" not in batch or "labels" not in batch:
            raise ValueError(f"{folder / name} lacks 'data' or 'labels'")
        data = torch.as_tensor(batch["data"])
        lab = [int(v) for v in batch["labels"]]
        if data.dtype != torch.uint8 or data.dim() != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(lab):
            raise ValueError(f"{folder / name}: expected uint8 data of shape (N, 3072) with N labels, got "
                             f"{data.dtype} {tuple(data.shape)} with {len(lab)} labels")
        if lab and (min(lab) < 0 or max(lab) >= len(classes)):
            raise ValueError(f"{folder / name}: labels must lie in [0, {len(classes)})")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.extend(lab)
    return torch.cat(images).contiguous(), labels, classes


class CIFAR10(Dataset):
    """CIFAR-10 as ``(image, label)`` pairs; images are ``uint8`` tensors of shape ``(3, 32, 32)``.

    Args:
        root: folder holding ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``; or an image folder
            (``train/<class>/*.jpg|png``, ``test/...``) or a ``.tar.gz`` of one (see image_folder.py). For the
            test split, a copy of it alone will do: ``test/`` without ``train/``, or ``cifar-10-batches-py/``
            with ``test_batch`` and ``batches.meta`` only.
        train: the 50,000 training images (True) or the 10,000 test images (False).
        transform: applied to the uint8 image tensor (see :mod:`fastconv.data.transforms`).
        target_transform: applied to the int label.
        download: fetch the archive from the official URL when it is missing.
    """

    def __init__(self, root: PathLike, train: bool = True, transform: Optional[Callable] = None,
                 target_transform: Optional[Callable] = None, download: bool = False) -> None:
        self.root = Path(root)
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        if is_image_folder_source(self.root):  # train/<class>/*.jpg and test/..., or a .tar.gz of them
            arrays = load_image_folder(self.root)
            split = "train" if train else "test"
            if f"{split}_images" not in arrays:
                raise ImageFolderError(f"{self.root} has no {split} images (no {split}/<class>/ folders of images)")
            self.folder = self.root
            self.data, self.targets = arrays[f"{split}_images"], arrays[f"{split}_labels"].tolist()
            self.classes = list(CLASSES)
        else:
            self.folder = prepare_cifar10(self.root, download=download, test_only=not train)
            self.data, self.targets, self.classes = load_split(self.folder, train)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        img, target = self.data[index], self.targets[index]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"CIFAR10({split}, {len(self)} images, root={str(self.root)!r})"



class _Split(Dataset):
    """Images ``indices`` of a loaded CIFAR10, with their own transform (shares the image tensor)."""

    def __init__(self, base: CIFAR10, indices: Sequence[int], transform: Optional[Callable]) -> None:
        self.base, self.indices, self.transform = base, list(indices), transform
        self.classes = base.classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        i = self.indices[index]
        img = self.base.data[i]
        return (self.transform(img) if self.transform is not None else img), self.base.targets[i]


def load_cifar10(root: PathLike, train_transform: Optional[Callable] = None,
                 eval_transform: Optional[Callable] = None, val_split: int = 0, seed: int = 0,
                 download: bool = True) -> Tuple[Dataset, Optional[Dataset], Dataset]:
    """``(train, val, test)`` datasets.  With ``val_split > 0`` that many training images (a fixed random
    choice given ``seed``) are held out as a validation set with ``eval_transform``; otherwise ``val`` is None.
    """
    train = CIFAR10(root, train=True, transform=train_transform, download=download)
    test = CIFAR10(root, train=False, transform=eval_transform, download=False)
    if val_split == 0:
        return train, None, test
    if not 0 < val_split < len(train):
        raise ValueError(f"val_split must be in [0, {len(train)}), got {val_split}")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    return (_Split(train, sorted(perm[val_split:]), train_transform),
            _Split(train, sorted(perm[:val_split]), eval_transform), test)
