"""Tests for the per-site cache of decoded site folders (pgsl_flower.data.site_cache), on real
PNG and DICOM files (no mocks).

A cache hit is proven without timing or mocks: after the first load an image is overwritten
with bytes that cannot be decoded, keeping its size and mtime_ns (what the key sees). A load
that decodes the folder again raises DataError naming that file; a cache hit returns the
images of the first load.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from pgsl_flower.data import MNIST_CLASSES, DataError, ImageDataset, load_dataset
from pgsl_flower.data.site_folder import LABELS_FILE, load_site_folder, save_image, write_site_folder

N = 6
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist() -> ImageDataset:
    train, _ = load_dataset("mnist", None)
    return train.subset(range(2 * N + 1))


@pytest.fixture(params=["png", "dcm"])
def site(request: pytest.FixtureRequest, tmp_path: Path, mnist: ImageDataset) -> Path:
    """An N-image site folder, PNG or DICOM."""
    return write_site_folder(mnist, range(N), tmp_path / "site", request.param)


def load(folder: Path, cache: Path | None, site: str = "a", **kwargs: object) -> np.ndarray:
    """The folder's decoded images (cached in ``cache`` for ``site``)."""
    return load_site_folder(folder, MNIST_CLASSES, 28, cache_dir=cache, site=site, **kwargs).dataset.images.numpy()


def images_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".dcm"))


def poison(path: Path) -> None:
    """Make ``path`` undecodable, keeping its size and mtime_ns: only a re-decode notices."""
    stat = path.stat()
    path.write_bytes(b"\xff" * stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.npz"))


def touch_later(path: Path, before_ns: int) -> None:
    """Make sure a rewritten file's mtime differs from ``before_ns`` (coarse file-system clocks)."""
    if path.stat().st_mtime_ns == before_ns:
        os.utime(path, ns=(before_ns + 1_000, before_ns + 1_000))


# --------------------------------------------------------------------------- hits


def test_second_load_hits_the_cache(site: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load(site, cache)
    np.testing.assert_array_equal(first, load(site, None))  # the cache changes nothing
    (entry,) = entries(cache)
    written = entry.stat().st_mtime_ns
    assert entry.stat().st_mode & 0o077 == 0  # the site's images: owner-only

    target = images_of(site)[2]
    poison(target)
    with pytest.raises(DataError, match=target.name):  # a re-decode would fail ...
        load(site, None)
    again = load(site, cache)  # ... so this one did not decode
    np.testing.assert_array_equal(again, first)
    assert entries(cache) == [entry] and entry.stat().st_mtime_ns == written  # read, not rewritten


def test_a_fresh_process_hits_the_cache_through_the_client_path(tmp_path: Path, mnist: ImageDataset) -> None:
    """What a deployment does: every message's ClientApp process calls site_local_data anew."""
    folder = write_site_folder(mnist, range(N), tmp_path / "site", "png")
    cache = tmp_path / "cache"
    script = (
        "import sys, numpy as np\n"
        "from pgsl_flower.config import RunConfig\n"
        "from pgsl_flower.local_data import site_local_data\n"
        "d = site_local_data(RunConfig(holdout_fraction=0.0), sys.argv[1], 3, None, 'site-a', sys.argv[2])\n"
        "np.save(sys.argv[3], d.train_images.numpy())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def run(out: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, str(folder), str(cache), str(tmp_path / out)],
                              capture_output=True, text=True, env=env, timeout=300)

    assert run("first.npy").returncode == 0
    (entry,) = entries(cache)
    assert entry.name.startswith("site-site-a-")
    poison(images_of(folder)[0])
    done = run("second.npy")
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "second.npy"), np.load(tmp_path / "first.npy"))


def test_a_cache_dir_inside_the_site_folder_does_not_invalidate_itself(tmp_path: Path, mnist: ImageDataset) -> None:
    folder = write_site_folder(mnist, range(N), tmp_path / "site", "png")
    cache = folder / ".cache"
    first = load(folder, cache)
    poison(images_of(folder)[0])
    np.testing.assert_array_equal(load(folder, cache), first)


def test_the_client_app_takes_its_cache_dir_and_site_from_node_config(tmp_path: Path, mnist: ImageDataset) -> None:
    from flwr.app import Context, RecordDict

    from pgsl_flower.client_app import SplitClient
    from pgsl_flower.config import RunConfig

    folder = write_site_folder(mnist, range(N), tmp_path / "site", "png")
    cfg = RunConfig(holdout_fraction=0.0, batch_size=2)
    node = {"partition-id": 5, "data-dir": str(folder), "site-name": "north", "cache-dir": str(tmp_path / "c")}
    client = SplitClient(cfg, Context(run_id=1, node_id=2, node_config=node, state=RecordDict(),
                                      run_config=cfg.as_run_config()))
    (entry,) = entries(tmp_path / "c")
    assert entry.name.startswith("site-north-5-")
    assert sorted(client.data.train_images.view(N, -1).sum(1).tolist()) == sorted(
        torch.from_numpy(load(folder, None)).view(N, -1).sum(1).tolist())


# --------------------------------------------------------------------------- invalidation


def test_a_modified_image_invalidates_the_entry(site: Path, tmp_path: Path) -> None:
    """DICOM rewrites keep the file size: only the mtime tells the change."""
    cache = tmp_path / "cache"
    first = load(site, cache)
    target = images_of(site)[1]
    before = target.stat()
    if target.suffix == ".dcm":  # new pixel values in the same file: same size
        ds = pydicom.dcmread(target)
        ds.PixelData = (255 - ds.pixel_array).astype(np.uint8).tobytes()
        ds.save_as(target)
        assert target.stat().st_size == before.st_size
    else:
        save_image(target, 255 - first[1, 0])  # inverted
    touch_later(target, before.st_mtime_ns)
    now = load(site, cache)
    assert not np.array_equal(now[1], first[1])
    np.testing.assert_array_equal(now, load(site, None))
    assert len(entries(cache)) == 1  # the stale entry is gone


def test_an_added_image_invalidates_the_entry(site: Path, tmp_path: Path, mnist: ImageDataset) -> None:
    cache = tmp_path / "cache"
    load(site, cache)
    ext = images_of(site)[0].suffix
    save_image(site / f"extra{ext}", mnist.images[N, 0].numpy())
    with (site / LABELS_FILE).open("a") as handle:
        handle.write(f"extra,{MNIST_CLASSES[int(mnist.labels[N])]}\n")
    now = load(site, cache)
    assert now.shape[0] == N + 1
    np.testing.assert_array_equal(now, load(site, None))


def test_a_removed_image_invalidates_the_entry(site: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load(site, cache)
    lines = (site / LABELS_FILE).read_text().splitlines()
    rid = lines[-1].split(",")[0]
    (site / LABELS_FILE).write_text("\n".join(lines[:-1]) + "\n")
    next(site.glob(f"{rid}.*")).unlink()
    now = load(site, cache)
    np.testing.assert_array_equal(now, first[:-1])


@pytest.mark.parametrize("change", ["add", "remove", "touch"])
def test_any_file_change_under_the_folder_invalidates_the_entry(change: str, tmp_path: Path,
                                                                  mnist: ImageDataset) -> None:
    """Even a file labels.csv does not list: the key covers every file's path, size and mtime."""
    folder = write_site_folder(mnist, range(N), tmp_path / "site", "png")
    notes = folder / "notes" / "readme.txt"
    notes.parent.mkdir()
    notes.write_text("scanner A")
    cache = tmp_path / "cache"
    load(folder, cache)
    target = images_of(folder)[0]
    poison(target)
    if change == "add":
        (folder / "notes" / "more.txt").write_text("x")
    elif change == "remove":
        notes.unlink()
    else:
        os.utime(notes, ns=(notes.stat().st_atime_ns, notes.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(DataError, match=target.name):  # decoded again
        load(folder, cache)


# --------------------------------------------------------------------------- isolation


def test_two_sites_never_share_an_entry(tmp_path: Path, mnist: ImageDataset) -> None:
    folder = write_site_folder(mnist, range(N), tmp_path / "site", "png")
    cache = tmp_path / "cache"
    first = load(folder, cache, site="north#0")
    target = images_of(folder)[0]
    poison(target)
    with pytest.raises(DataError, match=target.name):
        load(folder, cache, site="south#1")  # same folder and cache dir, another site: decodes
    np.testing.assert_array_equal(load(folder, cache, site="north#0"), first)


def test_two_folders_with_identical_files_never_share_an_entry(tmp_path: Path, mnist: ImageDataset) -> None:
    folder = write_site_folder(mnist, range(N), tmp_path / "one" / "site", "png")
    twin = Path(shutil.copytree(folder, tmp_path / "two" / "site"))  # copy2: same names, sizes, mtimes
    cache = tmp_path / "cache"
    load(folder, cache)
    target = images_of(twin)[0]
    poison(target)
    with pytest.raises(DataError, match=target.name):
        load(twin, cache)


@pytest.mark.parametrize("setting", [{"resize": "crop"}, {"image_size": 14}, {"classes": (*MNIST_CLASSES, "x")}])
def test_decoding_settings_are_part_of_the_key(setting: dict, tmp_path: Path, mnist: ImageDataset) -> None:
    folder = write_site_folder(mnist, range(N), tmp_path / "site", "png")
    cache = tmp_path / "cache"
    load(folder, cache)
    target = images_of(folder)[0]
    poison(target)
    args = {"classes": MNIST_CLASSES, "image_size": 28, **setting}
    with pytest.raises(DataError, match=target.name):
        load_site_folder(folder, args.pop("classes"), args.pop("image_size"), cache_dir=cache, site="a", **args)


def test_a_declared_bit_depth_is_enforced_despite_a_cached_entry(tmp_path: Path) -> None:
    """16-bit DICOM loads with any depth; bit-depth 8 must refuse it, not take the cached images."""
    folder = tmp_path / "site"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        save_image(folder / f"scan-{k}.dcm", rng.integers(0, 4096, (40, 30), dtype=np.uint16), bits_stored=12)
    (folder / LABELS_FILE).write_text("id,label\n" + "".join(f"scan-{k},{k}\n" for k in range(3)))
    cache = tmp_path / "cache"
    assert load(folder, cache).shape == (3, 1, 28, 28)
    with pytest.raises(DataError, match="bit"):
        load(folder, cache, bit_depth=8)


# --------------------------------------------------------------------------- corrupt entries


def _rewrite(entry: Path, how: str, other: Path) -> None:
    data = entry.read_bytes()
    if how == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        entry.write_bytes(b"")
    elif how == "garbage":
        entry.write_bytes(os.urandom(len(data)))
    elif how == "zip-header":
        entry.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    elif how == "another-site":
        shutil.copyfile(other, entry)
    elif how == "wrong-shape":  # the right key, arrays that do not fit the folder
        with np.load(entry) as stored:
            arrays = {k: stored[k] for k in stored.files}
        arrays["images"] = arrays["images"][:-1]
        with entry.open("wb") as handle:
            np.savez(handle, **arrays)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "zip-header", "another-site", "wrong-shape"])
def test_a_corrupt_entry_is_rebuilt_never_trusted(how: str, tmp_path: Path, mnist: ImageDataset) -> None:
    folder = write_site_folder(mnist, range(N), tmp_path / "a" / "site", "png")
    other = write_site_folder(mnist, range(N, 2 * N), tmp_path / "b" / "site", "png")
    cache, other_cache = tmp_path / "cache", tmp_path / "other-cache"
    first = load(folder, cache)
    load(other, other_cache, site="b")
    (entry,) = entries(cache)
    (other_entry,) = entries(other_cache)
    _rewrite(entry, how, other_entry)
    np.testing.assert_array_equal(load(folder, cache), first)
    # rebuilt in place: the next load hits it again
    assert entries(cache) == [entry]
    poison(images_of(folder)[0])
    np.testing.assert_array_equal(load(folder, cache), first)


def test_an_unwritable_cache_dir_only_costs_the_speed_up(tmp_path: Path, mnist: ImageDataset) -> None:
    folder = write_site_folder(mnist, range(N), tmp_path / "site", "png")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    np.testing.assert_array_equal(load(folder, blocker / "cache"), load(folder, None))
