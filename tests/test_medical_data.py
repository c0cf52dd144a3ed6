"""MIAS preprocessing, cross-validation folds and ROI patches, and the BreastMNIST loader, on the real files."""

from __future__ import annotations

import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pgsl_flower.augmentation import Augmentation, augmentation_for
from pgsl_flower.config import parse_run_config
from pgsl_flower.data import (
    BREASTMNIST_CLASSES,
    MIAS_CLASSES,
    DataError,
    fold_assignment,
    load_breastmnist,
    load_dataset,
    load_mias,
    load_mias_roi,
    parse_abnormalities,
    parse_info,
    resolve_data_root,
)
from pgsl_flower.data.breast_region import TISSUE_THRESHOLD, breast_mask, crop_breast, faces_right
from pgsl_flower.data.breastmnist import _read_split
from pgsl_flower.data.mias import patient_of
from pgsl_flower.data.mias_roi import roi_patches
from pgsl_flower.local_data import balanced_batch_indices


@pytest.fixture(scope="module")
def root() -> Path:
    return resolve_data_root()


def _image(root: Path, ref: str) -> np.ndarray:
    return np.asarray(Image.open(root / "mias" / f"{ref}.png"))


# --------------------------------------------------------------------------- breast region


@pytest.mark.parametrize("ref", ["mdb001", "mdb002", "mdb133", "mdb210"])
def test_crop_puts_the_chest_wall_left_and_drops_background(root: Path, ref: str):
    image = _image(root, ref)
    mask = breast_mask(image)
    assert 0.1 < mask.mean() < 0.95  # a breast, not the whole film nor nothing
    out = crop_breast(image)
    assert out.shape[0] == out.shape[1] and out.dtype == np.uint8
    quarter = out.shape[1] // 4
    assert out[:, :quarter].mean() > out[:, -quarter:].mean()  # chest wall on the left
    tissue = out > TISSUE_THRESHOLD
    rows, cols = np.flatnonzero(tissue.any(1)), np.flatnonzero(tissue.any(0))
    side = out.shape[0]
    # the breast spans the square along its longer side (no margin of film left) and starts at the left edge
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) >= 0.9 * side and cols[0] <= 0.02 * side
    mirrored_only = crop_breast(image, crop=False)
    assert mirrored_only.shape == image.shape
    assert np.array_equal(mirrored_only, image[:, ::-1] if faces_right(mask) else image)


def test_laterality_splits_the_left_right_pairs(root: Path):
    # mini-MIAS pairs are the two breasts of one woman: one image of each pair faces each way
    sides = [faces_right(breast_mask(_image(root, f"mdb{i:03d}"))) for i in range(1, 21)]
    assert all(sides[i] != sides[i + 1] for i in range(0, 20, 2))


def test_load_mias_with_crop_keeps_images_and_labels_in_order(root: Path):
    plain_train, plain_test = load_mias(root, image_size=32, seed=0)
    train, test = load_mias(root, image_size=32, seed=0, crop=True, laterality=True)
    assert torch.equal(train.labels, plain_train.labels) and torch.equal(test.labels, plain_test.labels)
    assert train.images.shape == plain_train.images.shape

    def facing_left(images: torch.Tensor) -> float:
        x = images.float()
        return float((x[..., :8].mean((1, 2, 3)) > x[..., -8:].mean((1, 2, 3))).float().mean())

    assert facing_left(train.images) > 0.95 and facing_left(plain_train.images) < 0.7


# --------------------------------------------------------------------------- folds


@pytest.mark.parametrize("seed", [1, 2])
def test_folds_are_disjoint_complete_stratified_and_keep_patients_together(root: Path, seed: int):
    labels = parse_info(root / "mias" / "Info.txt")
    refs = list(labels)
    y = np.array([MIAS_CLASSES.index(labels[r]) for r in refs])
    groups = np.array([patient_of(r) for r in refs])
    fold_of = fold_assignment(y, groups, 5, seed)
    assert sorted(Counter(fold_of.tolist())) == [0, 1, 2, 3, 4] and len(fold_of) == 322
    for k in range(5):
        counts = np.bincount(y[fold_of == k], minlength=3)
        assert np.all(np.abs(counts - np.bincount(y) / 5) <= 3), f"fold {k}: {counts}"
    for patient in np.unique(groups):
        assert len(set(fold_of[groups == patient])) == 1
    tests = []
    for k in range(5):
        train, test = load_mias(root, image_size=16, seed=seed, fold=k)
        assert len(train) + len(test) == 322
        tests.append({bytes(x.numpy()) for x in test.images})
    assert sum(len(t) for t in tests) == len(set().union(*tests))  # each image tested once
    assert not np.array_equal(fold_of, fold_assignment(y, groups, 5, seed + 10))
    with pytest.raises(ValueError, match="fold"):
        load_dataset("mias", root, image_size=16, fold=5)
    with pytest.raises(ValueError, match="fixed train/test split"):
        load_dataset("breastmnist", root, fold=0)


# --------------------------------------------------------------------------- ROI patches


def test_roi_patches_sit_on_the_annotations(root: Path):
    lesions = parse_abnormalities(root / "mias" / "Info.txt")
    assert len(lesions) == 119 and {lesion.severity for lesion in lesions} == {"benign", "malignant"}
    patches = roi_patches(str(root / "mias"), 64, 64, False)  # native pixels, no mirror: exact crops
    labels = parse_info(root / "mias" / "Info.txt")
    assert Counter(patches.labels.tolist()) == {0: 207, 1: sum(l.severity == "benign" for l in lesions),
                                                2: sum(l.severity == "malignant" for l in lesions)}
    first = lesions[0]
    index = patches.sources.index(first.ref)
    assert tuple(patches.centres[index]) == (1023 - first.y, first.x)
    row, col = 1023 - first.y, first.x
    top, left = min(max(row - 32, 0), 960), min(max(col - 32, 0), 960)
    assert np.array_equal(patches.images[index], _image(root, first.ref)[top : top + 64, left : left + 64])
    normal = [i for i, r in enumerate(patches.sources) if labels[r] == "normal"][:5]
    for i in normal:  # mostly breast tissue
        assert (patches.images[i] > 10).mean() > 0.5


@pytest.mark.parametrize("fold", [-1, 0, 3])
def test_no_image_gives_patches_to_both_sides_of_a_split(root: Path, fold: int):
    train, test = load_mias_roi(root, image_size=32, seed=1, fold=fold)
    patches = roi_patches(str(root / "mias"), 256, 32, True)
    keys = {bytes(p.tobytes()): r for p, r in zip(patches.images, patches.sources, strict=True)}
    train_refs = {keys[bytes(x.numpy().tobytes())] for x in train.images}
    test_refs = {keys[bytes(x.numpy().tobytes())] for x in test.images}
    assert train_refs and test_refs and not train_refs & test_refs
    assert len(train) + len(test) == len(patches.labels)
    assert set(test.labels.tolist()) == {0, 1, 2}


# --------------------------------------------------------------------------- BreastMNIST


def test_breastmnist_official_splits(root: Path):
    train, test = load_dataset("breastmnist", root)
    assert train.classes == BREASTMNIST_CLASSES == ("malignant", "normal-or-benign")
    assert train.images.shape == (546, 1, 28, 28) and test.images.shape == (156, 1, 28, 28)
    assert train.class_counts() == {"malignant": 147, "normal-or-benign": 399}
    assert test.class_counts() == {"malignant": 42, "normal-or-benign": 114}
    assert len(load_breastmnist(root, "val")) == 78
    assert load_dataset("breastmnist", root, image_size=32)[0].images.shape == (546, 1, 32, 32)


def _copy_root(tmp_path: Path, root: Path) -> Path:
    folder = tmp_path / "medmnist"
    folder.mkdir()
    shutil.copy(root / "medmnist" / "breastmnist.npz", folder / "breastmnist.npz")
    return folder / "breastmnist.npz"


def test_breastmnist_missing_corrupt_or_altered_file_names_it(tmp_path: Path, root: Path):
    with pytest.raises(DataError, match="medmnist") as err:
        load_breastmnist(tmp_path)
    assert "breastmnist.npz" in str(err.value)
    path = _copy_root(tmp_path, root)
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(DataError, match="md5") as err:
        load_breastmnist(tmp_path)
    assert str(path) in str(err.value)
    data[-100] ^= 0xFF  # one byte altered
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="md5"):
        load_breastmnist(tmp_path)


def test_breastmnist_array_checks_name_the_array(tmp_path: Path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((546, 28, 27), np.uint8), train_labels=np.zeros((546, 1), np.uint8))
    with np.load(bad) as arrays, pytest.raises(DataError, match="train_images"):
        _read_split(bad, arrays, "train")
    np.savez(bad, train_images=np.zeros((546, 28, 28), np.uint8), train_labels=np.full((546, 1), 2, np.uint8))
    with np.load(bad) as arrays, pytest.raises(DataError, match="train_labels"):
        _read_split(bad, arrays, "train")
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    with np.load(tmp_path / "empty.npz") as arrays, pytest.raises(DataError, match="missing"):
        _read_split(tmp_path / "empty.npz", arrays, "test")


# --------------------------------------------------------------------------- recipe parts


def test_augmentation_is_seeded_and_warps_maps_like_images():
    aug = Augmentation(hflip=True, vflip=True, max_shift=0.1, max_rotation=15, contrast=0.1, brightness=0.1)
    images = torch.rand(8, 1, 32, 32)
    a, _ = aug.apply(images, seed=3)
    b, _ = aug.apply(images, seed=3)
    c, _ = aug.apply(images, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    geometric = Augmentation(hflip=True, vflip=True, max_shift=0.1, max_rotation=15)
    warped, maps = geometric.apply(images, seed=5, maps=images.clone())
    assert torch.allclose(warped, maps)  # the same warp
    flips = Augmentation(hflip=True)
    flipped, _ = flips.apply(images, seed=1)
    assert all(torch.equal(f, x) or torch.equal(f, x.flip(-1)) for f, x in zip(flipped, images, strict=True))


def test_augmentation_defaults_per_dataset():
    assert augmentation_for(parse_run_config({"dataset": "mnist"})) is None
    mias = augmentation_for(parse_run_config({"dataset": "mias"}))
    assert mias is not None and mias.vflip and not mias.hflip  # chest wall stays left
    ultrasound = augmentation_for(parse_run_config({"dataset": "breastmnist"}))
    assert ultrasound.hflip and not ultrasound.vflip  # skin stays at the top
    assert augmentation_for(parse_run_config({"dataset": "mias", "augment": "none"})) is None


def test_balanced_sampling_draws_classes_equally():
    labels = torch.tensor([0] * 90 + [1] * 10)
    drawn = torch.cat([balanced_batch_indices(labels, 10, counter, seed=1) for counter in range(200)])
    share = float((labels[drawn] == 1).float().mean())
    assert 0.45 < share < 0.55
    assert torch.equal(balanced_batch_indices(labels, 10, 7, 1), balanced_batch_indices(labels, 10, 7, 1))
