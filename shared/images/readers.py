"""Image classification data: class folders, MedMNIST ``.npz`` files, and tables (CSV/JSONL) of image paths.

Every reader returns an :class:`ImageSet`: where each image comes from (a path, an array or a PIL image), its
label(s) and a short reference used in error messages; nothing is decoded yet. :func:`shared.images.decode.
decode_images` then turns a set into one ``uint8`` tensor ``(N, 3, size, size)`` *once*, before training, so no
image is decoded or resized again per step. Image paths are only ever put in error messages, never in logs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from shared.core.errors import DataError
from shared.data.labels import encode_labels as encode
from shared.data.labels import names_in, parse_label_column, sort_label_names
from shared.data.tables import drop_unlabelled_rows as drop_empty_labels, has_column, read_table, require_columns
from shared.images.pixels import DICOM_SUFFIXES, ORDINARY_SUFFIXES, is_dicom

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = ORDINARY_SUFFIXES + DICOM_SUFFIXES
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
def is_image_file(path: str) -> bool:
    """An image by its name (:data:`IMAGE_SUFFIXES`), or a DICOM file by its first bytes whatever its name (PACS
    exports often write files without an extension). Hidden files (macOS "._name.png" resource forks among them)
    and DICOMDIR (an index of a DICOM export, not an image) are not."""
    name = os.path.basename(path)
    if name.startswith(".") or name.upper() == "DICOMDIR":
        return False
    return name.lower().endswith(IMAGE_SUFFIXES) or is_dicom(path)


def read_image_folder(root: str) -> ImageSet:
    """``root/<class>/<image>``: the subfolder name is the class. Images in nested folders below it count as that
    class too (logged with a count), files that are not images are left out (logged with a count)."""
    if not os.path.isdir(root):
        raise DataError("image folder does not exist", path=root)
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise DataError("no class subfolders (expected <folder>/<class>/<image>)", path=root)
    sources, labels, nested, left_out = [], [], 0, []
    for name in classes:
        found = []
        for folder, subdirs, files in os.walk(os.path.join(root, name)):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            paths = [os.path.join(folder, f) for f in sorted(files) if not f.startswith(".")]
            kept = {p: is_image_file(p) for p in paths}
            images = [p for p in paths if kept[p]]
            left_out += [p for p in paths if not kept[p]]
            nested += len(images) if folder != os.path.join(root, name) else 0
            found += images
        if not found:
            raise DataError(f"class folder '{name}' has no images ({', '.join(IMAGE_SUFFIXES)}, or DICOM files "
                            "without an extension)", path=root)
        sources += found
        labels += [name] * len(found)
    where = os.path.basename(os.path.normpath(root))  # no full paths in logs
    if nested:
        logger.info("%s: %d of %d images sit in folders nested below their class folder and take its class",
                    where, nested, len(sources))
    if left_out:
        kinds = sorted({os.path.splitext(p)[1].lower() or "no extension" for p in left_out})
        logger.warning("%s: %d file(s) in the class folders left out as not images (%s)", where, len(left_out),
                       ", ".join(kinds))
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
    delimiter: str | None = None,
    encoding: str | None = None,
    drop_unlabelled_rows: bool = False,
) -> ImageSet:
    """A CSV/TSV/JSON(L)/parquet table with an image-path column and a label column.

    Relative paths are resolved against ``image_root`` (default: the table's own folder). Label cells as in
    :mod:`shared.data.labels`: a list per row (a JSON list, or names split on ``label_separator``) makes the set
    multi-label. Without the label column the set is unlabeled (prediction only).
    """

    table = read_table(path, delimiter, encoding)  # --delimiter / --encoding / --drop_unlabelled_rows: shared.data.tables
    if drop_unlabelled_rows:
        table = drop_empty_labels(table, label_column)
    require_columns(table, [image_column])
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
    labels: list[Any] = [None] * len(table)
    if has_column(table, label_column):
        labels = parse_label_column(table[label_column], table.where, label_separator, label_column)
    multi = label_separator is not None or any(isinstance(label, list) for label in labels)
    sources, refs = [], []
    for index, image in enumerate(table[image_column]):
        if isinstance(image, dict):  # a datasets Image column saved with the table
            sources.append(image)
        elif isinstance(image, str) and image.strip():
            image = image.strip()
            sources.append(image if os.path.isabs(image) else os.path.join(root, image))
        else:
            raise DataError(f"empty or missing image path in column '{image_column}'", *table.where(index))
        refs.append(table.where(index))
    return ImageSet(sources, labels, refs, path, multi, None)


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

            return read_hub_split(read_table(path).dataset, path, table_kwargs.get("image_column", "image"),
                                  table_kwargs.get("label_column", "label"))
        return read_image_folder(path)
    if path.endswith(".npz"):
        return read_npz(path, split)
    return read_image_table(path, **table_kwargs)


def _to_uint8(array: np.ndarray, path: str, key: str) -> np.ndarray:
    """uint8 as it is; floats in [0, 1] scaled to 0-255; other integers (16-bit scans) kept for the run's window."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating) and array.size and 0.0 <= array.min() and array.max() <= 1.0:
        return np.round(array * 255).astype(np.uint8)  # images stored as floats in [0, 1]
    if np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize <= 4:
        return array  # mapped to 8 bits by shared.images.pixels (a window, the same for every image)
    raise DataError(f"{key} must be uint8, 16-bit integers or floats in [0, 1], got {array.dtype}", path=path)

# ----------------------------------------------------------------------------------------------------- labels
def label_names_for(sets: Sequence[ImageSet]) -> list[str]:
    """The class list: the natural order of the first set that defines one (folders, ``.npz``), then any other
    names seen (numeric ones in numeric order)."""

    natural = next((s.label_names for s in sets if s.label_names), None)
    return sort_label_names(set().union(*(names_in([x for x in s.labels if x is not None]) for s in sets)), natural)


def encode_image_labels(images: ImageSet, label2id: dict[str, int], known_as: str = "the model's labels") -> np.ndarray:
    """Class ids ``(N,)`` int64, or multi-hot ``(N, K)`` float32 for multi-label sets."""

    return encode(images.labels, label2id, images.multi_label, lambda i: images.refs[i], known_as)
