"""One site image (PNG, PGM or DICOM) of any size and depth, read as ``image_size`` square uint8.

Reading happens in two steps:

1. **Intensities** (:func:`decode_site_image`): the file becomes a float ``(H, W)`` array in
   ``0..255`` (0 black, MONOCHROME2 sense), at its own size.

   - PNG / PGM: linear from the container's range: ``v * 255 / 255`` (8-bit, Pillow mode ``L``),
     ``v * 255 / 65535`` (16-bit, mode ``I;16``/``I``; Pillow first scales a PGM with maxval M
     to 0..65535), ``v * 255`` (1-bit).
   - DICOM (pydicom): the Modality LUT (``apply_modality_lut``: RescaleSlope/Intercept or a
     Modality LUT Sequence), then the first VOI transform present (``apply_voi_lut``): a VOI LUT
     Sequence, mapped from its own output range (min..max of its entries), else Window
     Center/Width (VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID; values outside the window
     clip to its ends), mapped from pydicom's output range, else no window: the stored range
     (``0..2**BitsStored - 1``, signed when PixelRepresentation is 1, through the Modality LUT)
     is mapped linearly to 0..255. MONOCHROME1 is then inverted (``low + high - v``) to
     MONOCHROME2. BitsStored 1..16 (8, 12, 16, ...) is read from the file.

2. **Geometry** (:func:`fit_image`), one rule for every image, run-config ``site-resize``:

   - ``pad`` (default): pad the image to a square, centred, with its background value (the
     median of its one-pixel border), then resize the square to ``image_size``;
   - ``crop``: centre-crop to a square on the shorter side, then resize.

   Resizing averages areas (Pillow ``BOX``) when shrinking and is bilinear when enlarging, as
   the dataset loaders do; a square image of ``image_size`` is not resampled. The result is
   rounded to uint8.

A site may declare a ``bit_depth`` (8 or 16): then every image must have it (PNG mode ``L`` =
8, ``I;16``/``I`` = 16; PGM maxval <= 255 = 8, else 16; DICOM BitsStored 8 = 8, 9..16 = 16).
``None`` accepts each file's own depth. Every problem raises :class:`DataError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi, apply_voi_lut, apply_windowing
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from .errors import DataError

__all__ = [
    "BIT_DEPTHS",
    "FORMATS",
    "RESIZE_RULES",
    "SiteImage",
    "check_bit_depth",
    "check_format",
    "check_int",
    "check_resize",
    "decode_site_image",
    "fit_image",
    "read_site_image",
    "save_image",
]

#: Image formats (file extensions without the dot) a site folder may hold.
FORMATS: tuple[str, ...] = ("png", "pgm", "dcm")
#: Bit depths a site may declare (``None``: any).
BIT_DEPTHS: tuple[int, ...] = (8, 16)
#: How an image of any aspect becomes square (run-config ``site-resize``).
RESIZE_RULES: tuple[str, ...] = ("pad", "crop")

_PIL_FORMAT = {"png": "PNG", "pgm": "PPM"}  # what Image.open reports for each extension
_PIL_DEPTH = {"1": 1, "L": 8, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 16}
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


@dataclass(frozen=True, eq=False)
class SiteImage:
    """A decoded site image, before fitting.

    Attributes:
        pixels: ``(H, W)`` float64 intensities in ``0..255`` (MONOCHROME2: 0 is black).
        bits: stored bits per pixel (PNG/PGM 1, 8 or 16; DICOM BitsStored).
        photometric: DICOM PhotometricInterpretation, or ``grayscale`` for PNG/PGM.
        intensity: how values became 0..255: ``container`` (PNG/PGM), ``voi-lut``,
            ``window`` or ``stored-range`` (DICOM).
    """

    pixels: np.ndarray
    bits: int
    photometric: str
    intensity: str

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` as stored."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


# --------------------------------------------------------------------------- arguments


def check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` as int if it is an int >= ``minimum``, else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: expected an int, got {value!r}")  # noqa: TRY004 - project convention
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def check_bit_depth(bit_depth: object) -> int | None:
    """Return ``bit_depth`` if it is None, 8 or 16, else ValueError naming it."""
    if bit_depth is None:
        return None
    if isinstance(bit_depth, bool) or bit_depth not in BIT_DEPTHS:
        raise ValueError(f"bit_depth: must be 8, 16 or None (any), got {bit_depth!r}")
    return int(bit_depth)  # type: ignore[arg-type]


def check_resize(resize: object) -> str:
    """Return ``resize`` if it is one of :data:`RESIZE_RULES`, else ValueError naming it."""
    if resize not in RESIZE_RULES:
        raise ValueError(f"resize: must be one of {', '.join(RESIZE_RULES)}, got {resize!r}")
    return str(resize)


def check_format(fmt: object) -> str:
    """Return ``fmt`` if it is one of :data:`FORMATS`, else ValueError naming it."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return str(fmt)


# --------------------------------------------------------------------------- intensities


def _to_unit255(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low..high`` linearly to ``0..255`` (values outside clip)."""
    out = (np.asarray(values, dtype=np.float64) - low) * (255.0 / (high - low))
    return np.clip(out, 0.0, 255.0)


def _decode_pillow(path: Path, ext: str, bit_depth: int | None) -> SiteImage:
    """PNG/PGM -> :class:`SiteImage` (linear from the container's range)."""
    try:
        with Image.open(path) as im:
            if im.format != _PIL_FORMAT[ext]:
                raise DataError(
                    f"{path}: file content is {im.format or 'unknown'}, not {_PIL_FORMAT[ext]} "
                    f"as the .{ext} extension says"
                )
            depth = _PIL_DEPTH.get(im.mode)
            if depth is None:
                raise DataError(
                    f"{path}: not a single-channel grayscale image (Pillow mode {im.mode!r} with "
                    f"{len(im.getbands())} band(s) {''.join(im.getbands())}; expected mode 'L' "
                    f"for 8-bit or 'I;16' for 16-bit grayscale)"
                )
            if bit_depth is not None and depth != bit_depth:
                raise DataError(
                    f"{path}: wrong bit depth: {depth}-bit image (Pillow mode {im.mode!r}) but "
                    f"the site declares bit_depth={bit_depth}"
                )
            im.load()
            arr = np.asarray(im)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist") from exc
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, struct.error, ...
        raise DataError(f"{path}: cannot decode image, corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    maximum = (1 << depth) - 1
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > maximum):
        raise DataError(
            f"{path}: {depth}-bit image holds values {int(arr.min())}..{int(arr.max())}, outside 0..{maximum}"
        )
    return SiteImage(_to_unit255(arr, 0, maximum), depth, "grayscale", "container")


def _dicom_int(ds: Dataset, keyword: str) -> int | None:
    """An integer DICOM element, or None if absent or not an int."""
    value = ds.get(keyword)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _stored_range(ds: Dataset, bits: int) -> tuple[float, float]:
    """The stored value range (BitsStored, PixelRepresentation) through the Modality LUT."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float((1 << int(ds.ModalityLUTSequence[0].LUTDescriptor[2])) - 1)
    if ds.get("PixelRepresentation") == 1:
        low, high = -float(1 << (bits - 1)), float((1 << (bits - 1)) - 1)
    else:
        low, high = 0.0, float((1 << bits) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:  # apply_modality_lut needs both
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    return low, high


def _voi_lut_range(ds: Dataset) -> tuple[float, float]:
    """Output range of the first VOI LUT: min..max of its entries (some files over-declare its bit depth)."""
    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    entries = int(descriptor[0]) or 1 << 16
    table = apply_voi(np.arange(int(descriptor[1]), int(descriptor[1]) + entries, dtype=np.int64), ds)
    return float(table.min()), float(table.max())


def _window_range(ds: Dataset) -> tuple[float, float]:
    """Output range of pydicom's ``apply_windowing`` for this file: where -inf and +inf go."""
    with np.errstate(over="ignore", invalid="ignore"):
        ends = apply_windowing(np.array([-np.inf, np.inf]), ds)
    return float(ends[0]), float(ends[1])


def _has_voi_lut(ds: Dataset) -> bool:
    seq = ds.get("VOILUTSequence")
    return bool(seq) and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None


def _dicom_intensities(path: Path, ds: Dataset, arr: np.ndarray, bits: int, photometric: str) -> SiteImage:
    """Modality LUT, VOI LUT / window / stored range, MONOCHROME1 inversion -> 0..255."""
    try:
        values = apply_modality_lut(arr, ds)
        if _has_voi_lut(ds):
            if np.issubdtype(values.dtype, np.floating):
                values = np.rint(values).astype(np.int64)  # VOI LUTs index integers
            values, (low, high), how = apply_voi_lut(values, ds), _voi_lut_range(ds), "voi-lut"
        elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
            values, (low, high), how = apply_windowing(values, ds), _window_range(ds), "window"
        else:
            (low, high), how = _stored_range(ds, bits), "stored-range"
    except Exception as exc:  # ValueError (bad window width, VOI function), IndexError, NotImplementedError, ...
        raise DataError(
            f"{path}: cannot apply the DICOM Modality LUT / VOI LUT / window "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise DataError(f"{path}: DICOM intensity range {low}..{high} ({how}) is empty; cannot map it to 0..255")
    values = np.asarray(values, dtype=np.float64)
    if photometric == "MONOCHROME1":
        values = low + high - values
    return SiteImage(_to_unit255(values, low, high), bits, photometric, how)


def _decode_dicom(path: Path, bit_depth: int | None) -> SiteImage:
    """A single-frame grayscale DICOM file -> :class:`SiteImage`."""
    try:
        ds = pydicom.dcmread(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist") from exc
    except Exception as exc:  # InvalidDicomError, EOFError, OSError, ValueError, ...
        raise DataError(f"{path}: cannot read DICOM file, corrupt or not DICOM ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no PixelData element (truncated, or not an image)")
    samples = ds.get("SamplesPerPixel")
    if samples != 1:
        raise DataError(
            f"{path}: not a single-channel grayscale image (DICOM SamplesPerPixel {samples}, expected 1)"
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in _MONOCHROME:
        raise DataError(
            f"{path}: not a grayscale image (DICOM PhotometricInterpretation {photometric!r}, "
            f"expected MONOCHROME1 or MONOCHROME2)"
        )
    frames = ds.get("NumberOfFrames")
    if frames not in (None, "", 1, "1"):
        raise DataError(f"{path}: DICOM file holds {frames} frames, expected a single frame")
    bits = _dicom_int(ds, "BitsStored")
    if bits is None or not 1 <= bits <= 16:
        raise DataError(f"{path}: DICOM BitsStored is missing or not in 1..16 ({ds.get('BitsStored')!r})")
    if bit_depth is not None and not (bits == 8 if bit_depth == 8 else 9 <= bits <= 16):
        want = "8" if bit_depth == 8 else "9..16"
        raise DataError(
            f"{path}: wrong bit depth: DICOM BitsStored {bits} but the site declares "
            f"bit_depth={bit_depth} (expected BitsStored {want})"
        )
    rows, cols = _dicom_int(ds, "Rows"), _dicom_int(ds, "Columns")
    if not rows or not cols:
        raise DataError(f"{path}: DICOM Rows/Columns missing or invalid ({ds.get('Rows')!r}, {ds.get('Columns')!r})")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:  # unsupported compression, missing decoder, short pixel data, ...
        ts = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
        ts_text = f"{ts.name} ({ts})" if ts is not None else "missing"
        hint = (
            "compressed pixel data that cannot be decoded here; store it uncompressed, "
            "e.g. Explicit VR Little Endian"
            if ts is not None and ts.is_compressed
            else "corrupt or truncated"
        )
        raise DataError(
            f"{path}: cannot decode the DICOM pixel data (transfer syntax {ts_text}; {hint}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if arr.shape != (rows, cols):
        raise DataError(f"{path}: DICOM pixel data has shape {arr.shape}, expected ({rows}, {cols}) (Rows, Columns)")
    return _dicom_intensities(path, ds, arr, bits, photometric)


def decode_site_image(path: str | Path, bit_depth: int | None = None) -> SiteImage:
    """Decode one ``.png``, ``.pgm`` or ``.dcm`` file to intensities 0..255 at its own size.

    Checks, each raising :class:`DataError` naming ``path``: the file exists and decodes, its
    content matches its extension, it is single-channel grayscale, and (if ``bit_depth`` is
    given) it has that depth. See the module docstring for the intensity mapping.
    """
    path = Path(path)
    depth = check_bit_depth(bit_depth)
    ext = path.suffix.lower().lstrip(".")
    if ext not in FORMATS:
        raise DataError(
            f"{path}: unsupported image file type {path.suffix!r}; expected one of "
            + ", ".join(f".{f}" for f in FORMATS)
        )
    if not path.is_file():
        raise DataError(f"{path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    if ext == "dcm":
        return _decode_dicom(path, depth)
    return _decode_pillow(path, ext, depth)


# --------------------------------------------------------------------------- geometry


def _background(pixels: np.ndarray) -> float:
    """Median of the one-pixel border: the value padding takes."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    return float(np.median(border))


def _square(pixels: np.ndarray, resize: str) -> np.ndarray:
    """Pad (centred, background value) or centre-crop ``pixels`` to a square."""
    h, w = pixels.shape
    if h == w:
        return pixels
    if resize == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return pixels[top : top + side, left : left + side]
    side = max(h, w)
    out = np.full((side, side), _background(pixels), dtype=np.float64)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = pixels
    return out


def fit_image(pixels: np.ndarray, image_size: int, resize: str = "pad") -> np.ndarray:
    """Make ``(H, W)`` intensities (0..255) an ``(image_size, image_size)`` uint8 image.

    ``resize`` is ``pad`` or ``crop`` (module docstring); shrinking averages areas (BOX),
    enlarging is bilinear.
    """
    size = check_int("image_size", image_size, 2)
    rule = check_resize(resize)
    arr = np.asarray(pixels, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"pixels: expected a non-empty 2-D array, got shape {arr.shape}")
    square = _square(arr, rule)
    if square.shape[0] != size:
        method = Image.Resampling.BOX if square.shape[0] > size else Image.Resampling.BILINEAR
        square = np.asarray(Image.fromarray(square.astype(np.float32), mode="F").resize((size, size), method))
    return np.clip(np.rint(square), 0, 255).astype(np.uint8)


def read_site_image(
    path: str | Path, image_size: int, bit_depth: int | None = None, resize: str = "pad"
) -> np.ndarray:
    """Read one site image as ``(image_size, image_size)`` uint8: :func:`decode_site_image`,
    then :func:`fit_image` with ``resize``."""
    size = check_int("image_size", image_size, 2)
    rule = check_resize(resize)
    return fit_image(decode_site_image(path, bit_depth).pixels, size, rule)


# --------------------------------------------------------------------------- writing


def _dicom_dataset(pixels: np.ndarray, bits_stored: int) -> Dataset:
    """A minimal Secondary Capture DICOM dataset (MONOCHROME2, no patient data)."""
    allocated = 8 if pixels.dtype == np.uint8 else 16
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.PatientName = ""  # type 2 elements: present but empty, no patient data
    ds.PatientID = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(s) for s in pixels.shape)
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    data = np.ascontiguousarray(pixels, dtype="<u2" if allocated == 16 else np.uint8).tobytes()
    if len(data) % 2:
        data += b"\x00"  # DICOM values have even length
    ds.add_new(0x7FE00010, "OW" if allocated == 16 else "OB", data)
    return ds


def save_image(path: str | Path, pixels: np.ndarray, bits_stored: int | None = None) -> Path:
    """Write a 2-D grayscale image; the format follows the extension (.png, .pgm, .dcm).

    ``pixels`` uint8 gives an 8-bit file, uint16 a 16-bit one (PNG mode I;16, PGM
    maxval 65535, DICOM BitsAllocated 16). ``bits_stored`` is for DICOM only
    (default 8 for uint8, 16 for uint16; uint16 allows 9..16 and the values must
    fit). DICOM files are minimal Secondary Capture objects: MONOCHROME2,
    explicit VR little endian, generated UIDs, no patient data.
    """
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    check_format(ext)
    arr = np.asarray(pixels)
    if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels: expected a 2-D uint8 or uint16 array, got {arr.dtype} {arr.shape}")
    if ext != "dcm":
        if bits_stored is not None:
            raise ValueError(f"bits_stored: only used for .dcm files, got {bits_stored!r} for {path}")
        Image.fromarray(np.ascontiguousarray(arr)).save(path, format=_PIL_FORMAT[ext])
        return path
    if arr.dtype == np.uint8:
        bits = 8 if bits_stored is None else bits_stored
        if bits != 8:
            raise ValueError(f"bits_stored: uint8 pixels are stored with 8 bits, got {bits_stored!r}")
    else:
        bits = 16 if bits_stored is None else check_int("bits_stored", bits_stored, 9)
        if bits > 16:
            raise ValueError(f"bits_stored: uint16 pixels allow 9..16, got {bits}")
        if arr.size and int(arr.max()) >= 1 << bits:
            raise ValueError(f"pixels: maximum {int(arr.max())} does not fit in bits_stored={bits}")
    _dicom_dataset(arr, bits).save_as(path, enforce_file_format=True)
    return path
