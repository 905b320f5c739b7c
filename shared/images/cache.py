"""A disk cache of decoded images (``--image_cache_dir``): data larger than memory, decoded once for many runs.

A split decodes into one raw ``uint8`` file ``(N, 3, H, W)`` under ``<cache_dir>/<key>/``, written image by image
(memory stays that of one image), and is read back one image at a time with ``pread``, so neither decoding nor
training holds the split in memory: the pages live in the operating system's file cache, shared by every process of
a multi-process run. The key hashes everything the pixels depend on: each input file's path, size and modification
time (or an in-memory array's bytes), the image size, the resampling filter and the pixel mapping; change any and
the split is decoded again. The first process to take the key's lock decodes; the others wait, then read.

The cache holds image content: keep it where the data itself may live, and delete it like the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

FORMAT = 1  # bump when the layout or the decoding changes, so older entries are not reused
PIXELS, META = "pixels.u8", "meta.json"


class DiskPixels:
    """A read-only ``(N, 3, H, W)`` uint8 "tensor" on disk: ``len``, ``shape``, ``[i]`` -> a tensor read from the
    file, ``[indices]`` / ``[slice]`` -> a view (what :class:`shared.images.augment.PixelDataset` needs)."""

    def __init__(self, path: str, shape: tuple[int, int, int, int], index: np.ndarray | None = None):
        self.path, self.full_shape = path, tuple(shape)
        self.index = np.arange(shape[0]) if index is None else np.asarray(index, dtype=np.int64)
        self.image_bytes = int(np.prod(shape[1:]))
        self._fd: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.full_shape[1:])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item):
        if isinstance(item, (int, np.integer)) or (torch.is_tensor(item) and item.ndim == 0):
            return self._read(int(self.index[int(item)]))
        if torch.is_tensor(item):
            item = item.numpy()
        return DiskPixels(self.path, self.full_shape, self.index[item])

    def _read(self, row: int) -> torch.Tensor:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        data = os.pread(self._fd, self.image_bytes, row * self.image_bytes)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(*self.full_shape[1:])

    def __getstate__(self):  # DataLoader workers and spawned processes open their own descriptor
        return {**self.__dict__, "_fd": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass


def _source_key(source: Any) -> Any:
    if isinstance(source, str):
        try:
            stat = os.stat(source)
        except OSError:
            return [os.path.abspath(source), None, None]  # decoding reports it
        return [os.path.abspath(source), stat.st_size, stat.st_mtime_ns]
    if isinstance(source, np.ndarray):
        return [str(source.dtype), list(source.shape), hashlib.sha1(np.ascontiguousarray(source)).hexdigest()]
    if isinstance(source, dict):  # a datasets Image(decode=False) cell
        if source.get("bytes"):
            return hashlib.sha1(source["bytes"]).hexdigest()
        return _source_key(source.get("path"))
    if hasattr(source, "tobytes"):  # a PIL image
        return [source.mode, list(source.size), hashlib.sha1(source.tobytes()).hexdigest()]
    return repr(type(source))


def cache_key(sources: list[Any], size: tuple[int, int], resample: int, mapping, skip_bad: bool) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([FORMAT, list(size), int(resample), asdict(mapping) if mapping else None,
                              bool(skip_bad)]).encode())
    for source in sources:
        digest.update(json.dumps(_source_key(source)).encode())
    return digest.hexdigest()[:32]


def cached_decode(cache_dir: str, key: str, count: int, shape: tuple[int, int, int], decode_into) -> tuple:
    """``(DiskPixels, kept, bad, hit)`` for the entry ``key``: read if present, else written by ``decode_into(write)``
    (which calls ``write(chw_uint8_array)`` per kept image and returns ``(kept, bad)``) under the key's lock."""
    from filelock import FileLock

    os.makedirs(cache_dir, exist_ok=True)
    entry = os.path.join(cache_dir, key)
    with FileLock(entry + ".lock"):
        if not os.path.isfile(os.path.join(entry, META)):
            partial = f"{entry}.partial-{os.getpid()}"
            shutil.rmtree(partial, ignore_errors=True)
            os.makedirs(partial)
            try:
                with open(os.path.join(partial, PIXELS), "wb") as f:
                    kept, bad = decode_into(lambda chw: f.write(np.ascontiguousarray(chw, dtype=np.uint8).tobytes()))
                    f.flush()
                    os.fsync(f.fileno())
                with open(os.path.join(partial, META), "w", encoding="utf-8") as f:
                    json.dump({"format": FORMAT, "inputs": count, "shape": [len(kept), *shape], "kept": kept,
                               "bad": bad}, f)
                os.replace(partial, entry)  # complete entries only: an interrupted decode leaves no entry
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            hit = False
        else:
            hit = True
    with open(os.path.join(entry, META), encoding="utf-8") as f:
        meta = json.load(f)
    return DiskPixels(os.path.join(entry, PIXELS), tuple(meta["shape"])), meta["kept"], meta["bad"], hit
