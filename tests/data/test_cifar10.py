"""fastconv.data: CIFAR-10 files, download/checksum/extraction safety, synthetic data, transforms."""

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fastconv.data import (ARCHIVE_NAME, BASE_FOLDER, CIFAR10, ChecksumError, Compose, DatasetNotFoundError, Normalize,
                           RandomCrop, RandomHorizontalFlip, Resize, ToFloat, UnsafeArchiveError, download_file,
                           load_batch, load_cifar10, md5sum, prepare_cifar10, safe_extract,
                           write_synthetic_cifar10)
import hashlib


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return write_synthetic_cifar10(tmp_path_factory.mktemp("cifar"), num_train=53, num_test=20, make_archive=True)


def _md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def test_synthetic_files_have_the_official_layout(synthetic_root):
    folder = synthetic_root / BASE_FOLDER
    names = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".json"))
    assert names == ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                     "test_batch"]
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")  # how the official files are read
    assert isinstance(raw["data"], np.ndarray) and raw["data"].dtype == np.uint8 and raw["data"].shape[1] == 3072
    assert len(raw["labels"]) == raw["data"].shape[0]
    sizes = [len(load_batch(folder / f"data_batch_{i}")["labels"]) for i in range(1, 6)]
    assert sum(sizes) == 53 and max(sizes) - min(sizes) <= 1


def test_cifar10_dataset(synthetic_root):
    train, test = CIFAR10(synthetic_root, train=True), CIFAR10(synthetic_root, train=False)
    assert (len(train), len(test)) == (53, 20)
    img, label = train[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32)
    assert isinstance(label, int) and 0 <= label < 10
    assert train.classes[:2] == ["airplane", "automobile"] and len(train.classes) == 10
    assert sorted(set(test.targets)) == list(range(10))
    # row layout: the 3072 bytes are R plane, G plane, B plane, each 32x32 row-major
    raw = load_batch(synthetic_root / BASE_FOLDER / "data_batch_1")
    assert torch.equal(train.data[0, 1], torch.from_numpy(raw["data"][0, 1024:2048].reshape(32, 32)))
    # a transform is applied to the uint8 image
    t = CIFAR10(synthetic_root, train=False, transform=ToFloat())
    assert t[3][0].dtype == torch.float32 and torch.allclose(t[3][0] * 255, test[3][0].float())


def test_test_batch_alone_gives_the_test_set(tmp_path, synthetic_root):
    """cifar-10-batches-py/ with test_batch and batches.meta only: enough for the test split (evaluating a
    checkpoint), not for the training split, which names the missing batches."""
    folder = tmp_path / BASE_FOLDER
    folder.mkdir()
    for name in ("test_batch", "batches.meta"):
        (folder / name).write_bytes((synthetic_root / BASE_FOLDER / name).read_bytes())
    test = CIFAR10(tmp_path, train=False)
    assert torch.equal(test.data, CIFAR10(synthetic_root, train=False).data) and len(test) == 20
    with pytest.raises(DatasetNotFoundError, match="missing data_batch_1"):
        CIFAR10(tmp_path, train=True)


def test_python2_style_pickles_load(tmp_path):
    data = {b"data": np.arange(3072 * 2, dtype=np.int64).astype(np.uint8).reshape(2, 3072), b"labels": [1, 2]}
    blob = pickle.dumps(data, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    (tmp_path / "b").write_bytes(blob)
    out = load_batch(tmp_path / "b")
    assert out["labels"] == [1, 2] and out["data"].shape == (2, 3072)


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "evil").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        load_batch(tmp_path / "evil")


def test_extracts_local_archive(tmp_path, synthetic_root):
    archive = synthetic_root / ARCHIVE_NAME
    (tmp_path / ARCHIVE_NAME).write_bytes(archive.read_bytes())
    folder = prepare_cifar10(tmp_path, download=False, md5=_md5(archive))
    assert folder == tmp_path / BASE_FOLDER
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        assert (folder / name).read_bytes() == (synthetic_root / BASE_FOLDER / name).read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_download_checks_md5_and_extracts(tmp_path, synthetic_root):
    archive = synthetic_root / ARCHIVE_NAME
    folder = prepare_cifar10(tmp_path / "d", download=True, url=archive.as_uri(), md5=_md5(archive), progress=False)
    assert (folder / "data_batch_5").is_file() and (tmp_path / "d" / ARCHIVE_NAME).is_file()
    assert len(CIFAR10(tmp_path / "d", train=False)) == 20


def test_corrupted_download_fails_checksum_and_leaves_nothing(tmp_path, synthetic_root):
    good = synthetic_root / ARCHIVE_NAME
    blob = bytearray(good.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    bad = tmp_path / "served" / ARCHIVE_NAME
    bad.parent.mkdir()
    bad.write_bytes(bytes(blob))
    root = tmp_path / "root"
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        prepare_cifar10(root, download=True, url=bad.as_uri(), md5=_md5(good), progress=False)
    assert list(root.iterdir()) == []  # no archive, no temporary file
    with pytest.raises(ChecksumError):
        download_file(bad.as_uri(), tmp_path / "x.tar.gz", md5=_md5(good), progress=False)
    assert not (tmp_path / "x.tar.gz").exists()


def test_corrupted_local_archive_fails_checksum_and_is_kept(tmp_path, synthetic_root):
    good = synthetic_root / ARCHIVE_NAME
    blob = bytearray(good.read_bytes())
    blob[100] ^= 0x01
    (tmp_path / ARCHIVE_NAME).write_bytes(bytes(blob))
    with pytest.raises(ChecksumError, match="corrupted"):
        prepare_cifar10(tmp_path, download=True, md5=_md5(good))
    assert (tmp_path / ARCHIVE_NAME).read_bytes() == bytes(blob)  # the user's file is not deleted
    assert not (tmp_path / BASE_FOLDER).exists()


def test_offline_error_says_where_to_put_the_files(tmp_path):
    url = (tmp_path / "nowhere" / ARCHIVE_NAME).as_uri()  # unreachable, like a machine without internet
    with pytest.raises(DatasetNotFoundError) as info:
        prepare_cifar10(tmp_path / "data", download=True, url=url, md5="0" * 32, progress=False)
    msg = str(info.value)
    assert url in msg and str(tmp_path / "data" / ARCHIVE_NAME) in msg and "data_batch_1" in msg
    with pytest.raises(DatasetNotFoundError, match="download disabled"):
        CIFAR10(tmp_path / "data", download=False)


def test_incomplete_folder_is_an_error_not_overwritten(tmp_path):
    (tmp_path / BASE_FOLDER).mkdir()
    (tmp_path / BASE_FOLDER / "data_batch_1").write_bytes(b"mine")
    with pytest.raises(DatasetNotFoundError, match="incomplete"):
        prepare_cifar10(tmp_path, download=False)
    assert (tmp_path / BASE_FOLDER / "data_batch_1").read_bytes() == b"mine"


def _tar_with(path, name, payload=b"x", kind=tarfile.REGTYPE, linkname=""):
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("cifar-10-batches-py/readme.html")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        info.size = len(payload) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize("name,kind,linkname", [
    ("../escaped.txt", tarfile.REGTYPE, ""),
    ("cifar-10-batches-py/../../escaped.txt", tarfile.REGTYPE, ""),
    ("/tmp/absolute-escaped.txt", tarfile.REGTYPE, ""),
    ("cifar-10-batches-py/link", tarfile.SYMTYPE, "../../escaped.txt"),
    ("cifar-10-batches-py/hard", tarfile.LNKTYPE, "/etc/passwd"),
    ("cifar-10-batches-py/fifo", tarfile.FIFOTYPE, ""),
])
def test_unsafe_tar_members_are_refused(tmp_path, name, kind, linkname):
    archive = _tar_with(tmp_path / "evil.tar.gz", name, kind=kind, linkname=linkname)
    dest = tmp_path / "out" / "inner"
    dest.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == []  # nothing extracted, not even the harmless member
    assert not (tmp_path / "out" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    # and through the dataset entry point, with a matching checksum
    root = tmp_path / "root"
    root.mkdir()
    (root / ARCHIVE_NAME).write_bytes(archive.read_bytes())
    with pytest.raises(UnsafeArchiveError):
        prepare_cifar10(root, download=False, md5=md5sum(archive))
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVE_NAME]


def test_synthetic_writer_never_overwrites_real_data(tmp_path):
    (tmp_path / BASE_FOLDER).mkdir()
    (tmp_path / BASE_FOLDER / "data_batch_1").write_bytes(b"real")
    with pytest.raises(FileExistsError, match="refusing"):
        write_synthetic_cifar10(tmp_path, num_train=10, num_test=5)
    assert (tmp_path / BASE_FOLDER / "data_batch_1").read_bytes() == b"real"


def test_synthetic_is_deterministic_and_reused(tmp_path):
    a = write_synthetic_cifar10(tmp_path / "a", num_train=20, num_test=10, seed=3, make_archive=True)
    b = write_synthetic_cifar10(tmp_path / "b", num_train=20, num_test=10, seed=3, make_archive=True)
    assert md5sum(a / ARCHIVE_NAME) == md5sum(b / ARCHIVE_NAME)
    before = (a / BASE_FOLDER / "test_batch").stat().st_mtime_ns
    write_synthetic_cifar10(tmp_path / "a", num_train=20, num_test=10, seed=3)
    assert (a / BASE_FOLDER / "test_batch").stat().st_mtime_ns == before
    c = write_synthetic_cifar10(tmp_path / "a", num_train=25, num_test=10, seed=3)  # other settings: rewritten
    assert len(CIFAR10(c, train=True)) == 25
    with pytest.raises(ValueError):
        write_synthetic_cifar10(tmp_path / "z", num_train=2, num_test=1)


def test_val_split(synthetic_root):
    train, val, test = load_cifar10(synthetic_root, val_split=13, seed=1, download=False)
    assert (len(train), len(val), len(test)) == (40, 13, 20)
    full = CIFAR10(synthetic_root, train=True)
    seen = {tuple(train[i][0].flatten()[:64].tolist()) for i in range(len(train))}
    seen |= {tuple(val[i][0].flatten()[:64].tolist()) for i in range(len(val))}
    assert len(seen) == len(full)  # disjoint and complete
    with pytest.raises(ValueError):
        load_cifar10(synthetic_root, val_split=53, download=False)


def test_random_crop_is_a_window_of_the_padded_image():
    img = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(3, 32, 32) + 1
    padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
    crop = RandomCrop(32, padding=4)
    torch.manual_seed(0)
    offsets = set()
    for _ in range(200):
        out = crop(img)
        assert out.shape == (3, 32, 32)
        hits = [(i, j) for i in range(9) for j in range(9) if torch.equal(out, padded[:, i:i + 32, j:j + 32])]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 40  # positions vary over the 9x9 possible offsets
    torch.manual_seed(5)
    a = crop(img)
    torch.manual_seed(5)
    assert torch.equal(a, crop(img))  # reproducible from torch's RNG
    assert RandomCrop(32, padding=4)(img.to(torch.uint8)).dtype == torch.uint8


def test_flip_tofloat_normalize_resize():
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert torch.equal(RandomHorizontalFlip(1.0)(img), img.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(img), img)
    torch.manual_seed(0)
    flips = sum(torch.equal(RandomHorizontalFlip(0.5)(img), img.flip(-1)) for _ in range(400))
    assert 150 < flips < 250
    f = ToFloat()(img)
    assert f.dtype == torch.float32 and torch.allclose(f, img.float() / 255)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    n = Normalize(mean, std)(f)
    assert torch.allclose(n[2], (f[2] - 0.3) / 2.0)
    batch = Normalize(mean, std)(f.unsqueeze(0).repeat(2, 1, 1, 1))
    assert torch.allclose(batch[1], n)
    r = Resize(64)(f.unsqueeze(0))
    assert r.shape == (1, 3, 64, 64) and Resize(32)(f) is f
    pipeline = Compose([ToFloat(), Normalize(mean, std)])
    assert torch.allclose(pipeline(img), n)


def test_transform_errors_are_clear():
    with pytest.raises(TypeError, match="ToFloat first"):
        Normalize((0.5,) * 3, (0.5,) * 3)(torch.zeros(3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="channels"):
        Normalize((0.5,) * 3, (0.5,) * 3)(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="positive"):
        Normalize((0.5,), (0.0,))
    with pytest.raises(ValueError, match="larger"):
        RandomCrop(40)(torch.zeros(3, 32, 32))
    with pytest.raises(TypeError, match="torch.Tensor"):
        ToFloat()(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError):
        RandomHorizontalFlip(1.5)
