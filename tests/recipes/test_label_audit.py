"""The label audit of cross-validation (recipes/cross_validate.py --audit_labels, shared/trust/audit.py): on synthetic
data a tiny model learns (one word decides the class / the entity), labels flipped on purpose rank at the top of
label_issues.csv, with the right label suggested; the out-of-fold predictions cover every row once, hold no text,
and are scored as one test set with bootstrap CIs."""

from __future__ import annotations

import csv
import json
import random

import pytest

from shared.core.runner import run_recipe
from shared.training.tiny_models import build_tiny_bert
from tests.helpers import ROOT
from tests.recipes.test_explanations import CUES, DRUGS, FILLER, cue_notes, write

CROSS_VALIDATE = ROOT / "recipes" / "cross_validate.py"


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_flipped_text_labels_rank_at_the_top(tmp_path):
    rows = cue_notes(240, 0)
    flipped = sorted(random.Random(1).sample(range(len(rows)), 12))
    truth = {i: rows[i]["label"] for i in flipped}
    for i in flipped:  # the note keeps its cue word: its given label is now the wrong one
        rows[i]["label"] = next(label for label in CUES if label != rows[i]["label"])
    model = build_tiny_bert(tmp_path / "bert", [r["text"] for r in rows] + ["alpha omega"], vocab_size=120)
    out = tmp_path / "cv"
    summary = run_recipe(CROSS_VALIDATE, [
        "--recipe", "text_classification", "--folds", "2", "--audit_labels", "--",
        "--model_name_or_path", model, "--train_file", write(tmp_path / "train.csv", rows), "--output_dir", str(out),
        "--num_train_epochs", "10", "--per_device_train_batch_size", "16", "--learning_rate", "2e-3",
        "--freeze_embeddings", "false", "--freeze_layers", "0", "--seed", "0", "--bootstrap_resamples", "50",
    ])

    oof = read_csv(out / "oof_predictions.csv")
    assert [int(r["row"]) for r in oof] == list(range(len(rows)))  # every row once, scored by the fold that held it out
    assert list(oof[0]) == ["row", "fold", "label", "prediction", "prob_improving", "prob_worsening"]  # no text
    assert all(abs(float(r["prob_improving"]) + float(r["prob_worsening"]) - 1) < 1e-6 for r in oof)
    pooled = summary["pooled"]
    assert pooled["samples"] == len(rows) and pooled["accuracy_ci_low"] <= pooled["accuracy"] <= pooled["accuracy_ci_high"]
    # the pooled accuracy is the accuracy of the pooled file's decisions
    assert abs(pooled["accuracy"] - sum(r["label"] == r["prediction"] for r in oof) / len(oof)) < 1e-9
    assert "pooled (95% CI)" in (out / "cv_results.md").read_text()
    assert json.loads((out / "cv_results.json").read_text())["pooled"]["samples"] == len(rows)

    issues = read_csv(out / "label_issues.csv")
    assert list(issues[0]) == ["rank", "row", "fold", "given_label", "suggested_label", "label_quality"]
    top = [int(r["row"]) for r in issues[:len(flipped)]]
    assert len(set(top) & set(flipped)) >= 9, (top, flipped)  # most of the planted flips lead the ranking
    for r in issues:
        if int(r["row"]) in truth:
            assert r["suggested_label"] == truth[int(r["row"])] and r["given_label"] != r["suggested_label"]
    scores = [float(r["label_quality"]) for r in issues]
    assert scores == sorted(scores)  # most suspicious (lowest quality) first
    for name in ("oof_predictions.csv", "label_issues.csv", "cv_results.json", "cv_results.md"):
        written = (out / name).read_text().lower()
        assert not [w for w in FILLER + list(CUES.values()) if w in written], name  # not a word of any note


@pytest.mark.slow
def test_flipped_entity_tags_rank_at_the_top(tmp_path):
    """Also: the fold models kept, the folder predicts as their ensemble through the NER predict.py."""
    rng = random.Random(0)
    sentences = []
    for _ in range(160):
        words = [[w, "O"] for w in rng.sample(FILLER, 6)]
        words.insert(rng.randrange(len(words) + 1), [rng.choice(DRUGS), "B-DRUG"])
        sentences.append(words)
    flipped = sorted(random.Random(1).sample(range(len(sentences)), 8))
    planted = {}
    for n, k in enumerate(flipped):  # half: an annotator missed the drug; half: tagged a filler word as a drug
        j = next(j for j, (_, tag) in enumerate(sentences[k]) if (tag == "B-DRUG") == (n % 2 == 0))
        planted[k, j] = sentences[k][j][1]
        sentences[k][j][1] = "O" if n % 2 == 0 else "B-DRUG"
    train = tmp_path / "train.tsv"
    train.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sentences) + "\n")
    model = build_tiny_bert(tmp_path / "bert", [" ".join(FILLER + DRUGS)] * 4, vocab_size=120)
    out = tmp_path / "cv"
    summary = run_recipe(CROSS_VALIDATE, [
        "--recipe", "ner", "--folds", "2", "--audit_labels", "--keep_fold_models", "--",
        "--model_name_or_path", model, "--train_file", str(train), "--output_dir", str(out),
        "--num_train_epochs", "8", "--learning_rate", "5e-3", "--per_device_train_batch_size", "16",
        "--optim", "adamw_torch", "--seed", "0", "--bootstrap_resamples", "50",
    ])

    lines = (out / "oof_predictions.jsonl").read_text().splitlines()
    header, examples = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    assert header["labels"] == ["O", "B-DRUG", "I-DRUG"] or set(header["labels"]) == {"O", "B-DRUG", "I-DRUG"}
    assert len(examples) == len(sentences) and not any("tokens" in e or "words" in e for e in examples)
    line_of = {1 + 8 * k: k for k in range(len(sentences))}  # a sentence of 7 words + a blank line
    assert sorted(line_of[e["line"]] for e in examples) == list(range(len(sentences)))
    assert summary["pooled"]["samples"] == len(sentences) and "f1_ci_low" in summary["pooled"]

    issues = read_csv(out / "label_issues.csv")
    assert list(issues[0]) == ["rank", "fold", "file", "line", "document", "word", "given_label", "suggested_label",
                               "label_quality"]
    top = [(line_of[int(r["line"])], int(r["word"])) for r in issues[:len(planted)]]
    assert len(set(top) & set(planted)) >= 6, (top, planted)
    for r in issues:
        where = line_of[int(r["line"])], int(r["word"])
        if where in planted:
            assert r["suggested_label"] == planted[where] != r["given_label"]

    from shared.deploy.ensemble import Ensemble
    from tests.helpers import run_cli

    card = (out / "README.md").read_text()
    assert "Ensemble of 2 fold models (ner)" in card and "hold input content" in card
    predicted = tmp_path / "predicted"
    done = run_cli("ner", ["--model_dir", out, "--input", train, "--output_dir", predicted], entry="predict")
    assert done.returncode == 0, done.stderr[-3000:]
    written = [line.split("\t")[-1] for line in (predicted / "train.tsv").read_text().split("\n") if line]
    ensemble = Ensemble(str(out))
    assert written == [t for tags in ensemble.predict([[w for w, _ in s] for s in sentences]).labels for t in tags]
    assert json.loads((predicted / "predict_results.json").read_text())["f1"] > 0
