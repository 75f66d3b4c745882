"""CIFAR-10 from image folders (fastconv/data/image_folder.py), on small generated JPEG / PNG folders."""
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from fastconv.data import CIFAR10, ImageFolderError, load_image_folder
from fastconv.data.image_folder import CLASSES, cache_path

from helpers.image_folders import write_folder


def test_png_folder_labels_and_order(tmp_path):
    """Labels follow CIFAR-10's class order; images come back exactly, as uint8 N x 3 x 32 x 32."""
    written = write_folder(tmp_path / "cifar")
    arrays = load_image_folder(tmp_path / "cifar", progress=False)
    assert arrays["train_images"].shape == (30, 3, 32, 32) and arrays["train_images"].dtype == torch.uint8
    assert arrays["train_labels"].tolist() == [c for c in range(10) for _ in range(3)]
    assert arrays["test_labels"].tolist() == [c for c in range(10) for _ in range(2)]
    expected = np.stack([a for name in CLASSES for a in written[("train", name)]])
    assert torch.equal(arrays["train_images"], torch.from_numpy(expected).permute(0, 3, 1, 2))


def test_jpeg_tarball_and_dataset(tmp_path):
    """A .tar.gz with a top folder, JPEG images: CIFAR10(root) reads it like the official format."""
    write_folder(tmp_path / "src" / "cifar10-jpg", suffix=".jpg")
    archive = tmp_path / "cifar10-jpg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar10-jpg", arcname="cifar10-jpg")
    train, test = CIFAR10(archive, train=True), CIFAR10(archive, train=False)
    assert (len(train), len(test)) == (30, 20) and train.classes == list(CLASSES)
    image, label = train[29]
    assert image.shape == (3, 32, 32) and label == 9
    assert cache_path(archive).is_file()


def test_cache_is_reused_and_rebuilt_when_the_source_changes(tmp_path, monkeypatch):
    write_folder(tmp_path / "cifar")
    first = load_image_folder(tmp_path / "cifar", progress=False)
    from fastconv.data import image_folder
    monkeypatch.setattr(image_folder, "decode_image_folder", lambda *a, **k: pytest.fail("decoded again"))
    assert torch.equal(load_image_folder(tmp_path / "cifar", progress=False)["train_images"], first["train_images"])
    monkeypatch.undo()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "cifar" / "train" / "cat" / "0099.png")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "cifar" / "train" / "dog" / "0099.png")
    with pytest.raises(ImageFolderError, match="unequal classes"):  # the source changed: decoded again
        load_image_folder(tmp_path / "cifar", progress=False)


def test_corrupt_image_is_named(tmp_path):
    write_folder(tmp_path / "cifar")
    bad = tmp_path / "cifar" / "test" / "frog" / "0001.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageFolderError, match=str(bad)):
        load_image_folder(tmp_path / "cifar", progress=False)
    assert not cache_path(tmp_path / "cifar").exists()


def test_missing_and_unknown_classes(tmp_path):
    write_folder(tmp_path / "nine", classes=CLASSES[:9])
    with pytest.raises(ImageFolderError, match="has no images of truck"):
        load_image_folder(tmp_path / "nine", progress=False)
    write_folder(tmp_path / "extra", classes=CLASSES + ("unicorn",))
    with pytest.raises(ImageFolderError, match="unicorn"):
        load_image_folder(tmp_path / "extra", progress=False)


def test_wrong_image_size_is_named(tmp_path):
    write_folder(tmp_path / "cifar")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "cifar" / "train" / "cat" / "0001.png")
    with pytest.raises(ImageFolderError, match="0001.png: expected a 32x32 image, got 16x16"):
        load_image_folder(tmp_path / "cifar", progress=False)


KILL_SCRIPT = """
import os, signal, sys, numpy as np
import fastconv.data.image_folder as f
real_savez = np.savez
def savez_then_die(file, **arrays):
    real_savez(file, **arrays)
    os.kill(os.getpid(), signal.SIGKILL)  # killed after writing, before the rename
f.np.savez = savez_then_die
f.load_image_folder(sys.argv[1], progress=False)
"""


def test_killed_while_caching_leaves_no_cache(tmp_path):
    write_folder(tmp_path / "cifar")
    result = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "cifar")], timeout=300)
    assert result.returncode == -9
    assert not cache_path(tmp_path / "cifar").exists()
    arrays = load_image_folder(tmp_path / "cifar", progress=False)  # a later run decodes and caches
    assert arrays["train_images"].shape[0] == 30 and cache_path(tmp_path / "cifar").is_file()


def test_read_only_source_folder_caches_elsewhere(tmp_path, monkeypatch):
    """shared/ is read-only in CI: the cache then goes to $XDG_CACHE_HOME/fastconv (~/.cache/fastconv)."""
    from fastconv.data import image_folder
    write_folder(tmp_path / "cifar")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(image_folder.os, "access", lambda path, mode: False)  # root may write anywhere
    load_image_folder(tmp_path / "cifar", progress=False)
    assert cache_path(tmp_path / "cifar").parent == tmp_path / "cache" / "fastconv"
    assert cache_path(tmp_path / "cifar").is_file() and not (tmp_path / "cifar.uint8.npz").exists()


@pytest.mark.parametrize("archived", [False, True])
def test_a_test_split_alone_is_enough_for_the_test_set(tmp_path, archived):
    """A copy of the test split alone (test/<class>/, as a folder or .tar.gz): the test set loads, asking for the
    training set names what is missing."""
    import shutil
    written = write_folder(tmp_path / "cifar", suffix=".png")
    shutil.rmtree(tmp_path / "cifar" / "train")
    source = tmp_path / "cifar"
    if archived:
        source = tmp_path / "test-only.tar.gz"
        with tarfile.open(source, "w:gz") as tar:
            tar.add(tmp_path / "cifar", arcname="cifar")
    test = CIFAR10(source, train=False)
    expected = np.stack([a for name in CLASSES for a in written[("test", name)]])
    assert torch.equal(test.data, torch.from_numpy(expected).permute(0, 3, 1, 2))
    assert test.targets == [c for c in range(10) for _ in range(2)]
    with pytest.raises(ImageFolderError, match="has no train images"):
        CIFAR10(source, train=True)


def test_split_folders_without_images_are_an_error(tmp_path):
    for split in ("train", "test"):
        (tmp_path / "empty" / split / "cat").mkdir(parents=True)
    with pytest.raises(ImageFolderError, match="no images in train/<class>/ or test/<class>/"):
        load_image_folder(tmp_path / "empty", progress=False)
