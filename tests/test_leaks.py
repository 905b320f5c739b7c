"""A held-out image that is a training image (a symlink to it, a hard link, a byte copy), or a held-out text that
is a training text, is a train/test leak: counted per split in one warning line (counts only: no file names, no
text) and in the results."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np

from shared.data.overlap import images_also_in_train, texts_also_in_train
from tests.helpers import IMAGE_SAMPLE, TEXT_SAMPLE, run_cli


def test_images_shared_by_path_or_bytes(tmp_path):
    for name, data in (("a", b"A" * 50), ("b", b"B" * 50), ("c", b"C" * 50), ("d", b"D" * 60)):
        (tmp_path / name).write_bytes(data)
    os.symlink(tmp_path / "a", tmp_path / "link")
    shutil.copy(tmp_path / "b", tmp_path / "copy")
    files = {name: str(tmp_path / name) for name in ("a", "b", "c", "d", "link", "copy")}
    counts = images_also_in_train({"train": [files["a"], files["b"]],
                                   "validation": [files["c"], files["d"], str(tmp_path / "missing")],
                                   "test": [files["link"], files["copy"], files["a"], files["c"]]})
    assert counts == {"validation": 0, "test": 3}  # same size as a training file but other bytes: not shared
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert images_also_in_train({"train": [pixels, {"bytes": b"png"}],
                                 "test": [pixels.copy(), pixels.reshape(4, 3), {"bytes": b"png", "path": None}]}) \
        == {"test": 2}  # the same pixels in another shape are another image
    assert images_also_in_train({"test": [files["a"]]}) == {}
    assert texts_also_in_train({"train": ["x", ("y", "z")], "test": ["x", ("y", "z"), "y"]}) == {"test": 2}


def test_recipe_counts_test_images_that_are_training_images(tiny_vit, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # a small run: nothing written there
    train, test = IMAGE_SAMPLE / "folders" / "train", tmp_path / "test"
    shutil.copytree(IMAGE_SAMPLE / "folders" / "test", test)
    os.symlink(train / "normal" / "000.png", test / "normal" / "leaked_link.png")
    shutil.copy(train / "opacity" / os.listdir(train / "opacity")[0], test / "opacity" / "leaked_copy.png")
    n_test = sum(len(os.listdir(test / label)) for label in ("normal", "opacity"))
    proc = run_cli("image_classification", [
        "--model_name_or_path", tiny_vit, "--train_dir", train, "--validation_dir", IMAGE_SAMPLE / "folders" /
        "validation", "--test_dir", test, "--output_dir", tmp_path / "out", "--do_train", "--do_eval", "--do_predict",
        "--image_size", "16", "--max_steps", "1", "--bootstrap_resamples", "0", "--report_to", "none"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if "train/test leak" in line]
    assert len(lines) == 1 and lines[0].endswith(
        f"train/test leak: test 2 of {n_test} images also in the training data (the same file or the same bytes): "
        "their scores are optimistic"), lines
    assert "leaked" not in proc.stderr and "000.png" not in proc.stderr
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["test_images_also_in_train"] == 2 and results["eval_images_also_in_train"] == 0
    assert not (tmp_path / "xdg" / "medical-finetuning-recipes").exists()  # a small run decodes into memory


def test_text_recipe_counts_test_texts_that_are_training_texts(tiny_bert_dir, tmp_path):
    with open(TEXT_SAMPLE / "train.csv", encoding="utf-8", newline="") as f:
        train = list(csv.DictReader(f))
    test = tmp_path / "test.csv"
    with open(test, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows([train[0], train[5], train[5], {"text": "an unseen note", "label": train[0]["label"]}])
    proc = run_cli("text_classification", [
        "--model_name_or_path", tiny_bert_dir, "--train_file", TEXT_SAMPLE / "train.csv", "--validation_file",
        TEXT_SAMPLE / "validation.csv", "--test_file", test, "--output_dir", tmp_path / "out", "--do_train",
        "--do_eval", "--do_predict", "--max_steps", "1", "--bootstrap_resamples", "0", "--report_to", "none"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if "train/test leak" in line]
    assert len(lines) == 1 and lines[0].endswith(
        "train/test leak: test 3 of 4 texts also in the training data (identical text): their scores are "
        "optimistic"), lines
    assert train[5]["text"][:20] not in proc.stderr
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["test_texts_also_in_train"] == 3 and results["eval_texts_also_in_train"] == 0
