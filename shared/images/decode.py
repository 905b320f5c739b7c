"""Decoding: every image of a split opened once, converted to RGB and resized into one ``uint8`` tensor.

DICOM files and images above 8 bits go through the run's :class:`shared.images.pixels.PixelMapping` (a window,
never a per-image stretch) before the conversion.

A corrupt or unreadable image is a :class:`DataError` naming the file (and the table row it came from), or, with
``skip_bad=True``, it is dropped and counted. Image paths are only ever put in error messages, never in logs.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from shared.core.errors import DataError
from shared.images.cache import cache_key, cached_decode
from shared.images.pixels import HIGH_DEPTH_MODES, ImageTooLarge, PixelMapping, dicom_to_uint8, is_dicom
from shared.images.pixels import too_many_pixels
from shared.images.readers import ImageSet

logger = logging.getLogger(__name__)


def bit_range(image_or_array) -> tuple[float, float] | None:
    """The value range of a high-depth image's storage type (the mapping's last resort); None for floats."""
    if isinstance(image_or_array, np.ndarray):
        dtype = image_or_array.dtype
        return (float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)) if np.issubdtype(dtype, np.integer) else None
    return None if image_or_array.mode == "F" else (0.0, 65535.0)  # PIL opens 16-bit PNG / TIFF as I;16 or I


def to_rgb(image: Image.Image, mapping: PixelMapping | None = None, where: str = "<image>") -> Image.Image:
    """Any PIL mode -> RGB. 16-bit and float grayscale (common for X-rays) go through the run's pixel mapping."""
    if image.mode in HIGH_DEPTH_MODES:
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((mapping or PixelMapping()).to_uint8(array, bit_range(image), where), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))  # transparent -> black, like an empty film
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def load_pil(file) -> Image.Image:
    """``Image.open`` + ``load`` (a truncated file fails here, not mid-training), with Pillow's decompression-bomb
    guard as an error from its limit on (Pillow only warns between one and two times ``MAX_IMAGE_PIXELS``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. PIL's "truncated data" warnings; we fail loudly instead
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(file)
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageTooLarge(too_many_pixels()) from None
    return image


def open_image(source: Any, where: tuple[str, int | None] = ("<image>", None),
               mapping: PixelMapping | None = None) -> Image.Image:
    """Load one image as RGB PIL, fully decoded. Every failure is one line naming the file (and the table row)."""
    path, line = where
    name = source if isinstance(source, str) else path

    def unreadable(reason: str, error: type[DataError] = DataError) -> DataError:
        if isinstance(source, str) and line is not None:  # from a table: name the row and the image file
            return error(f"cannot read image '{name}': {reason}", path=path, line=line)
        return error(f"cannot read image: {reason}", path=name, line=line)

    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, np.ndarray):
            array = source[..., 0] if source.ndim == 3 and source.shape[-1] == 1 else source
            if array.dtype != np.uint8:  # a 16-bit (or integer) .npz
                array = (mapping or PixelMapping()).to_uint8(array, bit_range(array), path)
            image = Image.fromarray(array)
        elif isinstance(source, dict):  # datasets Image(decode=False), or a request body
            if not source.get("bytes") and not source.get("path"):
                raise unreadable("the image is empty (0 bytes)")
            if source.get("bytes") and is_dicom(source["bytes"]):
                array = dicom_to_uint8(io.BytesIO(source["bytes"]), mapping or PixelMapping(), path)
                return Image.fromarray(array).convert("RGB")
            image = load_pil(io.BytesIO(source["bytes"]) if source.get("bytes") else source["path"])
        else:
            if not os.path.isfile(source):
                raise FileNotFoundError("file does not exist")
            if os.path.getsize(source) == 0:
                raise unreadable("the file is empty (0 bytes)")
            if is_dicom(source):
                try:
                    return Image.fromarray(dicom_to_uint8(source, mapping or PixelMapping())).convert("RGB")
                except DataError as e:
                    if line is None:
                        raise
                    raise type(e)(f"cannot read image '{source}': {e.reason}", path=path, line=line) from None
            image = load_pil(source)
        return to_rgb(image, mapping, source if isinstance(source, str) else path)
    except ImageTooLarge as e:
        if e.path is not None:  # from the DICOM reader: the file named already
            raise
        raise unreadable(e.reason, ImageTooLarge) from None
    except DataError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise unreadable(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


@dataclass
class DecodedImages:
    """``pixels`` uint8 ``(N, 3, size, size)`` for the ``kept`` indices of the set (a tensor in memory, or
    :class:`shared.images.cache.DiskPixels`); ``bad`` lists skipped refs; ``cache_hit``: read from the disk cache."""

    pixels: torch.Tensor
    kept: list[int]
    bad: list[str] = field(default_factory=list)
    cache_hit: bool = False


def _decode_each(images: ImageSet, width: int, height: int, skip_bad: bool, resample: int,
                 mapping: PixelMapping | None, write) -> tuple[list[int], list[str]]:
    """Decode every image in order, ``write(chw_uint8)`` each readable one; ``(kept, bad)``."""
    kept, bad = [], []
    for i, (source, ref) in enumerate(zip(images.sources, images.refs)):
        try:
            image = open_image(source, ref, mapping)
        except DataError as e:
            if not skip_bad:
                raise
            bad.append(str(e))
            continue
        if image.size != (width, height):
            image = image.resize((width, height), resample=resample)
        write(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
        kept.append(i)
    if not kept:
        raise DataError("no readable images", path=images.origin)
    return kept, bad


def decode_images(
    images: ImageSet, size: int | tuple[int, int], skip_bad: bool = False, resample: int = Image.BICUBIC,
    mapping: PixelMapping | None = None, cache_dir: str | None = None,
) -> DecodedImages:
    """Decode, convert to RGB and resize every image once: into memory, or with ``cache_dir`` into the disk cache
    (:mod:`shared.images.cache`), or read from it when an earlier run decoded the same inputs the same way.

    Images are resized to exactly ``size`` (no crop, so nothing at the edge of a scan is cut off). A bad image
    raises :class:`DataError`, or is skipped and listed in ``bad`` with ``skip_bad``.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if cache_dir:

        key = cache_key(images.sources, (height, width), resample, mapping, skip_bad)
        pixels, kept, bad, hit = cached_decode(
            cache_dir, key, len(images), (3, height, width),
            lambda write: _decode_each(images, width, height, skip_bad, resample, mapping, write))
        decoded = DecodedImages(pixels, kept, bad, hit)
    else:
        out = torch.empty((len(images), 3, height, width), dtype=torch.uint8)

        def write(chw):
            out[len(kept_so_far)] = torch.from_numpy(chw.copy())
            kept_so_far.append(None)

        kept_so_far: list = []
        kept, bad = _decode_each(images, width, height, skip_bad, resample, mapping, write)
        decoded = DecodedImages(out[: len(kept)].clone() if len(kept) < len(images) else out, kept, bad)
    if decoded.bad:
        logger.warning("skipped %d unreadable image(s) in %s", len(decoded.bad), os.path.basename(images.origin))
    return decoded
