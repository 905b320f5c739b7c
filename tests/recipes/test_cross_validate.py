"""Cross-validation end to end: recipes/cross_validate.py on the text recipe, and a fold of NER and of images."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from shared.core.errors import DataError
from shared.core.runner import load_recipe, run_recipe
from shared.training.tiny_models import build_tiny_vit
from tests.helpers import ROOT
from tests.recipes.test_text_classification import with_patients


@pytest.mark.slow
def test_text_cross_validation_end_to_end(tiny_bert_dir, tmp_path):
    train = with_patients(tmp_path / "train.csv", 40, per_patient=4)
    out = tmp_path / "cv"
    summary = run_recipe(ROOT / "recipes" / "cross_validate.py", [
        "--recipe", "text_classification", "--folds", "2", "--group_column", "patient_id", "--",
        "--model_name_or_path", str(tiny_bert_dir), "--train_file", train, "--output_dir", str(out),
        "--num_train_epochs", "1", "--bootstrap_resamples", "20", "--seed", "1",
    ])
    saved = json.loads((out / "cv_results.json").read_text())
    acc = saved["metrics"]["test_accuracy"]
    assert len(acc["folds"]) == 2 and acc["mean"] == pytest.approx(np.mean(acc["folds"]))
    assert acc["sd"] == pytest.approx(np.std(acc["folds"], ddof=1))
    assert saved["metrics"]["test_samples"]["folds"][0] + saved["metrics"]["test_samples"]["folds"][1] == 40
    assert summary["metrics"].keys() == saved["metrics"].keys()
    assert "| accuracy |" in (out / "cv_results.md").read_text()
    patients, rows = [], []
    for fold in range(2):
        fold_dir = out / f"fold_{fold}"
        assert (fold_dir / "all_results.json").exists() and (fold_dir / "README.md").exists()
        assert not list(fold_dir.glob("*.safetensors"))  # weights deleted by default
        with open(fold_dir / "test_predictions.csv", encoding="utf-8") as f:
            fold_rows = [int(r["row"]) for r in csv.DictReader(f)]  # rows of the training file
        rows += fold_rows
        patients.append({r // 4 for r in fold_rows})
    assert sorted(rows) == list(range(40))  # each row scored exactly once
    assert not patients[0] & patients[1]  # no patient in both folds


# ------------------------------------------------------------------------------------------------ NER and image
def test_ner_fold_keeps_documents_together(tmp_path):
    from tests.helpers import NER_SAMPLE, build_tiny_ner_model

    recipe = load_recipe("ner")
    model = build_tiny_ner_model(str(tmp_path / "tiny"))
    results = recipe.main([
        "--model_name_or_path", model, "--output_dir", str(tmp_path / "out"), "--train_file",
        os.path.join(NER_SAMPLE, "train"), "--max_train_samples", "60", "--num_folds", "3", "--fold", "1", "--do_train",
        "--do_eval", "--validation_split_percentage", "25", "--num_train_epochs", "1", "--bootstrap_resamples", "10",
        "--bf16", "false", "--optim", "adamw_torch",
    ])
    assert "test_f1" in results and "eval_f1" in results
    with open(tmp_path / "out" / "test_predictions" / "predictions.jsonl", encoding="utf-8") as f:
        predicted = [json.loads(line) for line in f]
    assert len(predicted) == results["test_samples"]
    notes = {p["file"] for p in predicted}
    for note in notes:  # whole notes: every non-empty line of each held-out note is predicted
        with open(note.replace(".con", ".txt"), encoding="utf-8") as f:
            lines = sum(1 for line in f if line.strip())
        assert sum(p["file"] == note for p in predicted) == lines


def test_image_fold_by_patient_from_a_table(tmp_path, capsys):
    sample = ROOT / "recipes" / "image_classification" / "sample_data"
    with open(sample / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    table = tmp_path / "train.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["image", "label", "patient_id"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({"image": str(sample / row["image"]), "label": row["label"], "patient_id": f"p{i // 2}"})
    recipe = load_recipe("image_classification")
    model = build_tiny_vit(tmp_path / "vit")
    common = ["--model_name_or_path", model, "--num_train_epochs", "1", "--bootstrap_resamples", "10",
              "--num_folds", "2", "--fold", "0", "--do_train", "--do_eval", "--validation_split_percentage", "25",
              "--group_column", "patient_id"]
    results = recipe.main([*common, "--output_dir", str(tmp_path / "out"), "--train_file", str(table)])
    assert "test_accuracy" in results and "eval_accuracy" in results
    assert results["test_samples"] + results["eval_samples"] + results["train_samples"] == len(rows)
    assert results["test_samples"] % 2 == 0 and results["eval_samples"] % 2 == 0  # whole patients (2 images each)

    with pytest.raises(DataError, match="is not a column of a table training file .*, and the training images are "
                                        "not DICOM files whose attribute it could be"):
        run_recipe("image_classification", [*common, "--output_dir", str(tmp_path / "bad"), "--train_dir",
                                            str(sample / "folders" / "train")], raise_errors=True)


# ------------------------------------------------------------------------------------- assertions and relations
@pytest.mark.slow
@pytest.mark.parametrize("task", ["assertion_status", "relation_extraction"])
def test_concept_recipes_cross_validate_by_note(task, tmp_path):
    """Whole notes in each fold; the pooled table says which note (and concept or pair) each row is, its CIs
    resample notes, and for relations the pooled f1 is their positive-type micro-F1, as each fold's test_f1 is. The
    fold models kept, the folder's predict.py gives the mean of their probabilities."""
    import glob

    from sklearn.metrics import precision_recall_fscore_support

    from shared.training.tiny_models import build_tiny_bert
    from tests.helpers import ASSERTION_SAMPLE, RELATION_SAMPLE

    train = str(ASSERTION_SAMPLE / "train") if task == "assertion_status" else str(RELATION_SAMPLE / "i2b2" / "train")
    model = build_tiny_bert(tmp_path / "tiny", [open(p).read() for p in sorted(glob.glob(f"{train}/*.txt"))])
    out = tmp_path / "cv"
    summary = run_recipe(ROOT / "recipes" / "cross_validate.py", [
        "--recipe", task, "--folds", "2", "--audit_labels", "--keep_fold_models", "--", "--model_name_or_path", model,
        "--train_file", train,
        "--output_dir", str(out), "--num_train_epochs", "3", "--learning_rate", "2e-3", "--freeze_layers", "0",
        "--bootstrap_resamples", "20", "--seed", "0"])
    with open(out / "oof_predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    where = ["note", "concept"] if task == "assertion_status" else ["note", "first", "second"]
    assert list(rows[0])[:2 + len(where)] == ["row", "fold", *where]
    assert [int(r["row"]) for r in rows] == list(range(len(rows)))  # every training example scored once
    folds_of_note = {}
    for r in rows:
        folds_of_note.setdefault(r["note"], set()).add(r["fold"])
    assert all(len(folds) == 1 for folds in folds_of_note.values())  # whole notes
    pooled = summary["pooled"]
    assert pooled["samples"] == len(rows)
    if task == "relation_extraction":
        names = [c.removeprefix("prob_") for c in rows[0] if c.startswith("prob_")]
        gold = [r["label"] for r in rows]
        predicted = [names[int(np.argmax([float(r[f"prob_{n}"]) for n in names]))] for r in rows]
        p, r_, f, _ = precision_recall_fscore_support(gold, predicted, labels=[n for n in names if n != "none"],
                                                      average="micro", zero_division=0)
        assert (pooled["precision"], pooled["recall"], pooled["f1"]) == pytest.approx((p, r_, f))
        assert pooled["f1_ci_low"] <= pooled["f1"] <= pooled["f1_ci_high"]
        assert len(summary["metrics"]["test_f1"]["folds"]) == 2
    else:
        assert "f1" not in pooled and "macro_f1_ci_low" in pooled
    with open(out / "label_issues.csv", newline="", encoding="utf-8") as f:  # the rows to re-read, and where
        assert csv.DictReader(f).fieldnames[:3 + len(where)] == ["rank", "row", "fold", *where]

    from shared.deploy.ensemble import load_folder_predictor
    from tests.helpers import run_cli

    predicted = tmp_path / "predicted"
    done = run_cli(task, ["--model_dir", out, "--input", train, "--output_dir", predicted], entry="predict")
    assert done.returncode == 0, done.stderr[-3000:]
    with open(predicted / "predictions.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    members = [load_folder_predictor(str(out / f"fold_{k}"), task=task) for k in range(2)]
    examples = members[0].read(train)
    inputs = ((examples.words,) if task == "assertion_status"
              else (examples.words, examples.allowed_mask(members[0].labels)))
    expected = np.mean([m.predict(*inputs).probs for m in members], axis=0)
    got = np.array([[float(r[f"prob_{n}"]) for n in members[0].labels] for r in table])
    np.testing.assert_allclose(got, expected, atol=2e-6)  # 6 decimals written
    assert "members" in json.loads((out / "config.json").read_text())["ensemble"]
