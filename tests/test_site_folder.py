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
from pydicom.dataset import Dataset
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
from pgsl_flower.data.site_image import decode_site_image

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
    # the stored range 0..255 goes through the same rescale (1..511) and is mapped to 0..255: a linear
    # rescale does not change what is displayed (the old loader clipped rescaled values at 255)
    assert np.array_equal(images[1], orig[1] // 2)
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


def test_any_size_png_is_padded_to_square(site: Path) -> None:
    """Non-square PNGs load (this test used to expect the size refusal, before images were fitted)."""
    image = first_image(site)
    pixels = np.full((32, 30), 7, np.uint8)
    pixels[8:24, 7:23] = 200
    save_image(image, pixels)
    out = load_site_folder(site, MNIST_CLASSES, 32).dataset.images[0, 0].numpy()
    expect = np.full((32, 32), 7, np.uint8)  # one column of background on each side
    expect[:, 1:31] = pixels
    assert np.array_equal(out, expect)


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


# --------------------------------------------------------------------------- images of any size and depth


def write_dicom(path: Path, pixels: np.ndarray, bits_stored: int | None = None, **attributes: object) -> Path:
    """Write ``pixels`` as a DICOM file with pydicom, then set ``attributes`` on it."""
    save_image(path, pixels, bits_stored)
    if attributes:
        ds = pydicom.dcmread(path)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    return path


@pytest.fixture
def dicom_site(tmp_path: Path) -> Path:
    """Six DICOMs: 8/12/16-bit, 40x60, 300x200 and 28x28, one MONOCHROME1, one windowed, one VOI LUT."""
    folder = tmp_path / "dicoms"
    folder.mkdir()
    rng = np.random.default_rng(0)
    wide = np.full((40, 60), 10, np.uint8)
    wide[10:30, 20:40] = 250
    write_dicom(folder / "wide8.dcm", wide)
    big = np.zeros((300, 200), np.uint16)
    big[100:200, 50:150] = 4095
    write_dicom(folder / "big12.dcm", big, 12)
    write_dicom(folder / "small16.dcm", rng.integers(0, 65536, size=(28, 28), dtype=np.uint16))
    mono1 = np.zeros((28, 28), np.uint16)
    mono1[5:15, 5:15] = 65535  # the brightest stored value: dark in MONOCHROME1
    write_dicom(folder / "mono1.dcm", mono1, PhotometricInterpretation="MONOCHROME1")
    window = np.zeros((28, 28), np.uint16)
    window[:, :9], window[:, 9:18], window[:, 18:] = 500, 2048, 4000  # below, at, above the window
    write_dicom(folder / "window.dcm", window, 12, WindowCenter=2048, WindowWidth=1024)
    ramp = np.tile(np.arange(0, 4095, 4095 // 27, dtype=np.uint16)[:28], (28, 1))
    lut = Dataset()
    lut.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor: declares 16 bits, holds 12
    lut.add_new(0x00283006, "US", [4095 - v for v in range(4096)])  # LUT Data
    write_dicom(folder / "voilut.dcm", ramp, 12, VOILUTSequence=[lut])
    set_rows(folder, "id,label\nwide8,0\nbig12,1\nsmall16,1\nmono1,2\nwindow,2\nvoilut,3\n")
    return folder


def test_dicoms_of_any_size_depth_and_window(dicom_site: Path) -> None:
    site = load_site_folder(dicom_site, MNIST_CLASSES, 28)
    images = site.dataset.images[:, 0].numpy()
    assert site.dataset.images.shape == (6, 1, 28, 28) and images.dtype == np.uint8
    assert site.dataset.labels.tolist() == [0, 1, 1, 2, 2, 3]
    wide8, big12, small16, mono1, window, voilut = images
    # 40x60 padded to 60x60 with its background (10), then shrunk: corners background, centre bright
    assert wide8[0, 0] == wide8[-1, -1] == 10 and wide8[14, 14] == 250
    assert big12[0, 0] == 0 and big12[14, 14] == 255  # 12-bit maximum is white
    stored16 = pydicom.dcmread(dicom_site / "small16.dcm").pixel_array
    assert np.array_equal(small16, np.rint(stored16 / 65535 * 255).astype(np.uint8))  # 28x28: not resampled
    assert (mono1[5:15, 5:15] == 0).all() and mono1[20, 20] == 255  # MONOCHROME1 inverted
    # window 2048 +- 512 of 0..4095: 500 clips to black, 4000 to white (the stored range would give 31 and 249)
    assert (window[:, :9] == 0).all() and (window[:, 18:] == 255).all() and (window[:, 9:18] == 128).all()
    stored = pydicom.dcmread(dicom_site / "voilut.dcm").pixel_array
    assert np.array_equal(voilut, np.rint((4095 - stored) / 4095 * 255).astype(np.uint8))
    # the same files, decoded at their own size
    shapes = {p.stem: decode_site_image(p).shape for p in site.paths}
    assert shapes == {"wide8": (40, 60), "big12": (300, 200), "small16": (28, 28), "mono1": (28, 28),
                      "window": (28, 28), "voilut": (28, 28)}


def test_pad_and_crop_rules(dicom_site: Path) -> None:
    wide = pydicom.dcmread(dicom_site / "wide8.dcm").pixel_array
    padded = read_site_image(dicom_site / "wide8.dcm", 60)
    assert (padded[:10] == 10).all() and (padded[50:] == 10).all() and np.array_equal(padded[10:50], wide)
    assert np.array_equal(read_site_image(dicom_site / "wide8.dcm", 40, resize="crop"), wide[:, 10:50])
    square = np.full((60, 60), 10.0)
    square[10:50] = wide
    halved = square.reshape(30, 2, 30, 2).mean(axis=(1, 3))  # BOX 60 -> 30 is a 2x2 area average
    assert np.abs(read_site_image(dicom_site / "wide8.dcm", 30).astype(int) - np.rint(halved)).max() <= 1
    up = read_site_image(dicom_site / "small16.dcm", 56)  # enlarged (bilinear)
    assert up.shape == (56, 56)
    with pytest.raises(ValueError, match="resize"):
        read_site_image(dicom_site / "wide8.dcm", 28, resize="stretch")


def test_dicom_window_errors_name_the_file(dicom_site: Path) -> None:
    path = write_dicom(dicom_site / "window.dcm", np.zeros((28, 28), np.uint16), 12, WindowCenter=10,
                       WindowWidth=0)
    with pytest.raises(DataError, match="Window Width") as info:
        load_site_folder(dicom_site, MNIST_CLASSES, 28)
    assert str(path) in str(info.value) and "line 6 (row 5)" in str(info.value)


def test_check_reports_sizes_depths_and_labels(dicom_site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(dicom_site), "--image-size", "28"]) == 0
    out = capsys.readouterr().out
    assert f"{dicom_site}: 6 images OK" in out
    assert "labels: 0: 1, 1: 2, 2: 2, 3: 1" in out
    assert "sizes (HxW): 3 distinct; smallest 28x28, largest 300x200, most common 28x28 (4 images)" in out
    assert "heights 28..300, widths 28..200" in out
    assert "bit depths: 8-bit: 1, 12-bit: 3, 16-bit: 2" in out
    assert "photometric: MONOCHROME1: 1, MONOCHROME2: 5" in out
    assert "intensity mapping: stored-range: 4, voi-lut: 1, window: 1" in out
    assert "loads as 28x28 (pad to a square, then resize): 2 shrunk, 0 enlarged, 4 kept" in out
    assert main(["check", str(dicom_site), "--dataset", "mnist"]) == 0
    assert "labels: 0: 1, 1: 2, 2: 2, 3: 1, 4: 0, 5: 0" in capsys.readouterr().out


def test_check_names_every_problem(dicom_site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truncated = dicom_site / "big12.dcm"  # 300 x 200 x 2 bytes: cut into its pixel data
    truncated.write_bytes(truncated.read_bytes()[:-5000])
    assert main(["check", str(dicom_site), "--bit-depth", "16"]) == 1
    captured = capsys.readouterr()
    assert f"{dicom_site}: 6 images (2 with problems)" in captured.out
    assert f"error: {truncated}: cannot decode the DICOM pixel data" in captured.err
    assert f"error: {dicom_site / 'wide8.dcm'}: wrong bit depth: DICOM BitsStored 8" in captured.err
    assert "line 2 (row 1)" in captured.err and "line 3 (row 2)" in captured.err
    assert f"2 of 6 images in {dicom_site} cannot be loaded" in captured.err
    set_rows(dicom_site, "id,label\nnope,0\n")
    assert main(["check", str(dicom_site)]) == 1
    assert "image for id 'nope' is missing" in capsys.readouterr().err


def test_check_entry_point(dicom_site: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pgsl_flower.data.site_folder", "check", str(dicom_site)],
        check=False, capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "6 images OK" in proc.stdout and "largest 300x200" in proc.stdout


def test_a_site_of_mixed_size_16bit_dicoms_trains(tmp_path: Path) -> None:
    """MNIST 0s and 1s as 16-bit DICOMs of four sizes: the client loads them at 28x28 and the
    split model learns them (the steps a SuperNode and the server run, driven in-process)."""
    from flwr.app import Context, RecordDict

    from pgsl_flower import protocol
    from pgsl_flower.client_app import SplitClient
    from pgsl_flower.config import RunConfig
    from pgsl_flower.local_data import batches_per_epoch
    from pgsl_flower.strategy import ServerModel

    train, _ = load_dataset("mnist", None)
    picks = np.concatenate([np.flatnonzero(train.labels.numpy() == digit)[:24] for digit in (0, 1)])
    folder = tmp_path / "site"
    folder.mkdir()
    rows = ["id,label"]
    for k, i in enumerate(picks.tolist()):
        h, w = ((28, 28), (40, 60), (64, 48), (90, 90))[k % 4]
        side = min(h, w)
        digit = np.asarray(Image.fromarray(train.images[i, 0].numpy()).resize((side, side), Image.Resampling.BILINEAR))
        canvas = np.zeros((h, w), np.uint16)
        top, left = (h - side) // 2, (w - side) // 2
        canvas[top : top + side, left : left + side] = digit.astype(np.uint16) * 257
        save_image(folder / f"scan{k}.dcm", canvas)
        rows.append(f"scan{k},{int(train.labels[i])}")
    set_rows(folder, "\n".join(rows) + "\n")

    cfg = RunConfig(batch_size=8, samples_per_client=0, holdout_fraction=0.1, server_tower="pooled")
    context = Context(run_id=1, node_id=3, node_config={"partition-id": 0, "data-dir": str(folder), "bit-depth": 16},
                      state=RecordDict(), run_config=cfg.as_run_config())
    client = SplitClient(cfg, context)
    assert client.data.train_images.shape == (43, 1, 28, 28)
    server = ServerModel(cfg, 10, torch.device("cpu"))
    losses, correct = [], []
    for _epoch in range(4):
        loss_sum = hits = seen = 0.0
        for _ in range(batches_per_epoch(43, cfg.batch_size)):
            batch = RecordDict({protocol.BATCH: client.forward_next()[protocol.batch_record(0)]})
            smashed, labels = protocol.decode_batch(batch, smashed_shape=(64, 14, 14), max_batch=8, num_classes=10,
                                                    max_bytes=1 << 30)
            grad, loss, predicted = server.step(smashed, labels)
            client.apply_gradients(RecordDict(protocol.encode_gradients([grad])))
            loss_sum, hits, seen = loss_sum + loss, hits + int((predicted == labels).sum()), seen + len(labels)
        losses.append(loss_sum / seen)
        correct.append(hits / seen)
    assert losses[-1] < 0.5 * losses[0], losses
    assert correct[-1] >= 0.9, correct
