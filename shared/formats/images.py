"""Image classification data: class folders, MedMNIST ``.npz`` files, and tables (CSV/JSONL) of image paths.

Every reader returns an :class:`ImageSet`: where each image comes from (a path, an array or a PIL image), its
label(s) and a short reference used in error messages. :func:`decode_images` then turns a set into one ``uint8``
tensor ``(N, 3, size, size)`` *once*, before training, so no image is decoded or resized again per step. Grayscale
(and RGBA, palette, 16-bit) images become 3-channel RGB because pretrained backbones expect RGB.

A corrupt or unreadable image is a :class:`DataError` naming the file (and the table row it came from), or, with
``skip_bad=True``, it is dropped and counted. Image paths are only ever put in error messages, never in logs.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from shared.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
NPZ_SPLITS = {"train": "train", "validation": "val", "test": "test"}


@dataclass
class ImageSet:
    """One split: image sources, labels and where each came from.

    ``sources[i]`` is a file path, a ``uint8`` array ``(H, W)`` / ``(H, W, C)``, a PIL image, or a ``datasets``
    image dict (``{"bytes": ..., "path": ...}``). ``labels[i]`` is a class name (single-label), a list of class
    names (multi-label) or ``None`` (unlabeled, prediction only). ``refs[i]`` is ``(file, line)`` for messages.
    """

    sources: list[Any]
    labels: list[Any]
    refs: list[tuple[str, int | None]]
    origin: str
    multi_label: bool = False
    label_names: list[str] | None = None  # the natural class order, when the source defines one (folders, npz)

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def labeled(self) -> bool:
        return all(label is not None for label in self.labels)

    def select(self, indices: Sequence[int]) -> "ImageSet":
        return ImageSet(
            [self.sources[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.refs[i] for i in indices],
            self.origin,
            self.multi_label,
            self.label_names,
        )


# ----------------------------------------------------------------------------------------------------- readers
def read_image_folder(root: str) -> ImageSet:
    """``root/<class>/<image>``: the subfolder name is the class (images may sit in nested folders below it)."""
    if not os.path.isdir(root):
        raise DataError("image folder does not exist", path=root)
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise DataError("no class subfolders (expected <folder>/<class>/<image>)", path=root)
    sources, labels = [], []
    for name in classes:
        found = []
        for folder, subdirs, files in os.walk(os.path.join(root, name)):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            found += [os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES)]
        if not found:
            raise DataError(f"class folder '{name}' has no images ({', '.join(IMAGE_SUFFIXES)})", path=root)
        sources += found
        labels += [name] * len(found)
    return ImageSet(sources, labels, [(p, None) for p in sources], root, False, classes)


def read_npz(path: str, split: str) -> ImageSet:
    """A MedMNIST ``.npz``: ``{train,val,test}_{images,labels}``; split is ``train``, ``validation`` or ``test``.

    Images ``(N, H, W)`` (grayscale) or ``(N, H, W, 1|3)``; labels ``(N,)``/``(N, 1)`` class ids, or ``(N, K)``
    0/1 columns for multi-label data (e.g. ChestMNIST). Class names are the ids as strings ("0", "1", ...).
    """
    prefix = NPZ_SPLITS.get(split, split)
    try:
        data = np.load(path, allow_pickle=False)  # never unpickle objects from a data file
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read .npz ({str(e).splitlines()[0]})", path=path) from None
    keys = (f"{prefix}_images", f"{prefix}_labels")
    missing = [k for k in keys if k not in data.files]
    if missing:
        raise DataError(f"missing array(s) {', '.join(missing)} (has: {', '.join(data.files)})", path=path)
    try:
        images, labels = data[keys[0]], data[keys[1]]
    except ValueError as e:  # object arrays need pickle
        raise DataError(f"cannot read arrays ({str(e).splitlines()[0]})", path=path) from None
    if images.ndim == 4 and images.shape[-1] not in (1, 3) or images.ndim not in (3, 4):
        raise DataError(
            f"{keys[0]} has shape {images.shape}; expected (N, H, W) or (N, H, W, 1|3) (3-D volumes are not supported)",
            path=path,
        )
    if len(images) != len(labels):
        raise DataError(f"{keys[0]} has {len(images)} images but {keys[1]} has {len(labels)} labels", path=path)
    if len(images) == 0:
        raise DataError(f"{keys[0]} is empty", path=path)
    images = _to_uint8(images, path, keys[0])
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.number):
        raise DataError(f"{keys[1]} must be numeric with shape (N,), (N, 1) or (N, K)", path=path)
    if (labels < 0).any() or (labels != np.round(labels)).any():
        bad = int(np.argwhere((labels < 0) | (labels != np.round(labels)))[0][0])
        raise DataError(f"{keys[1]}[{bad}] is not a non-negative integer class id", path=path)
    labels = labels.astype(np.int64)
    multi = labels.shape[1] > 1
    refs = [(f"{path}[{keys[0]}][{i}]", None) for i in range(len(images))]
    if multi:
        if labels.max() > 1:
            bad = int(np.argwhere(labels > 1)[0][0])
            raise DataError(f"{keys[1]}[{bad}] is not 0/1 (multi-label columns must be 0/1)", path=path)
        names = [str(k) for k in range(labels.shape[1])]
        label_lists = [[names[k] for k in np.flatnonzero(row)] for row in labels]
        return ImageSet(list(images), label_lists, refs, path, True, names)
    names = [str(k) for k in range(int(labels.max()) + 1)]
    return ImageSet(list(images), [str(v) for v in labels[:, 0]], refs, path, False, names)


def read_image_table(
    path: str,
    image_column: str = "image",
    label_column: str = "label",
    label_separator: str | None = None,
    image_root: str | None = None,
) -> ImageSet:
    """A CSV/TSV/JSON(L)/parquet table with an image-path column and a label column.

    Relative paths are resolved against ``image_root`` (default: the table's own folder). A label column holding
    JSON lists, or strings split on ``label_separator`` (e.g. ``";"``), makes the set multi-label. Without the
    label column the set is unlabeled (prediction only).
    """
    from shared.formats.tables import read_table, require_columns, row_location

    table = read_table(path)
    require_columns(table, [image_column], path)
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
    has_labels = label_column in table.column_names
    raw_labels = table[label_column] if has_labels else [None] * len(table)
    multi = label_separator is not None or any(isinstance(v, (list, tuple)) for v in raw_labels)
    sources, labels, refs = [], [], []
    for index, (image, label) in enumerate(zip(table[image_column], raw_labels)):
        line = row_location(path, index)
        if isinstance(image, dict):  # a datasets Image column saved with the table
            sources.append(image)
        elif isinstance(image, str) and image.strip():
            image = image.strip()
            sources.append(image if os.path.isabs(image) else os.path.join(root, image))
        else:
            raise DataError(f"empty or missing image path in column '{image_column}'", path=path, line=line)
        if has_labels:
            label = _parse_label(label, multi, label_separator)
            if label is None:
                raise DataError(f"empty or missing label in column '{label_column}'", path=path, line=line)
        labels.append(label)
        refs.append((path, line))
    return ImageSet(sources, labels, refs, path, multi, None)


def _parse_label(value: Any, multi: bool, separator: str | None):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if multi:
        if isinstance(value, (list, tuple)):
            return [str(v).strip() for v in value if str(v).strip()]  # [] = no positive label, allowed
        text = str(value).strip()
        return [v.strip() for v in text.split(separator or ";") if v.strip()]
    text = str(value).strip()
    return text or None


def read_hub_split(dataset, source: str, image_column: str = "image", label_column: str = "label") -> ImageSet:
    """A ``datasets.Dataset`` with an Image column (from the Hub or ``load_from_disk``). ClassLabel names are kept."""
    import datasets

    if image_column not in dataset.column_names:
        raise DataError(f"column '{image_column}' not found (columns: {', '.join(dataset.column_names)})", path=source)
    if isinstance(dataset.features.get(image_column), datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))  # decode later, one by one
    names = None
    feature = dataset.features.get(label_column)
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
    multi = isinstance(feature, (datasets.Sequence, list))
    if multi and isinstance(getattr(feature, "feature", None), datasets.ClassLabel):
        names = list(feature.feature.names)
    labels: list[Any] = [None] * len(dataset)
    if label_column in dataset.column_names:
        raw = dataset[label_column]
        if names is not None:
            labels = [[names[v] for v in r] for r in raw] if multi else [names[v] for v in raw]
        else:
            labels = [[str(v) for v in r] for r in raw] if multi else [str(v) for v in raw]
    refs = [(f"{source}[{i}]", None) for i in range(len(dataset))]
    return ImageSet(list(dataset[image_column]), labels, refs, source, multi, names)


def read_images(path: str, split: str, **table_kwargs) -> ImageSet:
    """Pick the reader from what ``path`` is: a folder of class folders, a ``.npz`` file, or a table."""
    if os.path.isdir(path):
        entries = os.listdir(path)
        if "dataset_info.json" in entries or "state.json" in entries:  # a datasets.save_to_disk folder
            from shared.formats.tables import read_table

            return read_hub_split(read_table(path), path, table_kwargs.get("image_column", "image"),
                                  table_kwargs.get("label_column", "label"))
        return read_image_folder(path)
    if path.endswith(".npz"):
        return read_npz(path, split)
    return read_image_table(path, **table_kwargs)


# --------------------------------------------------------------------------------------------------- decoding
def _to_uint8(array: np.ndarray, path: str, key: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating) and array.size and 0.0 <= array.min() and array.max() <= 1.0:
        return np.round(array * 255).astype(np.uint8)  # images stored as floats in [0, 1]
    if np.issubdtype(array.dtype, np.integer) and array.size and 0 <= array.min() and array.max() <= 255:
        return array.astype(np.uint8)
    raise DataError(f"{key} must be uint8 (0-255) or floats in [0, 1], got {array.dtype}", path=path)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. 16-bit and float grayscale (common for X-rays) are rescaled to 8 bits, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) * 255 if high > low else np.zeros_like(array)
        image = Image.fromarray(array.round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))  # transparent -> black, like an empty film
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def open_image(source: Any, where: tuple[str, int | None] = ("<image>", None)) -> Image.Image:
    """Load one image as RGB PIL, fully decoded (a truncated file fails here, not mid-training)."""
    path, line = where
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, np.ndarray):
            array = source[..., 0] if source.ndim == 3 and source.shape[-1] == 1 else source
            image = Image.fromarray(array)
        elif isinstance(source, dict):  # datasets Image(decode=False)
            if source.get("bytes"):
                image = Image.open(io.BytesIO(source["bytes"]))
            else:
                image = Image.open(source["path"])
        else:
            if not os.path.isfile(source):
                raise FileNotFoundError("file does not exist")
            image = Image.open(source)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. PIL's "truncated data" warnings; we fail loudly instead
            image.load()
        return to_rgb(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        name = source if isinstance(source, str) else path
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(source, str) and line is not None:  # from a table: name the row and the image file
            raise DataError(f"cannot read image '{name}': {reason}", path=path, line=line) from None
        raise DataError(f"cannot read image: {reason}", path=name, line=line) from None


@dataclass
class DecodedImages:
    """``pixels`` uint8 ``(N, 3, size, size)`` for the ``kept`` indices of the set; ``bad`` lists skipped refs."""

    pixels: torch.Tensor
    kept: list[int]
    bad: list[str] = field(default_factory=list)


def decode_images(
    images: ImageSet, size: int | tuple[int, int], skip_bad: bool = False, resample: int = Image.BICUBIC
) -> DecodedImages:
    """Decode, convert to RGB and resize every image once.

    Images are resized to exactly ``size`` (no crop, so nothing at the edge of a scan is cut off). A bad image
    raises :class:`DataError`, or is skipped and listed in ``bad`` with ``skip_bad``.
    """
    height, width = (size, size) if isinstance(size, int) else size
    out = torch.empty((len(images), 3, height, width), dtype=torch.uint8)
    kept, bad = [], []
    for i, (source, ref) in enumerate(zip(images.sources, images.refs)):
        try:
            image = open_image(source, ref)
        except DataError as e:
            if not skip_bad:
                raise
            bad.append(str(e))
            continue
        if image.size != (width, height):
            image = image.resize((width, height), resample=resample)
        out[len(kept)] = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        kept.append(i)
    if bad:
        logger.warning("skipped %d unreadable image(s) in %s", len(bad), os.path.basename(images.origin))
    if not kept:
        raise DataError("no readable images", path=images.origin)
    return DecodedImages(out[: len(kept)].clone() if len(kept) < len(images) else out, kept, bad)


# ----------------------------------------------------------------------------------------------------- labels
def label_names_for(sets: Sequence[ImageSet]) -> list[str]:
    """The class list: the natural order of the first set that defines one, plus any other names seen, sorted."""
    names: list[str] = []
    for s in sets:
        if s.label_names:
            names = list(s.label_names)
            break
    seen = set()
    for s in sets:
        for label in s.labels:
            if label is None:
                continue
            seen.update(label if isinstance(label, list) else [label])
    extra = sorted(seen - set(names), key=lambda n: (0, int(n)) if n.isdigit() else (1, n))
    return names + extra


def encode_labels(images: ImageSet, label2id: dict[str, int], known_as: str = "the model's labels") -> np.ndarray:
    """Class ids ``(N,)`` int64, or multi-hot ``(N, K)`` float32 for multi-label sets."""
    def unknown(label, i):
        file, line = images.refs[i]
        return DataError(f"label '{label}' is not one of {known_as} ({', '.join(label2id)})", path=file, line=line)

    if images.multi_label:
        out = np.zeros((len(images), len(label2id)), dtype=np.float32)
        for i, labels in enumerate(images.labels):
            for label in labels:
                if label not in label2id:
                    raise unknown(label, i)
                out[i, label2id[label]] = 1.0
        return out
    ids = np.empty(len(images), dtype=np.int64)
    for i, label in enumerate(images.labels):
        if label not in label2id:
            raise unknown(label, i)
        ids[i] = label2id[label]
    return ids
