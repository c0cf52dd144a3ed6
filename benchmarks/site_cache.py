"""Site-folder load time, decoded every time vs from the per-site cache, side by side.

A deployment starts a new ClientApp process for every message, and each one
loads the site's folder. This times that load in a fresh Python process (as a
ClientApp does: imports done, then :func:`load_site_folder`, timed inside the
process) for two site folders of ``--images`` images:

- ``mnist-png``: MNIST training images as 28x28 8-bit PNG, loaded at 28x28;
- ``dicom-16bit``: MNIST digits enlarged to ``--dicom-side`` squared, stored as
  12-bit DICOM, loaded at ``--dicom-size`` (pad, then resize).

Modes: ``uncached`` (no cache dir), ``cached`` (an entry written beforehand:
the hit every message after the first sees). Median of ``--repeats`` processes.

    python benchmarks/site_cache.py                      # 300 images, 5 repeats
    python benchmarks/site_cache.py --images 1000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgsl_flower.data import MNIST_CLASSES, load_dataset  # noqa: E402
from pgsl_flower.data.site_folder import LABELS_FILE, load_site_folder, save_image, write_site_folder  # noqa: E402

_CHILD = """
import sys, time
from pgsl_flower.data import MNIST_CLASSES
from pgsl_flower.data.site_folder import load_site_folder
folder, size, cache = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None
start = time.perf_counter()
site = load_site_folder(folder, MNIST_CLASSES, size, cache_dir=cache, site="bench#0")
print(time.perf_counter() - start, len(site))
"""


def _dicom_folder(images: np.ndarray, labels: list[int], folder: Path, side: int) -> Path:
    """12-bit DICOM of the digits enlarged to side x side (bilinear)."""
    folder.mkdir(parents=True)
    rows = []
    for k, (image, label) in enumerate(zip(images, labels)):
        big = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR), dtype=np.uint16)
        save_image(folder / f"scan-{k:04d}.dcm", big * 16, bits_stored=12)
        rows.append(f"scan-{k:04d},{MNIST_CLASSES[label]}\n")
    (folder / LABELS_FILE).write_text("id,label\n" + "".join(rows))
    return folder


def _time(folder: Path, size: int, cache: Path | None) -> float:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(size), str(cache or "")],
                          capture_output=True, text=True, check=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    return float(done.stdout.split()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dicom-side", type=int, default=512, help="stored DICOM side (pixels)")
    parser.add_argument("--dicom-size", type=int, default=128, help="image-size the DICOM folder loads at")
    args = parser.parse_args(argv)

    train, _ = load_dataset("mnist", None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pgsl-site-cache-bench-") as tmp:
        work = Path(tmp)
        folders = {
            "mnist-png": (write_site_folder(train, range(args.images), work / "png"), 28),
            "dicom-16bit": (_dicom_folder(train.images[: args.images, 0].numpy(),
                                          train.labels[: args.images].tolist(), work / "dcm", args.dicom_side),
                            args.dicom_size),
        }
        for name, (folder, size) in folders.items():
            cache = work / f"cache-{name}"
            load_site_folder(folder, MNIST_CLASSES, size, cache_dir=cache, site="bench#0")  # write the entry
            megabytes = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
            entry = sum(p.stat().st_size for p in cache.iterdir()) / 2**20
            uncached = [_time(folder, size, None) for _ in range(args.repeats)]
            cached = [_time(folder, size, cache) for _ in range(args.repeats)]
            rows.append((name, megabytes, size, entry, statistics.median(uncached), statistics.median(cached)))

    print(f"\n{args.images} images per folder; load time in a fresh process, median of {args.repeats}\n")
    print("| folder | files MiB | loads at | cache entry MiB | uncached s | cached s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name, megabytes, size, entry, uncached, cached in rows:
        print(f"| {name} | {megabytes:.1f} | {size}x{size} | {entry:.2f} | {uncached:.3f} | {cached:.3f} "
              f"| x{uncached / cached:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
