"""The disk cache of decoded images (--image_cache_dir): the same pixels as decoding into memory, reused while the
inputs and the decoding are unchanged, decoded by one process at a time, and never left half-written."""

from __future__ import annotations

import json
import os
import re
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from shared.core.errors import DataError
from shared.core.runner import run_recipe
from shared.images.augment import PixelDataset
from shared.images.cache import DiskPixels
from shared.images.decode import decode_images
from shared.images.pixels import PixelMapping
from shared.images.readers import read_image_folder
from tests.helpers import IMAGE_SAMPLE, assert_one_line, run_cli


def folder_of_images(root, n=6, bad=False):
    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    if bad:
        (root / "a" / "3.png").write_bytes(b"not a png")
    return read_image_folder(str(root))


def entries(cache):
    return sorted(n for n in os.listdir(cache) if not n.endswith(".lock"))


def test_cache_gives_the_in_memory_pixels_and_is_reused(tmp_path):
    images, cache = folder_of_images(tmp_path / "data"), tmp_path / "cache"
    memory = decode_images(images, 8)
    first = decode_images(images, 8, cache_dir=str(cache))
    second = decode_images(images, 8, cache_dir=str(cache))
    assert isinstance(first.pixels, DiskPixels) and not first.cache_hit and second.cache_hit
    assert first.pixels.shape == tuple(memory.pixels.shape) == (12, 3, 8, 8)
    assert torch.equal(torch.stack([second.pixels[i] for i in range(12)]), memory.pixels)
    view = second.pixels[torch.tensor([5, 0, 5])]  # oversampling selects rows, repeats included
    assert len(view) == 3 and torch.equal(view[2], memory.pixels[5]) and torch.equal(view[1], memory.pixels[0])
    dataset = PixelDataset(second.pixels, np.zeros(12, np.int64))
    assert torch.equal(dataset[4]["pixel_values"], PixelDataset(memory.pixels, np.zeros(12, np.int64))[4]["pixel_values"])
    assert len(entries(cache)) == 1
    # another size, another pixel mapping or a changed file is another entry
    decode_images(images, 6, cache_dir=str(cache))
    decode_images(images, 8, mapping=PixelMapping((100.0, 50.0), "--window"), cache_dir=str(cache))
    assert len(entries(cache)) == 3
    path = images.sources[0]
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(path)
    os.utime(path, ns=(1, 1))
    changed = decode_images(images, 8, cache_dir=str(cache))
    assert not changed.cache_hit and changed.pixels[0].sum() == 0 and len(entries(cache)) == 4


def test_skipped_images_and_an_interrupted_decode(tmp_path):
    images, cache = folder_of_images(tmp_path / "data", bad=True), tmp_path / "cache"
    memory = decode_images(images, 8, skip_bad=True)
    cached = decode_images(images, 8, skip_bad=True, cache_dir=str(cache))
    assert cached.kept == memory.kept and len(cached.bad) == 1 and len(cached.pixels) == 11
    assert torch.equal(cached.pixels[3], memory.pixels[3])
    again = decode_images(images, 8, skip_bad=True, cache_dir=str(cache))
    assert again.cache_hit and again.bad == cached.bad
    before = entries(cache)
    with pytest.raises(DataError, match="3.png"):  # without --skip_bad_images: the error, and no entry kept
        decode_images(images, 8, cache_dir=str(cache))
    assert entries(cache) == before


def test_one_process_decodes_the_others_read(tmp_path):
    images, cache = folder_of_images(tmp_path / "data"), str(tmp_path / "cache")
    results = []

    def decode():
        results.append(decode_images(images, 8, cache_dir=cache))

    threads = [threading.Thread(target=decode) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.cache_hit for r in results) == [False, True, True] and len(entries(tmp_path / "cache")) == 1


def test_recipe_second_run_reads_the_cache(tiny_vit, tmp_path, caplog):
    args = ["--model_name_or_path", tiny_vit, "--train_dir", str(IMAGE_SAMPLE / "folders" / "train"),
            "--validation_dir", str(IMAGE_SAMPLE / "folders" / "validation"), "--do_train", "--do_eval",
            "--image_size", "16", "--num_train_epochs", "1",
            "--image_cache_dir", str(tmp_path / "cache"), "--report_to", "none"]
    first = run_recipe("image_classification", [*args, "--output_dir", str(tmp_path / "one")])
    caplog.clear()
    second = run_recipe("image_classification", [*args, "--output_dir", str(tmp_path / "two")])
    assert re.search(r"train: \d+ images at 16 px, read from the image cache", caplog.text)
    assert first["eval_macro_f1"] == second["eval_macro_f1"] and first["train_loss"] == second["train_loss"]
    assert len(entries(tmp_path / "cache")) == 2  # train and validation
    meta = json.loads(open(os.path.join(tmp_path / "cache", entries(tmp_path / "cache")[0], "meta.json")).read())
    assert meta["shape"][1:] == [3, 16, 16]


def test_a_file_as_the_cache_folder_is_one_line(tiny_vit, tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    proc = run_cli("image_classification", ["--model_name_or_path", tiny_vit, "--train_dir",
                                            IMAGE_SAMPLE / "folders" / "train", "--output_dir", tmp_path / "out",
                                            "--do_train", "--image_cache_dir", tmp_path / "cache"])
    assert_one_line(proc.returncode, proc.stderr, r".*/cache: --image_cache_dir must be a folder \(it is created if "
                    r"missing\)", tmp_path / "out")


def test_a_large_run_decodes_into_the_user_cache_by_default(tiny_vit, tmp_path, caplog, monkeypatch):
    """Past the in-memory limit a run without --image_cache_dir decodes into the user's cache folder and says so in
    one line; entries that no run has used for UNUSED_DAYS days are removed. The limit is lowered so that the sample
    data crosses it (at 16 px an image is 768 bytes)."""
    from shared.images import cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(cache, "IN_MEMORY_LIMIT", 10_000)
    root = tmp_path / "xdg" / "medical-finetuning-recipes" / "decoded_images"
    (root / "old").mkdir(parents=True)
    (root / "old" / "meta.json").write_text("{}")
    os.utime(root / "old" / "meta.json", (1, 1))
    run_recipe("image_classification", [
        "--model_name_or_path", tiny_vit, "--train_dir", str(IMAGE_SAMPLE / "folders" / "train"),
        "--validation_dir", str(IMAGE_SAMPLE / "folders" / "validation"), "--do_train", "--do_eval",
        "--image_size", "16", "--max_steps", "1", "--output_dir", str(tmp_path / "out"), "--report_to", "none"])
    announced = [r.getMessage() for r in caplog.records if "into the disk cache" in r.getMessage()]
    assert len(announced) == 1 and re.fullmatch(
        rf"decoding 64 images \(~0 MB, over the 0 MB kept in memory\) into the disk cache {re.escape(str(root))}: "
        r"reused by later runs on the same files, removed after 30 days unused; --image_cache_dir picks the folder",
        announced[0]), announced
    assert re.search(r"train: \d+ images at 16 px, decoded into the image cache", caplog.text)
    assert len(entries(root)) == 2 and "old" not in entries(root)  # train and validation; the stale entry pruned
    caplog.clear()  # predict.py alike: the test images join the cache
    run_recipe("image_classification", ["--model_dir", str(tmp_path / "out"), "--input",
                                        str(IMAGE_SAMPLE / "folders" / "test"), "--output_dir", str(tmp_path / "pred")],
               entry="predict")
    assert "decoding 16 images (~0 MB, over the 0 MB kept in memory) into the disk cache" in caplog.text
    assert len(entries(root)) == 3


def test_a_small_run_stays_in_memory(tmp_path, monkeypatch, caplog):
    """Memory while the decoded images fit IN_MEMORY_LIMIT and a quarter of the free memory; memory too, with a
    warning, when the cache folder's disk lacks the room."""
    from shared.images import cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(cache, "available_memory", lambda: 64 * 2**30)
    fitting = cache.IN_MEMORY_LIMIT // (3 * 16 * 16)
    assert cache.automatic_cache_dir(fitting, (3, 16, 16)) is None and not (tmp_path / "xdg").exists()
    assert cache.automatic_cache_dir(fitting + 1, (3, 16, 16)) == cache.default_cache_root()
    monkeypatch.setattr(cache, "available_memory", lambda: 4 * 10 * 768)  # a quarter: 10 images of 16 px
    assert cache.automatic_cache_dir(10, (3, 16, 16)) is None and cache.automatic_cache_dir(11, (3, 16, 16))
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: SimpleNamespace(total=2000, used=1000, free=1000))
    assert cache.automatic_cache_dir(11, (3, 16, 16)) is None
    assert "decoding 11 images (~0 MB) into memory: the disk of the image cache folder" in caplog.text

