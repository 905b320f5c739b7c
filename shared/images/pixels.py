"""Pixel values to 8 bits: DICOM files (pydicom) and 16-bit / float images, mapped by one rule per run.

DICOM, in the standard's order: modality LUT (rescale slope / intercept, or a Modality LUT Sequence) -> VOI LUT or
window -> MONOCHROME1 inverted -> 8 bits (-> 3 channels in :mod:`shared.images.decode`). The window of a grayscale
image with more than 8 bits is, first that applies:

1. ``--window CENTER,WIDTH`` or a named CT preset (:data:`PRESETS`), the same for every image;
2. a DICOM file's own VOI LUT or window (what the modality chose for display);
3. the run's window: the 0.5th to 99.5th percentile of the training images' values (after the modality LUT),
   measured once on up to :data:`SAMPLE_IMAGES` training images, saved in ``pixel_mapping.json`` and applied by
   evaluation and prediction;
4. without any (a folder trained on 8-bit images, then given 16-bit ones): the full range of the stored bit depth.

Never a per-image minimum-to-maximum stretch: a value keeps one meaning (a Hounsfield unit, an exposure) across the
run. 8-bit images are not touched. Header values (names, IDs, dates) are never logged or written: errors name the
file only, and ``--group_column`` reads a DICOM attribute only to keep each patient's images in one split.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from shared.core.errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom")
ORDINARY_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
PIXEL_MAPPING_FILE = "pixel_mapping.json"
# CT windows (center, width) in Hounsfield units, as radiology references quote them
PRESETS = {"lung": (-600.0, 1500.0), "mediastinum": (50.0, 350.0), "soft_tissue": (50.0, 400.0),
           "bone": (400.0, 1800.0), "brain": (40.0, 80.0)}
PERCENTILES = (0.5, 99.5)
SAMPLE_IMAGES = 256  # training images the run's window is measured on (evenly spaced)
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # PIL modes of 16-bit and float grayscale images
DECODER_HINT = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (the project's `dicom` extra)"


def parse_window(text: str) -> tuple[float, float]:
    """``CENTER,WIDTH`` or a preset name -> (center, width); a one-line error otherwise."""
    name = text.strip().lower()
    if name in PRESETS:
        return PRESETS[name]
    try:
        center, width = (float(v) for v in text.split(","))
    except ValueError:
        raise DataError(f"--window must be CENTER,WIDTH (e.g. -600,1500) or one of {', '.join(PRESETS)}; "
                        f"got '{text}'") from None
    if not np.isfinite(center) or not width > 0 or not np.isfinite(width):
        raise DataError(f"--window width must be a positive number, got '{text}'")
    return center, width


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear window (DICOM's LINEAR_EXACT): center - width/2 -> 0, center + width/2 -> 255, clipped, as uint8."""
    scaled = (np.asarray(values, dtype=np.float64) - (center - width / 2)) / width
    return np.round(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


@dataclass
class PixelMapping:
    """How the run maps values above 8 bits: a window for all of them, or none (then files' own, then bit depth)."""

    window: tuple[float, float] | None = None
    source: str = "none"  # "--window", "preset <name>", "training percentiles" or "none"
    file_windows: bool = True  # a DICOM's own VOI LUT / window applies unless --window was given

    @classmethod
    def given(cls, text: str) -> PixelMapping:
        name = text.strip().lower()
        return cls(parse_window(text), f"preset {name}" if name in PRESETS else "--window", file_windows=False)

    def save(self, folder: str) -> str:
        path = os.path.join(folder, PIXEL_MAPPING_FILE)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({**asdict(self), "percentiles": list(PERCENTILES)}, f, indent=2)
        return path

    @classmethod
    def load(cls, folder: str) -> PixelMapping:
        """The mapping saved with a trained folder; folders from before it existed map by bit depth."""
        path = os.path.join(folder, PIXEL_MAPPING_FILE)
        if not os.path.isfile(path):
            return cls()
        try:
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
            window = saved["window"]
            return cls(tuple(float(v) for v in window) if window else None, str(saved["source"]),
                       bool(saved["file_windows"]))
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"cannot read {PIXEL_MAPPING_FILE} ({type(e).__name__})", path=folder) from None

    def to_uint8(self, values: np.ndarray, bit_range: tuple[float, float] | None, where: str) -> np.ndarray:
        """Values above 8 bits (no window of their own) -> uint8 by the run's window, else by ``bit_range``."""
        if self.window is not None:
            return apply_window(values, *self.window)
        if bit_range is None:
            raise DataError("a floating-point image needs a window: pass --window CENTER,WIDTH (or a preset) when "
                            "training", path=where)
        low, high = bit_range
        return apply_window(values, (low + high) / 2, high - low)

    def describe(self) -> str:
        if self.window is None:
            return "DICOM windows from the files, else the stored bit depth's full range"
        center, width = self.window
        text = f"window center {center:g}, width {width:g} ({self.source})"
        return text + ("; DICOM files with a window of their own use it" if self.file_windows else "")


# ------------------------------------------------------------------------------------------------------ DICOM
def dicom_start(head: bytes) -> str | None:
    """How a file's first 132 bytes say it is DICOM: ``"preamble"`` ('DICM' at byte 128, the standard's file
    format), ``"meta"`` (no preamble, but it starts with the file meta group (0002,xxxx), explicit VR, as some
    older writers save it; pydicom reads these with ``force=True``), or None."""
    if head[128:132] == b"DICM":
        return "preamble"
    if head[:2] == b"\x02\x00" and head[4:6] in (b"UL", b"OB", b"UI", b"SH", b"AE"):
        return "meta"
    return None


def file_head(path: str) -> bytes:
    """The first 132 bytes of a file (enough for :func:`dicom_start`); empty if it cannot be opened."""
    try:
        with open(path, "rb") as f:
            return f.read(132)
    except OSError:
        return b""


def is_dicom(path: Any) -> bool:
    """A ``.dcm``/``.dicom`` path, or any file (or bytes) that starts as DICOM does (:func:`dicom_start`), whatever
    its name: PACS exports often write files without an extension."""
    if isinstance(path, (bytes, bytearray)):
        return dicom_start(bytes(path[:132])) is not None
    if not isinstance(path, str):
        return False
    if path.lower().endswith(DICOM_SUFFIXES):
        return True
    if path.lower().endswith(ORDINARY_SUFFIXES):  # decoding opens every image: no second open to rule these out
        return False
    return dicom_start(file_head(path)) is not None


def syntax_name(ds) -> str:
    """The file meta's transfer syntax as ``name (UID)`` (the one header value errors may name), or a note that
    there is none."""
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not uid:
        return "no transfer syntax in its file meta"
    return f"transfer syntax {uid.name} ({uid})" if uid.name != str(uid) else f"transfer syntax {uid} (unknown)"


@contextmanager
def quiet_pydicom():
    """pydicom's warnings quote header values (an invalid UID, a name): silenced while a file is read."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@dataclass
class DicomPixels:
    """One frame after the modality LUT: ``values`` float64 (H, W), or ``rgb`` uint8 (H, W, 3) for colour files."""

    values: np.ndarray | None
    rgb: np.ndarray | None
    own_window: np.ndarray | None  # the file's VOI LUT / window already applied, as uint8
    bit_range: tuple[float, float]
    monochrome1: bool


def read_dicom(source: Any, path: str | None = None) -> DicomPixels:
    """Decode one DICOM file (a path, or a binary file object named ``path``); every failure is one line naming
    the file (never a header value)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = path or source
    head = bytes(source.read(132)) if hasattr(source, "read") else file_head(source)
    if hasattr(source, "seek"):
        source.seek(0)
    if not head:
        raise DataError("the file is empty (0 bytes)", path=path)
    try:
        with quiet_pydicom():  # a file meta group without the preamble: read as pydicom can, with force
            ds = pydicom.dcmread(source, force=dicom_start(head) == "meta")
    except InvalidDicomError:
        raise DataError("not a DICOM file (neither the 'DICM' preamble nor a file meta group at its start)",
                        path=path) from None
    except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
        raise DataError(f"cannot read DICOM file ({type(e).__name__})", path=path) from None
    if "PixelData" not in ds:
        if _holds_pixel_data_tag(source):  # the tag is in the file, but parsing by the declared syntax missed it
            raise DataError(f"its data does not match its {syntax_name(ds)}: pydicom parsed no pixel data, though "
                            "the file holds a Pixel Data element; re-save it with the syntax it is written in",
                            path=path)
        raise DataError(f"DICOM file has no pixel data (not an image; {syntax_name(ds)})", path=path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(f"multi-frame DICOM ({frames} frames); the recipe reads single-frame images: save one frame "
                        "per file", path=path)
    if int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) > _max_pixels():
        raise ImageTooLarge(too_many_pixels(), path=path)
    try:
        with quiet_pydicom():
            array = ds.pixel_array
    except RuntimeError as e:
        if "missing dependencies" in str(e) or "no pixel data decoders" in str(e).lower():
            syntax = ds.file_meta.TransferSyntaxUID.name
            raise DataError(f"its pixel data is compressed ({syntax}) and no installed decoder reads it: "
                            f"{DECODER_HINT}", path=path) from None
        raise DataError(f"cannot decode DICOM pixel data ({type(e).__name__}) by its {syntax_name(ds)}",
                        path=path) from None
    except (ValueError, AttributeError, KeyError, TypeError, NotImplementedError) as e:
        # most often the pixel data is not in the declared syntax (compressed data declared native, or the reverse)
        raise DataError(f"cannot decode DICOM pixel data ({type(e).__name__}) by its {syntax_name(ds)}: the pixel "
                        "data may be stored in another syntax", path=path) from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    bits = int(ds.get("BitsStored", 8) or 8)
    if int(ds.get("SamplesPerPixel", 1) or 1) == 3:  # colour (pydicom converts YBR to RGB)
        rgb = array if array.dtype == np.uint8 else apply_window(array, (2**bits - 1) / 2, 2**bits - 1)
        return DicomPixels(None, np.ascontiguousarray(rgb), None, (0.0, 255.0), False)
    if array.ndim != 2:
        raise DataError(f"DICOM pixel data has shape {array.shape}; expected one grayscale or colour frame", path=path)
    try:
        values = np.asarray(apply_modality_lut(array, ds), dtype=np.float64)
        stored = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if int(ds.get("PixelRepresentation", 0)) else (0, 2**bits - 1)
        bit_range = tuple(sorted(float(v) for v in apply_modality_lut(np.array(stored), ds)))
        own = None
        if "VOILUTSequence" in ds or "WindowCenter" in ds:
            windowed = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
            low, high = (float(v) for v in np.asarray(apply_voi_lut(np.array([-1e12, 1e12]), ds), dtype=np.float64))
            low, high = min(low, high), max(low, high)
            own = apply_window(windowed, (low + high) / 2, high - low) if high > low else None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise DataError(f"cannot apply the DICOM file's rescale or window ({type(e).__name__})", path=path) from None
    return DicomPixels(values, None, own, bit_range, photometric == "MONOCHROME1")


def _holds_pixel_data_tag(source: Any) -> bool:
    """Whether the raw bytes hold the Pixel Data tag (7FE0,0010) in either byte order (only read after a failure)."""
    try:
        if hasattr(source, "read"):
            source.seek(0)
            raw = source.read()
        else:
            with open(source, "rb") as f:
                raw = f.read()
    except OSError:
        return False
    return b"\xe0\x7f\x10\x00" in raw or b"\x7f\xe0\x00\x10" in raw


def _max_pixels() -> int:
    from PIL import Image

    return int(Image.MAX_IMAGE_PIXELS or 0) or 2**62  # None in Pillow turns the guard off


class ImageTooLarge(DataError):
    """More pixels than Pillow decodes (``Image.MAX_IMAGE_PIXELS``): a decompression bomb, or a scan to downsample
    first. The service answers it with 413."""


def too_many_pixels() -> str:
    return (f"the image has more than {_max_pixels()} pixels (Pillow's Image.MAX_IMAGE_PIXELS, its guard against "
            "decompression bombs); downsample it first")


def dicom_to_uint8(source: Any, mapping: PixelMapping, path: str | None = None) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8: the file's frame through the run's mapping, MONOCHROME1 inverted after it."""
    path = path or source
    pixels = read_dicom(source, path)
    if pixels.rgb is not None:
        return pixels.rgb
    if pixels.own_window is not None and mapping.file_windows:
        out = pixels.own_window
    else:
        out = mapping.to_uint8(pixels.values, pixels.bit_range, path)
    return 255 - out if pixels.monochrome1 else out


def dicom_attribute(path: str, keyword: str) -> str:
    """One header attribute as a group key (``--group_column PatientID``): used to split, never written or logged."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[keyword],
                                 force=dicom_start(file_head(path)) == "meta")
    except (InvalidDicomError, OSError, ValueError, KeyError, TypeError, EOFError) as e:
        raise DataError(f"cannot read DICOM header ({type(e).__name__})", path=path) from None
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        raise DataError(f"DICOM file has no {keyword} (--group_column)", path=path)
    return str(value)


def dicom_groups(paths: list[Any], keyword: str, origin: str) -> list[str]:
    """``--group_column`` as a DICOM attribute of every training image (e.g. PatientID, StudyInstanceUID)."""
    from pydicom.datadict import tag_for_keyword

    if tag_for_keyword(keyword) is None:
        raise DataError(f"--group_column '{keyword}' is neither a column of the training table nor a DICOM attribute "
                        "keyword (e.g. PatientID, StudyInstanceUID)", path=origin)
    not_dicom = next((p for p in paths if not is_dicom(p)), None)
    if not_dicom is not None:
        raise DataError(f"--group_column {keyword} is a DICOM attribute, but this training image is not a DICOM file",
                        path=not_dicom if isinstance(not_dicom, str) else origin)
    return [dicom_attribute(p, keyword) for p in paths]


# ------------------------------------------------------------------------------------------- the run's window
def high_depth_values(source: Any) -> np.ndarray | None:
    """The values the run's window is measured on, or None for images that do not need it (8-bit, or a DICOM
    with its own window)."""
    from PIL import Image

    if isinstance(source, np.ndarray):
        return source.astype(np.float64) if source.dtype != np.uint8 else None
    if is_dicom(source):
        try:
            pixels = read_dicom(source)
        except DataError:
            return None  # decoding reports it (or skips it, --skip_bad_images) with the usual one line
        return pixels.values if pixels.rgb is None and pixels.own_window is None else None
    if isinstance(source, str) and os.path.isfile(source):
        try:
            with Image.open(source) as image:
                if image.mode in HIGH_DEPTH_MODES:
                    return np.asarray(image, dtype=np.float64)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None  # unreadable: decoding reports it (or skips it) with the usual one line
    return None


def fit_pixel_mapping(sources: list[Any], window: str | None) -> PixelMapping:
    """The run's mapping: ``--window`` when given, else percentiles of the training images above 8 bits."""
    if window:
        return PixelMapping.given(window)
    picks = np.unique(np.linspace(0, len(sources) - 1, min(SAMPLE_IMAGES, len(sources))).round().astype(int))
    samples = []
    for i in picks:
        values = high_depth_values(sources[i])
        if values is not None:
            flat = values.ravel()
            samples.append(flat[:: max(1, flat.size // 16384)])  # ~16k values an image, evenly spread
    if not samples:
        return PixelMapping()
    low, high = np.percentile(np.concatenate(samples), PERCENTILES)
    if not high > low:
        high = low + 1.0
    return PixelMapping(((float(low) + float(high)) / 2, float(high) - float(low)), "training percentiles")
