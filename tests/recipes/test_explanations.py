"""Explanations (--explain N, shared/trust/explain.py) are faithful: on a model that learned a planted cue (one word of
each note decides its class), the top-attributed word is the cue in at least 90% of the explained notes, and deleting
the top-attributed word lowers the predicted probability more than deleting a random word. Written only when asked,
as HTML + JSON, and named as sensitive."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest

from shared.core.runner import load_recipe
from shared.training.tiny_models import build_tiny_bert
from shared.trust.explain import top_words

FILLER = ("patient reviewed today stable bloods normal plan discharge follow clinic home breathing comfortable "
          "observations eating well mobile family present").split()
CUES = {"improving": "alpha", "worsening": "omega"}  # the only word that tells the classes apart


def cue_notes(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = sorted(CUES)[i % 2]
        words = rng.sample(FILLER, 7)
        words.insert(rng.randrange(len(words) + 1), CUES[label])
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def cue_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cue")
    train, validation, test = cue_notes(240, 0), cue_notes(40, 1), cue_notes(40, 2)
    model = build_tiny_bert(tmp / "bert", [r["text"] for r in train] + ["alpha omega"], vocab_size=120)
    out = tmp / "out"
    results = load_recipe("text_classification").main([
        "--model_name_or_path", model, "--output_dir", str(out), "--train_file", write(tmp / "train.csv", train),
        "--validation_file", write(tmp / "validation.csv", validation), "--test_file", write(tmp / "test.csv", test),
        "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "8", "--per_device_train_batch_size", "16",
        "--learning_rate", "2e-3", "--freeze_embeddings", "false", "--freeze_layers", "0", "--seed", "0",
        "--bootstrap_resamples", "0", "--explain", "20",
    ])
    return out, results, test


def test_the_planted_cue_is_the_top_attributed_word(cue_run):
    out, results, test = cue_run
    assert results["test_accuracy"] >= 0.95  # the model learned the cue: otherwise there is nothing to find
    explained = json.loads((out / "test_explanations.json").read_text())
    assert [e["row"] for e in explained] == list(range(20))
    hits = 0
    for item, row in zip(explained, test):
        words = [w["word"] for w in item["words"]]
        assert words == row["text"].split()  # every word of the note, in order, subwords merged
        hits += words[top_words(item["words"])[0]] in CUES.values()
    assert hits >= 18, hits  # at least 90%
    page = (out / "test_explanations.html").read_text()
    assert page.startswith("<!doctype html>") and "alpha" in page and "<script" not in page


def test_deleting_the_top_word_lowers_the_probability_more_than_deleting_a_random_word(cue_run):
    from transformers import pipeline

    out, _, _ = cue_run
    explained = json.loads((out / "test_explanations.json").read_text())
    classify = pipeline("text-classification", model=str(out), device="cpu", top_k=None)
    rng = random.Random(0)

    def probability(words, label):
        return next(s["score"] for s in classify([" ".join(words)])[0] if s["label"] == label)

    top_drop, random_drop = [], []
    for item in explained:
        words = [w["word"] for w in item["words"]]
        base = probability(words, item["prediction"])
        top = top_words(item["words"])[0]
        other = rng.randrange(len(words))
        top_drop.append(base - probability(words[:top] + words[top + 1:], item["prediction"]))
        random_drop.append(base - probability(words[:other] + words[other + 1:], item["prediction"]))
    assert np.mean(top_drop) > np.mean(random_drop) + 0.1, (np.mean(top_drop), np.mean(random_drop))


def test_explanations_are_written_only_when_asked_and_named_sensitive(cue_run, tiny_bert_dir, tmp_path):
    from tests.helpers import TEXT_SAMPLE

    out, _, _ = cue_run
    assert "test_explanations" in (out / "README.md").read_text()  # the card names the files as sensitive
    plain = tmp_path / "plain"
    load_recipe("text_classification").main([
        "--model_name_or_path", tiny_bert_dir, "--output_dir", str(plain), "--train_file",
        str(TEXT_SAMPLE / "train.csv"), "--test_file", str(TEXT_SAMPLE / "test.csv"), "--do_train", "--do_predict",
        "--num_train_epochs", "1", "--max_train_samples", "32", "--max_predict_samples", "8",
        "--bootstrap_resamples", "0"])
    assert not list(plain.glob("*explanations*"))


# ------------------------------------------------------------------------------------------ images: heat maps
GRID, CELL = 4, 8  # the tiny ViT: 32 px in 8 px patches


def marked_images(root, n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` noise images in class folders, each with one 8 px square of stripes on a patch cell: vertical for one
    class, horizontal for the other (the same mean brightness as the noise: only the square tells the classes
    apart). Returns each image's cue cell, in the recipe's reading order (class folders sorted, then file names)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    stripes = np.tile(np.array([0, 255], dtype=np.uint8), CELL // 2)
    squares = {"horizontal": np.repeat(stripes[:, None], CELL, axis=1), "vertical": np.repeat(stripes[None], CELL, 0)}
    cells = {label: [] for label in squares}
    for i in range(n):
        label = sorted(squares)[i % 2]
        image = rng.integers(70, 186, (GRID * CELL, GRID * CELL, 3)).astype(np.uint8)
        row, column = int(rng.integers(GRID)), int(rng.integers(GRID))
        image[row * CELL:(row + 1) * CELL, column * CELL:(column + 1) * CELL] = squares[label][..., None]
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")
        cells[label].append((row, column))
    return [cell for label in sorted(squares) for cell in cells[label]]


@pytest.fixture(scope="module")
def marked_run(tmp_path_factory):
    from shared.training.tiny_models import build_tiny_vit

    tmp = tmp_path_factory.mktemp("marked")
    marked_images(tmp / "train", 320, 0)
    marked_images(tmp / "validation", 40, 1)
    cells = marked_images(tmp / "test", 40, 2)
    out = tmp / "out"
    results = load_recipe("image_classification").main([
        "--model_name_or_path", build_tiny_vit(tmp / "vit"), "--output_dir", str(out),
        "--train_dir", str(tmp / "train"), "--validation_dir", str(tmp / "validation"), "--test_dir",
        str(tmp / "test"), "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "10",
        "--per_device_train_batch_size", "16", "--learning_rate", "2e-3", "--freeze_layers", "0", "--augment", "false",
        "--seed", "0", "--bootstrap_resamples", "0", "--explain", "40",
    ])
    return out, results, cells


def test_the_heat_map_peaks_on_the_square_that_decides_the_class(marked_run):
    out, results, cells = marked_run
    assert results["test_accuracy"] >= 0.9, results["test_accuracy"]  # the model learned the cue
    explained = json.loads((out / "test_explanations.json").read_text())
    assert len(explained) == 40
    hits = sum(tuple(item["peak"]) == cells[item["row"]] for item in explained)
    assert hits >= 36, hits  # at least 90%
    assert (out / "test_explanations" / "row_0.png").stat().st_size > 1000


def test_a_cnn_gets_grad_cam_on_its_last_feature_map():
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    from shared.trust.explain import heat_maps

    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                      num_labels=2))
    maps, method = heat_maps(model, torch.randn(3, 3, 64, 64), [0, 1, 1])
    assert method == "Grad-CAM" and maps.shape == (3, 8, 8)  # 64 px / 8: the last stage's grid
    peaks = maps.reshape(3, -1).max(axis=1)
    assert np.all((0 <= maps) & (maps <= 1)) and np.all((peaks == 0) | np.isclose(peaks, 1))


# ------------------------------------------------------------------------------------------ NER: per entity
DRUGS = ["aspirin", "heparin", "warfarin", "insulin"]


def drug_sentences(path, n: int, seed: int) -> str:
    """CoNLL sentences of filler words with one drug name (tagged B-DRUG) each: the drug word alone is the entity."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [(w, "O") for w in rng.sample(FILLER, 6)]
        words.insert(rng.randrange(len(words) + 1), (rng.choice(DRUGS), "B-DRUG"))
        lines += [f"{w}\t{t}" for w, t in words] + [""]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("crf", [False, True])
def test_each_predicted_entity_is_explained_most_by_its_own_words(tmp_path, crf):
    rows = [" ".join(FILLER + DRUGS)]
    model = build_tiny_bert(tmp_path / "bert", rows * 4, vocab_size=120)
    out = tmp_path / "out"
    results = load_recipe("ner").main([
        "--model_name_or_path", model, "--output_dir", str(out),
        "--train_file", drug_sentences(tmp_path / "train.tsv", 200, 0), "--test_file",
        drug_sentences(tmp_path / "test.tsv", 30, 1), "--do_train", "--do_predict", "--num_train_epochs", "4",
        "--learning_rate", "5e-3", "--per_device_train_batch_size", "16", "--bootstrap_resamples", "0",
        "--optim", "adamw_torch", "--seed", "0", "--explain", "10", *(["--use_crf"] if crf else [])])
    assert results["test_f1"] >= 0.9, results["test_f1"]
    explained = json.loads((out / "test_explanations.json").read_text())
    test_words = [[line.split("\t")[0] for line in block.splitlines()]
                  for block in (tmp_path / "test.tsv").read_text().strip().split("\n\n")]
    assert sorted({e["row"] for e in explained}) == list(range(10))  # every explained note has its entity
    inside = 0
    for item in explained:
        assert [w["word"] for w in item["words"]] == test_words[item["row"]]
        assert item["prediction"] == "DRUG" and 0 < item["probability"] <= 1
        inside += item["start_word"] <= top_words(item["words"])[0] <= item["end_word"]
    assert inside >= 0.9 * len(explained), (inside, len(explained))
    assert "DRUG" in (out / "test_explanations.html").read_text()
