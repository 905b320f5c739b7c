"""No PHI leaks (issue #6): a unique canary string in the inputs never reaches logs, TensorBoard, checkpoints,
results, configs or the model card; only the documented prediction files may carry input text.

Each recipe trains, evaluates and predicts on tiny data with the canary in its text (text classification: the text
column and an extra column; NER: tokens; images: image file names and an extra CSV column), logging at INFO every
step, reporting to TensorBoard and saving a checkpoint per epoch. Then stdout, stderr, every file under
``--output_dir`` (read as bytes, recursively) and the datasets cache are searched for the canary.

Prediction files that contain input text by design:
- NER ``test_predictions/``: the input written back in its own format, tokens included (the canary MUST be there);
- text classification ``test_predictions.csv``: row number, label, prediction, probabilities; no text;
- image classification ``test_predictions.csv``: no image paths unless ``--write_image_paths``;
- explanations (``--explain N``): text ``test_explanations.{html,json}`` hold the note's words (the canary MUST be
  there); image overlays ``test_explanations/row_<n>.png`` and their JSON hold image content, never file names.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import run_cli

CANARY = "CANARY-7f3a9c"
# Tokenisers lowercase and split words: search for the hex part alone, case-insensitively.
NEEDLE = b"7f3a9c"

COMMON = [
    "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "1", "--per_device_train_batch_size", "4",
    "--logging_strategy", "steps", "--logging_steps", "1", "--log_level", "info", "--save_strategy", "epoch",
    "--report_to", "tensorboard", "--bootstrap_resamples", "5", "--seed", "0",
]


def files_with_canary(root: Path) -> list[str]:
    """Every file under ``root`` (relative paths) whose bytes contain the canary, in any case."""
    hits = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if NEEDLE in path.read_bytes().lower() or NEEDLE in str(path.relative_to(root)).lower().encode():
                hits.append(str(path.relative_to(root)))
    return sorted(hits)


def count_in_inputs(data: Path) -> int:
    """How many times the canary occurs in the input files and file names (the test must not pass vacuously)."""
    count = 0
    for path in data.rglob("*"):
        count += CANARY.encode() in path.name.encode()
        if path.is_file():
            count += path.read_bytes().count(CANARY.encode())
    return count


def run_and_scan(task: str, data: Path, args: list[str], tmp_path: Path, monkeypatch) -> tuple[Path, list[str]]:
    """Run the recipe CLI; assert nothing with the canary in stdout/stderr/cache; return (output_dir, hits there)."""
    assert count_in_inputs(data) >= 6
    cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))  # where datasets would spill tables to disk
    out = tmp_path / "out"
    proc = run_cli(task, [*args, *COMMON, "--output_dir", str(out)], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert " INFO " in proc.stderr  # logging really was at INFO
    for stream in (proc.stdout, proc.stderr):
        assert NEEDLE not in stream.lower().encode()
    assert not cache.exists() or not files_with_canary(cache)

    # Everything the issue names exists, so that the scan below is not vacuous.
    states = list(out.glob("checkpoint-*/trainer_state.json"))
    events = list(out.rglob("events.out.tfevents.*"))
    assert states and events, sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert any(b"train/loss" in e.read_bytes() for e in events)  # TensorBoard got per-step scalars
    for name in ("README.md", "all_results.json", "config.json"):
        assert (out / name).exists(), name
    assert "sensitive" in (out / "README.md").read_text()  # the model card warns about the prediction files
    return out, files_with_canary(out)


def write_csv(path: Path, header, rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_text_classification_keeps_the_canary_out_of_outputs(tiny_bert_dir, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    texts = [("patient {} presents with chest pain", "cardiac"), ("productive cough and wheeze in {}", "resp"),
             ("palpitations , {} on metformin", "cardiac"), ("fever and cough", "resp")]
    files = {}
    for split in ("train", "validation", "test"):
        rows = [(text.format(CANARY), label, f"{CANARY}-{i}") for i, (text, label) in enumerate(texts * 2)]
        files[split] = write_csv(data / f"{split}.csv", ("text", "label", "mrn"), rows)
    out, hits = run_and_scan("text_classification", data, [
        "--model_name_or_path", str(tiny_bert_dir), "--train_file", str(files["train"]),
        "--validation_file", str(files["validation"]), "--test_file", str(files["test"]), "--explain", "2",
    ], tmp_path, monkeypatch)
    assert (out / "test_predictions.csv").exists()
    # test_predictions.csv holds row numbers and labels, never the text; the explanations, asked for, hold words
    assert hits == ["test_explanations.html", "test_explanations.json"]


def test_ner_keeps_the_canary_out_of_everything_but_its_predictions(tiny_bert_dir, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    sentences = [
        [("Patient", "O"), (CANARY, "O"), ("has", "O"), ("chest", "B-problem"), ("pain", "I-problem"), (".", "O")],
        [(CANARY, "O"), ("denies", "O"), ("fever", "B-problem"), (".", "O")],
        [("Started", "O"), ("on", "O"), ("metformin", "B-treatment"), ("for", "O"), ("diabetes", "B-problem")],
    ]
    conll = "\n".join("".join(f"{w}\t{t}\n" for w, t in s) for s in sentences * 2)
    for split in ("train", "validation", "test"):
        (data / f"{split}.tsv").write_text(conll, encoding="utf-8")
    out, hits = run_and_scan("ner", data, [
        "--model_name_or_path", str(tiny_bert_dir), "--train_file", str(data / "train.tsv"),
        "--validation_file", str(data / "validation.tsv"), "--test_file", str(data / "test.tsv"),
    ], tmp_path, monkeypatch)
    # The predictions are the test file written back with predicted tags: they must carry its tokens, canary too.
    assert hits == [os.path.join("test_predictions", "test.tsv")]
    assert (out / "test_predictions" / "test.tsv").read_text().count(CANARY) == 4


def test_image_classification_keeps_the_canary_out_of_outputs(tmp_path, monkeypatch):
    from shared.training.tiny_models import build_tiny_vit

    model = build_tiny_vit(tmp_path / "tiny_vit", image_size=16, num_layers=1)

    data = tmp_path / "data"
    (data / "scans").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, label in enumerate(["normal", "opacity"] * 4):
        name = f"scans/{CANARY}_{i}.png"  # patient identifiers in file names are common in image exports
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(data / name)
        rows.append((name, label, f"{CANARY} Doe"))
    files = {split: write_csv(data / f"{split}.csv", ("image", "label", "patient_name"), rows)
             for split in ("train", "validation", "test")}
    out, hits = run_and_scan("image_classification", data, [
        "--model_name_or_path", str(model), "--train_file", str(files["train"]),
        "--validation_file", str(files["validation"]), "--test_file", str(files["test"]), "--explain", "2",
    ], tmp_path, monkeypatch)
    assert (out / "test_predictions.csv").exists() and len(list((out / "test_explanations").glob("*.png"))) == 2
    assert hits == []  # no image paths in test_predictions.csv unless --write_image_paths, nor in the overlays
