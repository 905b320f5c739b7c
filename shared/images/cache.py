"""A disk cache of decoded images (``--image_cache_dir``): data larger than memory, decoded once for many runs.

A split decodes into one raw ``uint8`` file ``(N, 3, H, W)`` under ``<cache_dir>/<key>/``, written image by image
(memory stays that of one image), and is read back one image at a time with ``pread``, so neither decoding nor
training holds the split in memory: the pages live in the operating system's file cache, shared by every process of
a multi-process run. The key hashes everything the pixels depend on: each input file's path, size and modification
time (or an in-memory array's bytes), the image size, the resampling filter and the pixel mapping; change any and
the split is decoded again. The first process to take the key's lock decodes; the others wait, then read.

Without ``--image_cache_dir``, a run decodes into memory while its decoded images fit :data:`IN_MEMORY_LIMIT` (and
a quarter of the memory available); past that, into the default folder ``$XDG_CACHE_HOME`` (or ``~/.cache``)
``/medical-finetuning-recipes/decoded_images``, said in one log line (:func:`automatic_cache_dir`). Reading from the
cache trains as fast as from memory (``benchmarks/bench_image_scale.py``: the operating system's file cache holds
the pages), so a run has no reason to hold a large split privately; the limit only keeps small runs (tests, sample
data) from writing image content to disk. Entries of the default folder unused for :data:`UNUSED_DAYS` days are
removed when a later run uses it.

The cache holds image content: keep it where the data itself may live, and delete it like the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

FORMAT = 1  # bump when the layout or the decoding changes, so older entries are not reused
PIXELS, META = "pixels.u8", "meta.json"
IN_MEMORY_LIMIT = 256 * 2**20  # decoded bytes a run keeps in memory (~1,780 images at 224 px); tests lower it
UNUSED_DAYS = 30  # entries of the default folder unused this long are removed


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
            try:
                os.utime(os.path.join(entry, META))  # in use: kept by prune_unused
            except OSError:
                pass
    with open(os.path.join(entry, META), encoding="utf-8") as f:
        meta = json.load(f)
    return DiskPixels(os.path.join(entry, PIXELS), tuple(meta["shape"])), meta["kept"], meta["bad"], hit


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (psutil, an accelerate dependency; else sysconf), or None."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


def default_cache_root() -> str:
    """Where runs without ``--image_cache_dir`` cache large data: the user's cache folder, like Hugging Face's."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "medical-finetuning-recipes", "decoded_images")


def automatic_cache_dir(count: int, shape: tuple[int, int, int]) -> str | None:
    """Where a run without ``--image_cache_dir`` decodes ``count`` images of ``shape`` (uint8): None (memory) while
    they fit :data:`IN_MEMORY_LIMIT` and a quarter of the available memory, else :func:`default_cache_root`, said
    in one line (and pruned of entries unused for :data:`UNUSED_DAYS` days). Memory too when that folder cannot be
    created or its disk lacks the room (a warning)."""
    needed = count * int(np.prod(shape))
    available = available_memory()
    limit = IN_MEMORY_LIMIT if available is None else min(IN_MEMORY_LIMIT, available // 4)
    if needed <= limit:
        return None
    root, megabytes = default_cache_root(), needed / 2**20
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)  # image content: the user's own
        room = shutil.disk_usage(root).free
    except OSError as error:
        logger.warning("decoding %d images (~%.0f MB) into memory: the image cache folder %s cannot be created (%s); "
                       "--image_cache_dir picks another", count, megabytes, root, error.strerror or error)
        return None
    if room < needed * 1.1:
        logger.warning("decoding %d images (~%.0f MB) into memory: the disk of the image cache folder %s has %.0f MB "
                       "free; --image_cache_dir picks another", count, megabytes, root, room / 2**20)
        return None
    prune_unused(root, UNUSED_DAYS)
    logger.info("decoding %d images (~%.0f MB, over the %.0f MB kept in memory) into the disk cache %s: reused by "
                "later runs on the same files, removed after %d days unused; --image_cache_dir picks the folder",
                count, megabytes, limit / 2**20, root, UNUSED_DAYS)
    return root


def prune_unused(root: str, days: float) -> int:
    """Remove the entries of ``root`` not read or written for ``days`` days (and decodes interrupted that long
    ago); returns how many. An entry's ``meta.json`` is touched whenever a run reads it."""
    from filelock import FileLock, Timeout

    cutoff, removed = time.time() - days * 86400, 0
    for name in os.listdir(root):
        entry = os.path.join(root, name)
        if name.endswith(".lock") or not os.path.isdir(entry):
            continue
        partial = ".partial-" in name
        try:
            used = os.stat(entry if partial else os.path.join(entry, META)).st_mtime
        except OSError:
            continue
        if used >= cutoff:
            continue
        try:
            with FileLock((entry.split(".partial-")[0] if partial else entry) + ".lock", timeout=0):
                shutil.rmtree(entry, ignore_errors=True)
        except Timeout:  # another process holds it: in use
            continue
        removed += 1
    return removed
