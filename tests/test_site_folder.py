"""Tests for pgsl_flower.data.site_folder on real MNIST images (no mocks)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLSLossless

from pgsl_flower.data import (
    MNIST_CLASSES,
    DataError,
    ImageDataset,
    load_dataset,
    partition_indices,
)
from pgsl_flower.data.site_folder import (
    LABELS_FILE,
    SiteData,
    export_sites,
    load_site_folder,
    main,
    read_site_image,
    save_image,
    write_site_folder,
)

N = 20
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist() -> ImageDataset:
    """The first N MNIST training images."""
    train, _ = load_dataset("mnist", None)
    return train.subset(range(N))


@pytest.fixture
def site(tmp_path: Path, mnist: ImageDataset) -> Path:
    """A 5-image PNG site folder."""
    return write_site_folder(mnist, range(5), tmp_path / "site", "png")


def first_image(folder: Path) -> Path:
    """Path of the image of the first labels.csv row (no `file` column)."""
    with open(folder / LABELS_FILE, newline="") as f:
        rid = next(csv.DictReader(f))["id"]
    (path,) = folder.glob(f"{rid}.*")
    return path


def set_rows(folder: Path, text: str) -> None:
    """Replace labels.csv."""
    (folder / LABELS_FILE).write_text(text)


def load_error(folder: Path, *fragments: str, bit_depth: int = 8) -> str:
    """Load ``folder`` expecting a DataError whose message contains every fragment."""
    with pytest.raises(DataError) as info:
        load_site_folder(folder, MNIST_CLASSES, 28, bit_depth=bit_depth)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["png", "pgm", "dcm"])
def test_round_trip(tmp_path: Path, mnist: ImageDataset, fmt: str) -> None:
    folder = write_site_folder(mnist, range(N), tmp_path / fmt, fmt)
    assert sorted(p.suffix for p in folder.iterdir()) == [".csv"] + [f".{fmt}"] * N
    with open(folder / LABELS_FILE, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "label"]
    assert [r[1] for r in rows[1:]] == [MNIST_CLASSES[k] for k in mnist.labels.tolist()]

    site = load_site_folder(folder, MNIST_CLASSES, 28)
    assert isinstance(site, SiteData) and len(site) == N
    ds = site.dataset
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (N, 1, 28, 28)
    assert torch.equal(ds.images, mnist.images)
    assert torch.equal(ds.labels, mnist.labels)
    assert ds.classes == MNIST_CLASSES and ds.name == f"site/{fmt}"
    assert site.ids == tuple(f"mnist-train-{i:02d}" for i in range(N))  # zero-padded to len(dataset)
    assert site.paths[3] == folder / f"{site.ids[3]}.{fmt}"


def test_file_column_and_row_order(tmp_path: Path, mnist: ImageDataset) -> None:
    img_dir = tmp_path / "site" / "images"
    img_dir.mkdir(parents=True)
    order = [7, 2, 11, 0]
    lines = ["label,file,id,notes"]  # column order is free, extra columns are ignored
    for i in order:
        save_image(img_dir / f"scan{i}.pgm", mnist.images[i, 0].numpy())
        lines.append(f"{MNIST_CLASSES[int(mnist.labels[i])]},images/scan{i}.pgm,p{i},x")
    set_rows(tmp_path / "site", "\n".join(lines) + "\n\n")
    site = load_site_folder(tmp_path / "site", MNIST_CLASSES, 28, name="hospital-a")
    assert site.ids == tuple(f"p{i}" for i in order)
    assert torch.equal(site.dataset.images, mnist.images[order])
    assert torch.equal(site.dataset.labels, mnist.labels[order])
    assert site.dataset.name == "hospital-a"


def test_16bit_png_and_pgm(tmp_path: Path, mnist: ImageDataset) -> None:
    folder = tmp_path / "site"
    folder.mkdir()
    orig = mnist.images[:, 0].numpy()
    noise = np.random.default_rng(0).integers(0, 65536, size=(28, 28), dtype=np.uint16)
    save_image(folder / "a.png", orig[0].astype(np.uint16) * 257)  # 255 -> 65535
    save_image(folder / "b.pgm", orig[1].astype(np.uint16) * 257)
    save_image(folder / "c.png", noise)
    assert Image.open(folder / "a.png").mode == "I;16"
    assert (folder / "b.pgm").read_bytes().startswith(b"P5\n28 28\n65535\n")
    set_rows(folder, "id,label\na,5\nb,0\nc,1\n")
    site = load_site_folder(folder, MNIST_CLASSES, 28, bit_depth=16)
    images = site.dataset.images[:, 0].numpy()
    assert np.array_equal(images[0], orig[0]) and np.array_equal(images[1], orig[1])
    assert np.array_equal(images[2], np.rint(noise / 65535 * 255).astype(np.uint8))
    assert site.dataset.labels.tolist() == [5, 0, 1]


def test_16bit_dicom_bits_stored_12(tmp_path: Path, mnist: ImageDataset) -> None:
    folder = tmp_path / "site"
    folder.mkdir()
    orig = mnist.images[:, 0].numpy()
    v12 = np.rint(orig[0] / 255 * 4095).astype(np.uint16)
    save_image(folder / "a.dcm", v12, bits_stored=12)
    ds = pydicom.dcmread(folder / "a.dcm")
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)
    assert int(ds.pixel_array.max()) == 4095
    set_rows(folder, "id,label\na,5\n")
    out = load_site_folder(folder, MNIST_CLASSES, 28, bit_depth=16).dataset.images[0, 0].numpy()
    assert np.array_equal(out, np.rint(v12 / 4095 * 255).astype(np.uint8))
    assert np.array_equal(out, orig[0])


def test_dicom_rescale_and_monochrome1(tmp_path: Path, mnist: ImageDataset) -> None:
    folder = write_site_folder(mnist, range(2), tmp_path / "site", "dcm")
    orig = mnist.images[:2, 0].numpy()
    site = load_site_folder(folder, MNIST_CLASSES, 28)
    p0, p1 = site.paths
    ds = pydicom.dcmread(p0)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(p0)
    ds = pydicom.dcmread(p1)
    ds.PixelData = (orig[1] // 2).tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = 2, 1
    ds.save_as(p1)
    images = load_site_folder(folder, MNIST_CLASSES, 28).dataset.images[:, 0].numpy()
    assert np.array_equal(images[0], 255 - orig[0])
    assert np.array_equal(images[1], (orig[1] // 2) * 2 + 1)
    meta = pydicom.dcmread(p0)
    assert meta.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert meta.PatientName == "" and meta.PatientID == "" and meta.SOPInstanceUID


# --------------------------------------------------------------------------- labels.csv errors


def test_folder_and_labels_file_errors(tmp_path: Path, site: Path) -> None:
    load_error(tmp_path / "nope", str(tmp_path / "nope"), "does not exist")
    csv_path = site / LABELS_FILE
    csv_path.unlink()
    load_error(site, str(csv_path), "does not exist")
    set_rows(site, "")
    load_error(site, str(csv_path), "is empty")
    set_rows(site, "id,class\nmnist-train-00000,5\n")
    load_error(site, str(csv_path), "line 1 (header)", "missing column(s) label")
    set_rows(site, "id,label\n")
    load_error(site, str(csv_path), "no image rows")


def test_row_errors(site: Path) -> None:
    csv_path = str(site / LABELS_FILE)
    a, b = load_site_folder(site, MNIST_CLASSES, 28).ids[:2]
    set_rows(site, f"id,label\n{a},5\n,0\n")
    load_error(site, csv_path, "line 3 (row 2)", "blank id")
    set_rows(site, f"id,label\n{a}, \n")
    load_error(site, csv_path, "line 2 (row 1)", "blank label")
    set_rows(site, f"id,label\n{a},5\n\n{b},0\n{a},5\n")  # blank lines are skipped
    load_error(site, csv_path, "line 5 (row 3)", f"duplicate id {a!r}", "line 2 (row 1)")
    set_rows(site, f"id,label\n{a},five\n")
    msg = load_error(site, csv_path, "line 2 (row 1)", "unknown label 'five'")
    assert "'0', '1', '2', '3', '4', '5', '6', '7', '8', '9'" in msg
    set_rows(site, f"id,label\n{a},5,extra\n")
    load_error(site, csv_path, "line 2 (row 1)", "3 fields but the header has 2")


def test_missing_and_ambiguous_images(site: Path) -> None:
    image = first_image(site)
    twin = image.with_suffix(".pgm")
    twin.write_bytes(b"")
    load_error(site, str(image), str(twin), "matches several images")
    twin.unlink()
    image.unlink()
    load_error(site, str(image), str(site / LABELS_FILE), "line 2 (row 1)", "is missing")
    set_rows(site, "id,label,file\nx,5,scans/x.png\n")
    load_error(site, str(site / "scans" / "x.png"), "does not exist")
    set_rows(site, "id,label,file\nx,5,../x.png\n")
    load_error(site, "points outside the site folder")


# --------------------------------------------------------------------------- image errors


@pytest.mark.parametrize("fmt", ["png", "pgm", "dcm"])
def test_truncated_image(tmp_path: Path, mnist: ImageDataset, fmt: str) -> None:
    folder = write_site_folder(mnist, range(3), tmp_path / "site", fmt)
    image = first_image(folder)
    data = image.read_bytes()
    image.write_bytes(data[: len(data) - 100])
    msg = load_error(folder, str(image), "line 2 (row 1)")
    assert "corrupt" in msg or "truncated" in msg


def test_not_an_image(site: Path) -> None:
    image = first_image(site)
    dcm = image.with_suffix(".dcm")
    image.unlink()
    dcm.write_text("hello")
    load_error(site, str(dcm), "cannot read DICOM file")
    dcm.unlink()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image, format="PPM")  # PGM bytes in a .png
    load_error(site, str(image), "not PNG")


def test_rgb_png(site: Path) -> None:
    image = first_image(site)
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(image)
    load_error(site, str(image), "not a single-channel grayscale image", "'RGB'")


def test_rgb_dicom(tmp_path: Path, mnist: ImageDataset) -> None:
    folder = write_site_folder(mnist, range(2), tmp_path / "site", "dcm")
    image = first_image(folder)
    ds = pydicom.dcmread(image)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = np.repeat(mnist.images[0, 0].numpy()[..., None], 3, axis=2).tobytes()
    ds.save_as(image)
    load_error(folder, str(image), "SamplesPerPixel 3")


def test_wrong_size(site: Path) -> None:
    image = first_image(site)
    save_image(image, np.zeros((32, 30), np.uint8))
    load_error(site, str(image), "got 32x30 (HxW)", "expected 28x28")


def test_wrong_bit_depth(tmp_path: Path, site: Path, mnist: ImageDataset) -> None:
    image = first_image(site)
    save_image(image, mnist.images[0, 0].numpy().astype(np.uint16) * 257)
    load_error(site, str(image), "wrong bit depth", "16-bit", "bit_depth=8")
    # ... and 8-bit images in a 16-bit site
    other = write_site_folder(mnist, range(2), tmp_path / "eight", "pgm")
    load_error(other, str(first_image(other)), "8-bit", "bit_depth=16", bit_depth=16)
    dcm = write_site_folder(mnist, range(2), tmp_path / "dcm", "dcm")
    load_error(dcm, str(first_image(dcm)), "BitsStored 8", "bit_depth=16", bit_depth=16)
    save_image(first_image(dcm), np.zeros((28, 28), np.uint16), bits_stored=12)
    load_error(dcm, str(first_image(dcm)), "BitsStored 12", "bit_depth=8")


def test_compressed_dicom(tmp_path: Path, mnist: ImageDataset) -> None:
    folder = write_site_folder(mnist, range(2), tmp_path / "site", "dcm")
    image = first_image(folder)
    ds = pydicom.dcmread(image)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(image)
    load_error(folder, str(image), "JPEG-LS Lossless", str(JPEGLSLossless), "store it uncompressed")


def test_argument_errors(site: Path) -> None:
    with pytest.raises(ValueError, match="bit_depth"):
        load_site_folder(site, MNIST_CLASSES, 28, bit_depth=12)
    with pytest.raises(ValueError, match="image_size"):
        load_site_folder(site, MNIST_CLASSES, 1)
    with pytest.raises(ValueError, match="classes"):
        load_site_folder(site, ("0", "0"), 28)
    with pytest.raises(ValueError, match="image_size"):
        read_site_image(first_image(site), 0)
    with pytest.raises(FileExistsError, match=str(site)):
        write_site_folder(load_site_folder(site, MNIST_CLASSES, 28).dataset, [0], site)
    with pytest.raises(ValueError, match="fmt"):
        write_site_folder(load_site_folder(site, MNIST_CLASSES, 28).dataset, [0], site / "x", "jpg")


# --------------------------------------------------------------------------- export + CLI


def test_cli_export_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sites"
    argv = ["export", "--dataset", "mnist", "--sites", "2", "--per-site", "10",
            "--out", str(out), "--format", "pgm", "--seed", "3"]
    assert main(argv) == 0
    folders = [Path(line) for line in capsys.readouterr().out.split()]
    assert folders == [out / "site-0", out / "site-1"]

    train, _ = load_dataset("mnist", None)
    parts = partition_indices(train.labels.numpy(), 2, partitioner="iid", seed=3)
    for folder, part in zip(folders, parts):
        site = load_site_folder(folder, MNIST_CLASSES, 28)
        idx = [int(i.rsplit("-", 1)[1]) for i in site.ids]
        assert idx == part[:10].tolist()
        assert torch.equal(site.dataset.images, train.images[idx])
        assert torch.equal(site.dataset.labels, train.labels[idx])
    assert export_sites("mnist", 2, 10, tmp_path / "again", seed=3) == [
        tmp_path / "again" / "site-0", tmp_path / "again" / "site-1"
    ]


def test_cli_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pgsl_flower.data.site_folder", "export", "--help"],
        check=False, capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "--per-site" in proc.stdout and "png,pgm,dcm" in proc.stdout


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "site-0").mkdir()
    (tmp_path / "site-0" / "keep.txt").write_text("x")
    argv = ["export", "--dataset", "mnist", "--sites", "2", "--per-site", "10", "--out", str(tmp_path)]
    assert main(argv) == 1
    assert str(tmp_path / "site-0") in capsys.readouterr().err
    argv[6], argv[8] = "40000", str(tmp_path / "new")
    assert main(argv) == 1
    assert "per_site" in capsys.readouterr().err


def test_a_site_supernode_trains_on_its_own_folder(tmp_path: Path, mnist: ImageDataset) -> None:
    """node-config 'data-dir' replaces the dataset partition; a bad folder fails with the file named."""
    from flwr.app import Context, RecordDict

    from pgsl_flower.client_app import SplitClient
    from pgsl_flower.config import RunConfig

    folder = write_site_folder(mnist, range(N), tmp_path / "site-a", fmt="pgm")
    cfg = RunConfig(holdout_fraction=0.2, batch_size=8)
    context = Context(run_id=1, node_id=9, node_config={"partition-id": 4, "data-dir": str(folder)},
                      state=RecordDict(), run_config=cfg.as_run_config())
    client = SplitClient(cfg, context)
    assert client.data.train_labels.shape[0] == 16 and client.data.holdout_labels.shape[0] == 4
    site = load_site_folder(folder, MNIST_CLASSES, 28)
    assert sorted(client.data.train_labels.tolist() + client.data.holdout_labels.tolist()) == sorted(
        site.dataset.labels.tolist())
    assert protocol_batches(client) == 1

    broken = sorted(folder.glob("*.pgm"))[7]
    broken.write_bytes(b"P5 28 28 255\n")  # truncated
    context = Context(run_id=1, node_id=9, node_config={"partition-id": 4, "data-dir": str(folder)},
                      state=RecordDict(), run_config=cfg.replace(seed=7).as_run_config())
    with pytest.raises(DataError, match=broken.name):
        SplitClient(cfg.replace(seed=7), context)


def protocol_batches(client) -> int:  # noqa: ANN001
    """Forward one batch through the client part: the site's data feeds the model."""
    from pgsl_flower import protocol

    records = client.forward_next(1)
    return sum(name.startswith(f"{protocol.BATCH}.") for name in records)


def test_check_command_accepts_a_good_site_and_names_the_bad_file(tmp_path: Path, mnist: ImageDataset, capsys) -> None:
    folder = write_site_folder(mnist, range(N), tmp_path / "site")
    assert main(["check", str(folder), "--dataset", "mnist", "--image-size", "28"]) == 0
    assert f"{N} images OK" in capsys.readouterr().out
    assert main(["check", str(folder), "--dataset", "mias", "--image-size", "28"]) == 1
    assert "unknown label" in capsys.readouterr().err
