"""Tests for pgsl_flower.data on the real MNIST and mini-MIAS files (no mocks)."""

from __future__ import annotations

import gzip
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pgsl_flower.data import (
    DATA_DIR_ENV,
    MIAS_CLASSES,
    DataError,
    ImageDataset,
    dataset_dir,
    download_mnist,
    load_dataset,
    load_mias,
    load_mnist,
    parse_info,
    partition_indices,
    read_idx,
    read_mias_image,
    resolve_data_root,
    split_mias_indices,
)

MNIST_GZ = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root, found the way the package finds it (never skipped)."""
    root = resolve_data_root()
    assert (root / "mnist").is_dir(), f"no mnist/ under {root}"
    assert (root / "mias").is_dir(), f"no mias/ under {root}"
    return root


@pytest.fixture(scope="session")
def mnist_test_labels(data_root: Path) -> np.ndarray:
    return load_dataset("mnist", data_root)[1].labels.numpy()


def make_mnist_root(tmp_path: Path, data_root: Path, replace: dict[str, bytes] | None = None,
                    drop: tuple[str, ...] = ()) -> Path:
    """A tmp data root whose mnist/ links to the real files, except replaced/dropped ones.

    ``replace`` maps a file name (``.gz`` or raw) to its new content; a raw name
    replaces the ``.gz`` of the same stem.
    """
    replace = replace or {}
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    for name in MNIST_GZ:
        if name in drop:
            continue
        if name in replace:
            (folder / name).write_bytes(replace[name])
        elif name[:-3] in replace:
            (folder / name[:-3]).write_bytes(replace[name[:-3]])
        else:
            (folder / name).symlink_to(data_root / "mnist" / name)
    return folder.parent


def real_bytes(data_root: Path, name: str) -> bytes:
    """Bytes of an MNIST file: ``name.gz`` as stored, or decompressed for a raw name."""
    if name.endswith(".gz"):
        return (data_root / "mnist" / name).read_bytes()
    return gzip.decompress((data_root / "mnist" / f"{name}.gz").read_bytes())


def flip(blob: bytes, pos: int) -> bytes:
    b = bytearray(blob)
    b[pos] ^= 0xFF
    return bytes(b)


# --------------------------------------------------------------------------- paths / types


def test_resolve_data_root_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert resolve_data_root() == data_root
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert resolve_data_root() == tmp_path.resolve()
    assert resolve_data_root(tmp_path / "x") == (tmp_path / "x").resolve()
    assert resolve_data_root("") == tmp_path.resolve()  # empty explicit = not given


def test_dataset_dir_missing_folder_lists_files_and_locations(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        dataset_dir("mnist", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "mnist") in msg
    assert "t10k-labels-idx1-ubyte.gz" in msg and DATA_DIR_ENV in msg
    with pytest.raises(DataError, match="Info.txt"):
        dataset_dir("mias", tmp_path)
    with pytest.raises(ValueError, match="mnist, mias"):
        dataset_dir("cifar", tmp_path)


def test_image_dataset_validation() -> None:
    imgs = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    ds = ImageDataset(imgs, torch.tensor([0, 1, 1]), ("a", "b"), "x")
    assert len(ds) == 3 and ds.class_counts() == {"a": 1, "b": 2}
    assert len(ds.subset([0, 2])) == 2
    with pytest.raises(ValueError, match="images"):
        ImageDataset(imgs.float(), torch.tensor([0, 1, 1]), ("a", "b"), "x")
    with pytest.raises(ValueError, match="images"):
        ImageDataset(imgs[:, 0], torch.tensor([0, 1, 1]), ("a", "b"), "x")
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(imgs, torch.tensor([0, 1]), ("a", "b"), "x")
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(imgs, torch.tensor([0, 1, 2]), ("a", "b"), "x")
    with pytest.raises(ValueError, match="classes"):
        ImageDataset(imgs, torch.tensor([0, 1, 1]), ["a", "b"], "x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- MNIST


def test_mnist_loads(data_root: Path) -> None:
    for split, n in (("train", 60000), ("test", 10000)):
        ds = load_mnist(data_root, split)
        assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == torch.uint8
        assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
        assert int(ds.labels.min()) == 0 and int(ds.labels.max()) == 9
        assert ds.classes == tuple("0123456789") and ds.name == f"mnist/{split}"
        assert int(ds.images.max()) == 255
    assert load_mnist(data_root, "train").class_counts()["1"] == 6742


def test_mnist_raw_files_load_with_uncompressed_md5(tmp_path: Path, data_root: Path) -> None:
    raw = {n: real_bytes(data_root, n) for n in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    root = make_mnist_root(tmp_path, data_root, replace=raw)
    assert (root / "mnist" / "t10k-images-idx3-ubyte").is_file()
    a, b = load_mnist(root, "test"), load_mnist(data_root, "test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_mnist_corrupt_gz(tmp_path: Path, data_root: Path) -> None:
    name = "t10k-images-idx3-ubyte.gz"
    blob = real_bytes(data_root, name)
    root = make_mnist_root(tmp_path, data_root, replace={name: flip(blob, len(blob) // 2)})
    bad = root / "mnist" / name
    with pytest.raises(DataError) as err:
        load_mnist(root, "test")
    assert str(bad) in str(err.value)
    assert "md5" in str(err.value) or "gzip" in str(err.value)
    with pytest.raises(DataError, match="gzip") as err:
        load_mnist(root, "test", verify_checksum=False)  # CRC / stream error, not zlib.error
    assert str(bad) in str(err.value)


def test_mnist_corrupt_raw_detected_by_md5(tmp_path: Path, data_root: Path) -> None:
    name = "t10k-images-idx3-ubyte"
    root = make_mnist_root(tmp_path, data_root, replace={name: flip(real_bytes(data_root, name), 5000)})
    with pytest.raises(DataError, match=r"corrupt: md5 [0-9a-f]{32}, expected 2646ac647ad5339dbf082846283269ea"):
        load_mnist(root, "test")
    assert load_mnist(root, "test", verify_checksum=False).images.shape == (10000, 1, 28, 28)


@pytest.mark.parametrize("verify", [True, False])
def test_mnist_truncated_gz(tmp_path: Path, data_root: Path, verify: bool) -> None:
    name = "t10k-images-idx3-ubyte.gz"
    blob = real_bytes(data_root, name)
    root = make_mnist_root(tmp_path, data_root, replace={name: blob[: len(blob) // 3]})
    with pytest.raises(DataError, match="truncated") as err:
        load_mnist(root, "test", verify_checksum=verify)
    msg = str(err.value)
    assert str(root / "mnist" / name) in msg and "7840016" in msg  # expected decompressed size
    if verify:
        assert "md5" in msg


def test_mnist_truncated_raw(tmp_path: Path, data_root: Path) -> None:
    name = "t10k-images-idx3-ubyte"
    root = make_mnist_root(tmp_path, data_root, replace={name: real_bytes(data_root, name)[:5_000_000]})
    with pytest.raises(DataError, match="truncated") as err:
        load_mnist(root, "test", verify_checksum=False)
    msg = str(err.value)
    assert str(root / "mnist" / name) in msg and "7840016" in msg and "5000000" in msg


def test_mnist_trailing_bytes(tmp_path: Path, data_root: Path) -> None:
    name = "t10k-labels-idx1-ubyte"
    root = make_mnist_root(tmp_path, data_root, replace={name: real_bytes(data_root, name) + b"\0\0"})
    with pytest.raises(DataError, match="trailing"):
        load_mnist(root, "test", verify_checksum=False)


def test_mnist_missing_file(tmp_path: Path, data_root: Path) -> None:
    root = make_mnist_root(tmp_path, data_root, drop=("t10k-labels-idx1-ubyte.gz",))
    with pytest.raises(DataError) as err:
        load_mnist(root, "train")  # the folder is checked as a whole
    msg = str(err.value)
    assert str(root / "mnist" / "t10k-labels-idx1-ubyte.gz") in msg and "Put" in msg


@pytest.mark.parametrize("verify", [True, False])
def test_mnist_wrong_magic(tmp_path: Path, data_root: Path, verify: bool) -> None:
    name = "t10k-labels-idx1-ubyte"
    blob = bytearray(real_bytes(data_root, name))
    blob[3] = 0x03  # 2049 -> 2051
    root = make_mnist_root(tmp_path, data_root, replace={name: bytes(blob)})
    with pytest.raises(DataError, match="magic number 2051, expected 2049") as err:
        load_mnist(root, "test", verify_checksum=verify)
    assert str(root / "mnist" / name) in str(err.value)
    # images file passed off as labels (gz): magic mismatch as well
    with pytest.raises(DataError, match="magic"):
        read_idx(data_root / "mnist" / "t10k-images-idx3-ubyte.gz", expected_magic=2049)


def test_mnist_count_mismatch_and_label_range(tmp_path: Path, data_root: Path) -> None:
    name = "t10k-labels-idx1-ubyte"
    blob = bytearray(real_bytes(data_root, name))
    short = bytes(blob[:4]) + (9999).to_bytes(4, "big") + bytes(blob[8:-1])
    root = make_mnist_root(tmp_path / "a", data_root, replace={name: short})
    with pytest.raises(DataError, match="10000 images .* 9999 labels"):
        load_mnist(root, "test", verify_checksum=False)
    blob[100] = 10
    root = make_mnist_root(tmp_path / "b", data_root, replace={name: bytes(blob)})
    with pytest.raises(DataError, match=r"outside 0\.\.9"):
        load_mnist(root, "test", verify_checksum=False)


def test_download_mnist_verifies_md5_from_local_mirror(tmp_path: Path, data_root: Path) -> None:
    name = "t10k-labels-idx1-ubyte.gz"
    bad_mirror = tmp_path / "bad"
    bad_mirror.mkdir()
    (bad_mirror / name).write_bytes(flip(real_bytes(data_root, name), 100))
    good = (data_root / "mnist").as_uri() + "/"
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="md5") as err:
        download_mnist(dest, mirrors=[bad_mirror.as_uri()], files=[name])
    assert str(dest / name) in str(err.value)
    assert not (dest / name).exists() and not list(dest.iterdir())  # nothing half-written left
    out = download_mnist(dest, mirrors=[bad_mirror.as_uri(), good], files=[name])
    assert out == [dest / name]
    assert (dest / name).read_bytes() == real_bytes(data_root, name)


def test_load_dataset_mnist_cached_and_resized(data_root: Path) -> None:
    a = load_dataset("mnist", data_root)
    assert load_dataset("mnist", str(data_root), image_size=0) is a
    tr, te = load_dataset("mnist", data_root, image_size=32)
    assert tr.images.shape == (60000, 1, 32, 32) and te.images.shape == (10000, 1, 32, 32)
    with pytest.raises(ValueError, match="mnist, mias"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("mnist", data_root, image_size=31)


# --------------------------------------------------------------------------- MIAS


def test_parse_info_counts(data_root: Path) -> None:
    labels = parse_info(data_root / "mias" / "Info.txt")
    assert len(labels) == 322 and list(labels) == [f"mdb{i:03d}" for i in range(1, 323)]
    assert Counter(labels.values()) == {"normal": 207, "benign": 63, "malignant": 52}
    assert labels["mdb144"] == "malignant"
    assert labels["mdb059"] == "benign"  # abnormal row without coordinates
    assert labels["mdb216"] == "malignant"  # *NOTE 3*
    assert labels["mdb226"] == "benign" and labels["mdb003"] == "normal"


def test_parse_info_pitfalls(tmp_path: Path) -> None:
    info = tmp_path / "Info.txt"
    info.write_bytes(
        b"header text mentioning mdb files\r\n\r\n"
        b"mdb001 G CIRC B 535 425 197   \r\n"
        b"mdb002 D NORM \r\n"
        b"mdb003 D CALC M *NOTE 3* \r\n"
        b"mdb004 F CIRC B\r\n"
        b"mdb004 F MISC M 1 2 3\r\n"
        b"mdb005 F CALC B 1 2 3\r\n"
        b"mdb005 F CALC B 4 5 6\r\n====\r\n"
    )
    assert parse_info(info) == {
        "mdb001": "benign", "mdb002": "normal", "mdb003": "malignant",
        "mdb004": "malignant", "mdb005": "benign",
    }


@pytest.mark.parametrize(
    "row, why",
    [
        ("mdb002 G CIRC X 522 280 69", "severity"),
        ("mdb002 G FOO B 522 280 69", "class"),
        ("mdb002 Q CIRC B 522 280 69", "background"),
        ("mdb002 G NORM B", "NORM"),
        ("mdb002 G CIRC B 522 280", "X Y RADIUS"),
        ("mdb02 G CIRC B 522 280 69", "mdbNNN"),
        ("mdb002 G", "at least"),
    ],
)
def test_parse_info_malformed_row(tmp_path: Path, data_root: Path, row: str, why: str) -> None:
    lines = (data_root / "mias" / "Info.txt").read_text().splitlines(keepends=True)
    lineno = next(i for i, l in enumerate(lines, 1) if l.startswith("mdb002 "))
    lines[lineno - 1] = row + "\n"
    info = tmp_path / "mias" / "Info.txt"
    info.parent.mkdir()
    info.write_text("".join(lines))
    with pytest.raises(DataError, match=why) as err:
        parse_info(info)
    msg = str(err.value)
    assert f"{info}, line {lineno}" in msg
    with pytest.raises(DataError, match=f"line {lineno}"):
        load_mias(tmp_path, image_size=8)


def test_parse_info_norm_and_abnormal_conflict(tmp_path: Path) -> None:
    info = tmp_path / "Info.txt"
    info.write_text("mdb001 G NORM\nmdb001 G CIRC B 1 2 3\n")
    with pytest.raises(DataError, match="line 2"):
        parse_info(info)
    info.write_text("no table here\n")
    with pytest.raises(DataError, match="no table rows"):
        parse_info(info)


def test_mias_missing_png(tmp_path: Path, data_root: Path) -> None:
    src = data_root / "mias"
    folder = tmp_path / "mias"
    folder.mkdir()
    shutil.copy(src / "Info.txt", folder / "Info.txt")
    for p in src.glob("mdb*.png"):
        if p.name != "mdb007.png":
            (folder / p.name).symlink_to(p)
    with pytest.raises(DataError) as err:
        load_mias(tmp_path, image_size=16)
    msg = str(err.value)
    assert str(folder / "mdb007.png") in msg and "mdb008" not in msg
    assert str(folder / "Info.txt") in msg


def test_mias_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Info.txt"):
        load_mias(tmp_path)


def test_load_mias_split(data_root: Path) -> None:
    train, test = load_mias(data_root, image_size=32, seed=0)
    assert train.classes == test.classes == MIAS_CLASSES == ("normal", "benign", "malignant")
    assert test.class_counts() == {"normal": 26, "benign": 12, "malignant": 12}
    assert train.class_counts() == {"normal": 181, "benign": 51, "malignant": 40}
    assert train.images.shape == (272, 1, 32, 32) and test.images.shape == (50, 1, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    tr_keys = {bytes(x.numpy()) for x in train.images}
    te_keys = {bytes(x.numpy()) for x in test.images}
    assert len(tr_keys) == 272 and len(te_keys) == 50 and not tr_keys & te_keys

    train2, test2 = load_mias(data_root, image_size=32, seed=0)
    assert torch.equal(train.images, train2.images) and torch.equal(test.labels, test2.labels)
    _, test3 = load_mias(data_root, image_size=32, seed=1)
    assert {bytes(x.numpy()) for x in test3.images} != te_keys
    assert test3.class_counts() == test.class_counts()


def test_split_mias_indices_disjoint_complete() -> None:
    labels = np.array([0] * 207 + [1] * 63 + [2] * 52)
    tr, te = split_mias_indices(labels, seed=3)
    assert np.intersect1d(tr, te).size == 0
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(322))
    assert np.bincount(labels[te]).tolist() == [26, 12, 12]
    with pytest.raises(ValueError, match="malignant"):
        split_mias_indices(labels[:-45], seed=0)


def test_read_mias_image_resize_and_checks(tmp_path: Path, data_root: Path) -> None:
    png = data_root / "mias" / "mdb001.png"
    full = np.asarray(Image.open(png))
    a8 = read_mias_image(png, 8)
    assert a8.shape == (8, 8) and a8.dtype == np.uint8
    # integer factor: box average of 128x128 blocks (within rounding)
    box = full.reshape(8, 128, 8, 128).mean(axis=(1, 3))
    assert np.abs(a8.astype(float) - box).max() <= 1.0
    assert read_mias_image(png, 100).shape == (100, 100)  # non-integer factor
    for bad in (7, 31, 6, True):
        with pytest.raises(ValueError, match="image_size"):
            read_mias_image(png, bad)  # type: ignore[arg-type]
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (64, 64)).save(rgb)
    with pytest.raises(DataError, match="grayscale") as err:
        read_mias_image(rgb, 32)
    assert str(rgb) in str(err.value)
    rect = tmp_path / "rect.png"
    Image.new("L", (64, 32)).save(rect)
    with pytest.raises(DataError, match="square"):
        read_mias_image(rect, 32)
    junk = tmp_path / "junk.png"
    junk.write_bytes(png.read_bytes()[:5000])
    with pytest.raises(DataError, match="junk.png"):
        read_mias_image(junk, 32)


def test_load_dataset_mias_cached(data_root: Path) -> None:
    a = load_dataset("mias", data_root, image_size=32, seed=0)
    assert load_dataset("mias", data_root, image_size=32, seed=0) is a
    b = load_dataset("mias", data_root, image_size=32, seed=1)
    assert b is not a and len(b[1]) == 50


# --------------------------------------------------------------------------- partitions


def _check_disjoint_complete(parts: list[np.ndarray], n: int) -> None:
    allidx = np.concatenate(parts)
    assert allidx.size == n and np.array_equal(np.sort(allidx), np.arange(n))
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)


def _label_skew(parts: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean total-variation distance between partition and global label histograms."""
    k = int(labels.max()) + 1
    glob = np.bincount(labels, minlength=k) / labels.size
    tvs = [0.5 * np.abs(np.bincount(labels[p], minlength=k) / max(p.size, 1) - glob).sum() for p in parts]
    return float(np.mean(tvs))


def test_partition_iid(mnist_test_labels: np.ndarray) -> None:
    labels = mnist_test_labels
    parts = partition_indices(labels, 7, "iid", seed=0)
    assert len(parts) == 7
    _check_disjoint_complete(parts, labels.size)
    assert max(p.size for p in parts) - min(p.size for p in parts) <= 1
    assert not np.array_equal(parts[0], np.arange(parts[0].size))  # shuffled, not contiguous
    again = partition_indices(labels, 7, "iid", seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = partition_indices(labels, 7, "iid", seed=1)
    assert not np.array_equal(parts[0], other[0])
    assert _label_skew(parts, labels) < 0.05


def test_partition_dirichlet(mnist_test_labels: np.ndarray) -> None:
    labels = mnist_test_labels
    parts = partition_indices(labels, 10, "dirichlet", alpha=0.1, seed=0, min_partition_size=20)
    _check_disjoint_complete(parts, labels.size)
    assert min(p.size for p in parts) >= 20
    again = partition_indices(labels, 10, "dirichlet", alpha=0.1, seed=0, min_partition_size=20)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = partition_indices(labels, 10, "dirichlet", alpha=0.1, seed=1, min_partition_size=20)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other))
    iid = partition_indices(labels, 10, "iid", seed=0)
    assert _label_skew(parts, labels) > 0.3 > 0.05 > _label_skew(iid, labels)


def test_partition_returns_copies(mnist_test_labels: np.ndarray) -> None:
    parts = partition_indices(mnist_test_labels, 3)
    orig = [p.copy() for p in parts]
    parts[0][:] = 0  # mutating a result must not poison the cache
    fresh = partition_indices(mnist_test_labels, 3)
    assert all(np.array_equal(a, b) for a, b in zip(orig, fresh))
    _check_disjoint_complete(fresh, mnist_test_labels.size)


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"num_partitions": 0}, "num_partitions"),
        ({"num_partitions": 11}, "num_partitions"),
        ({"num_partitions": 2, "alpha": 0.0, "partitioner": "dirichlet"}, "alpha"),
        ({"num_partitions": 2, "alpha": -1.0}, "alpha"),
        ({"num_partitions": 2, "partitioner": "shards"}, "partitioner"),
        ({"num_partitions": 2, "min_partition_size": 6}, "min_partition_size"),
    ],
)
def test_partition_validation(kwargs: dict, arg: str) -> None:
    labels = np.arange(10) % 3
    with pytest.raises(ValueError, match=arg):
        partition_indices(labels, **kwargs)
