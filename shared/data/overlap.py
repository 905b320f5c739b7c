"""Examples a held-out split shares with the training data: a train/test leak that makes its scores optimistic.

Images match when they are the same file (one path a symlink to, or a hard link of, another: the same real path)
or have the same bytes (a copy). Only files whose size occurs in both splits are hashed, so the check reads almost
nothing unless copies are likely; hashing reads bytes and never decodes. Texts match when they are identical.
Counts only: file names and texts can identify patients, and none of them is logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class _Item:
    """One image source: its real path (files) and size, and its content digest (files: computed when first asked;
    in-memory images: at once, from their pixels and layout, so that no copy of them is kept)."""

    def __init__(self, source: Any):
        self.path: str | None = None
        self.size: int | None = None
        self._digest: str | None = None
        if isinstance(source, dict):  # a datasets Image(decode=False) cell
            source = source.get("bytes") or source.get("path")
        if isinstance(source, (str, os.PathLike)):
            try:
                self.path = os.path.realpath(source)
                self.size = os.stat(self.path).st_size
            except OSError:  # a missing file: decoding names it
                self.path = None
        elif isinstance(source, (bytes, bytearray)):
            self._digest, self.size = _hash([source]), len(source)
        elif hasattr(source, "tobytes"):  # a numpy array (.npz) or a PIL image
            layout = repr((getattr(source, "dtype", getattr(source, "mode", None)),
                           getattr(source, "shape", getattr(source, "size", None)))).encode()
            data = source.tobytes()
            self._digest, self.size = _hash([layout, data]), len(data)

    def digest(self) -> str:
        if self._digest is None:
            with open(self.path, "rb") as f:
                self._digest = _hash(iter(lambda: f.read(_CHUNK), b""))
        return self._digest


def _hash(blocks) -> str:
    hasher = hashlib.blake2b(digest_size=20)
    for block in blocks:
        hasher.update(block)
    return hasher.hexdigest()


def images_also_in_train(splits: dict[str, Sequence[Any]]) -> dict[str, int]:
    """For each held-out split (every key but ``"train"``): how many of its images are also training images, by
    real path or by bytes. Empty when there is no ``"train"``. Unreadable files count as not shared."""
    if "train" not in splits:
        return {}
    train = [item for item in map(_Item, splits["train"]) if item.size is not None]
    held_out = {split: [_Item(s) for s in sources] for split, sources in splits.items() if split != "train"}
    train_paths = {item.path for item in train if item.path}
    wanted_sizes = {item.size for items in held_out.values() for item in items if item.size is not None}
    train_digests = {_digest_or_none(item) for item in train if item.size in wanted_sizes} - {None}
    train_sizes = {item.size for item in train}
    return {split: sum(bool((item.path and item.path in train_paths)
                            or (item.size in train_sizes and _digest_or_none(item) in train_digests))
                       for item in items)
            for split, items in held_out.items()}


def _digest_or_none(item: _Item) -> str | None:
    try:
        return item.digest()
    except OSError:  # unreadable now: decoding reports it
        return None


def texts_also_in_train(splits: dict[str, Iterable[str | tuple]]) -> dict[str, int]:
    """For each held-out split: how many of its texts (or ``(text, pair)`` tuples) occur verbatim in training.
    Compared by digest, so that no second copy of the training texts is held."""
    if "train" not in splits:
        return {}

    def digest(value) -> bytes:
        text = value if isinstance(value, str) else repr(tuple(value))
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    train = set(map(digest, splits["train"]))
    return {split: sum(digest(value) in train for value in values) for split, values in splits.items()
            if split != "train"}


def warn_shared_examples(counts: dict[str, int], sizes: dict[str, int], what: str, how: str) -> int:
    """One warning line naming, per held-out split, how many of its ``what`` (e.g. "images") are also training
    examples (``how``: e.g. "same file or same bytes"); counts only. Returns the total."""
    leaking = {split: n for split, n in counts.items() if n}
    if leaking:
        logger.warning("train/test leak: %s also in the training data (%s): their scores are optimistic",
                       ", ".join(f"{split} {n} of {sizes[split]} {what}" for split, n in leaking.items()), how)
    return sum(leaking.values())
