"""End-to-end runs of recipes/text_classification/train.py with a tiny BERT: outputs, pipeline reload, multi-label,
pairs, imbalance, LoRA, group-aware splits, and its bad-input errors."""

from __future__ import annotations

import csv
import json
import random
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from shared.core.runner import load_recipe
from shared.data.splits import split_indices
from tests.helpers import TEXT_SAMPLE, TOY_CORPUS, real_asset, run_cli

SAMPLE = TEXT_SAMPLE
FAST = ["--num_train_epochs", "1", "--per_device_train_batch_size", "16", "--bootstrap_resamples", "50", "--seed", "3"]


# ------------------------------------------------------------------------------------------ text recipe, end to end
def with_patients(path, rows: int, per_patient: int = 3) -> str:
    """The first ``rows`` rows of the sample training file plus a patient_id column (``per_patient`` rows each)."""
    with open(SAMPLE / "train.csv", newline="", encoding="utf-8") as f:
        data = list(csv.DictReader(f))[:rows]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["patient_id", "text", "label"])
        writer.writeheader()
        for i, row in enumerate(data):
            writer.writerow({"patient_id": f"p{i // per_patient:03d}", **row})
    return str(path)


def test_text_recipe_validation_split_by_patient(tiny_bert_dir, tmp_path, capsys):
    recipe = load_recipe("text_classification")
    train = with_patients(tmp_path / "train.csv", 60)
    common = ["--model_name_or_path", str(tiny_bert_dir), "--train_file", train, "--do_train", "--num_train_epochs", "1",
              "--per_device_train_batch_size", "16", "--seed", "3", "--validation_split_percentage", "20"]
    results = recipe.main([*common, "--output_dir", str(tmp_path / "out"), "--group_column", "patient_id"])
    assert "eval_accuracy" in results  # the percentage turns --do_eval on
    groups = [f"p{i // 3:03d}" for i in range(60)]
    labels = [row["label"] for row in csv.DictReader(open(train, encoding="utf-8"))]
    keep, holdout = split_indices(60, 0.2, labels, groups, seed=3)
    assert results["eval_samples"] == len(holdout) and results["train_samples"] == len(keep)
    assert len(holdout) % 3 == 0  # whole patients (3 rows each)
    card = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert card["eval_samples"] + card["train_samples"] == 60

    with pytest.raises(SystemExit):
        recipe.main([*common, "--output_dir", str(tmp_path / "bad"), "--group_column", "ward"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {train}: group column 'ward' not found")
    assert not (tmp_path / "bad").exists()


def test_text_recipe_flags_a_test_file_sharing_patients_and_resamples_its_patients(tiny_bert_dir, tmp_path,
                                                                                    caplog, monkeypatch):
    recipe = load_recipe("text_classification")
    train = with_patients(tmp_path / "train.csv", 30)  # patients p000-p009
    test = with_patients(tmp_path / "test.csv", 12, per_patient=2)  # p000-p005: all six also in training
    seen = {}
    import shared.evaluation.metrics

    real = shared.evaluation.metrics.bootstrap_ci

    def spy(*args, groups=None, **kwargs):
        seen["groups"] = groups
        return real(*args, groups=groups, **kwargs)

    monkeypatch.setattr(shared.evaluation.metrics, "bootstrap_ci", spy)
    common = ["--model_name_or_path", str(tiny_bert_dir), "--train_file", train, "--test_file", test, "--do_train",
              "--do_predict", "--num_train_epochs", "1", "--bootstrap_resamples", "50", "--seed", "3"]
    with caplog.at_level("WARNING", logger="shared.data.splits"):
        results = recipe.main([*common, "--output_dir", str(tmp_path / "out"), "--group_column", "patient_id"])
    assert "test shares 6 of its 6 groups ('patient_id')" in caplog.text
    assert "p00" not in caplog.text  # counts only: patient ids are never logged
    assert seen["groups"] == [f"p{i // 2:03d}" for i in range(12)]  # CIs resample whole patients
    assert "test_accuracy_ci_low" in results

    caplog.clear()
    with caplog.at_level("WARNING", logger="shared.data.splits"):  # a test file without the column: nothing to check
        recipe.main([*common, "--test_file", str(SAMPLE / "test.csv"), "--max_predict_samples", "8",
                     "--output_dir", str(tmp_path / "out2"), "--group_column", "patient_id"])
    assert "shares" not in caplog.text and seen["groups"] is None


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("text_classification")


def common(model_dir, output_dir, *extra):
    return ["--model_name_or_path", str(model_dir), "--output_dir", str(output_dir), *FAST, *extra]


def sample_files(max_train=120):
    return [
        "--train_file", str(SAMPLE / "train.csv"), "--validation_file", str(SAMPLE / "validation.csv"),
        "--test_file", str(SAMPLE / "test.csv"), "--max_train_samples", str(max_train),
    ]


@pytest.fixture(scope="module")
def single_label_run(recipe, tiny_bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    results = recipe.main(common(tiny_bert_dir, out, *sample_files(), "--do_train", "--do_eval", "--do_predict"))
    return out, results


def test_single_label_outputs(single_label_run):
    out, results = single_label_run
    saved = json.loads((out / "all_results.json").read_text())
    for key in ("test_accuracy", "test_macro_f1", "test_auroc", "eval_accuracy", "train_runtime"):
        assert key in saved
    assert saved["test_macro_f1_ci_low"] <= saved["test_macro_f1"] <= saved["test_macro_f1_ci_high"]
    assert saved["test_samples"] == 120 and saved["train_samples"] == 120
    for name in ("test_confusion_matrix.png", "test_roc.png", "test_report.json", "eval_report.json", "eval_roc.png",
                 "eval_confusion_matrix.png", "README.md", "model.safetensors"):
        assert (out / name).exists(), name
    report = json.loads((out / "test_report.json").read_text())
    assert np.asarray(report["confusion_matrix"]).sum() == 120
    card = (out / "README.md").read_text()
    assert "macro_f1" in card and "95%" in card and "Intended use" in card


def test_predictions_file_matches_metrics_and_gold(single_label_run):
    out, results = single_label_run
    predictions = pd.read_csv(out / "test_predictions.csv")
    gold = pd.read_csv(SAMPLE / "test.csv")["label"]
    assert list(predictions["label"]) == list(gold)  # rows in input order
    assert list(predictions["row"]) == list(range(len(gold)))
    assert "text" not in predictions.columns  # clinical text is not copied into outputs
    assert results["test_accuracy"] == pytest.approx((predictions["label"] == predictions["prediction"]).mean())
    probs = predictions.filter(like="prob_").to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_output_folder_loads_in_pipeline_with_same_predictions(single_label_run):
    from transformers import pipeline

    out, _ = single_label_run
    predictions = pd.read_csv(out / "test_predictions.csv")
    texts = pd.read_csv(SAMPLE / "test.csv")["text"].tolist()[:12]
    classify = pipeline("text-classification", model=str(out), device="cpu")
    got = [r["label"] for r in classify(texts, truncation=True, max_length=128)]
    assert got == predictions["prediction"].tolist()[:12]


def test_evaluate_only_from_a_trained_folder(recipe, single_label_run, tmp_path):
    out, results = single_label_run
    again = recipe.main(
        common(out, tmp_path / "re", "--test_file", str(SAMPLE / "test.csv"), "--do_predict", "--bf16", "false")
    )
    assert again["test_accuracy"] == pytest.approx(results["test_accuracy"])  # predictions are float32 in both
    # the folder's saved temperature gives back the uncalibrated scores too
    assert again["test_ece_uncalibrated"] == pytest.approx(results["test_ece_uncalibrated"], abs=1e-5)
    assert "eval_ece" not in again  # no validation split given: nothing evaluated there


def test_probabilities_are_calibrated_on_validation_and_saved_in_the_head(recipe, single_label_run, tiny_bert_dir,
                                                                          tmp_path):
    from transformers import pipeline

    out, results = single_label_run
    saved = json.loads((out / "all_results.json").read_text())
    for split in ("eval", "test"):
        for name in ("ece", "mce", "brier", "nll"):
            assert f"{split}_{name}" in saved and f"{split}_{name}_uncalibrated" in saved, (split, name)
        assert (out / f"{split}_reliability.png").stat().st_size > 1000
    assert saved["eval_nll"] <= saved["eval_nll_uncalibrated"] + 1e-9  # T minimises validation NLL, T = 1 included
    assert saved["test_ece_ci_low"] <= saved["test_ece"] <= saved["test_ece_ci_high"]
    calibration = json.loads((out / "config.json").read_text())["calibration"]
    assert calibration["method"] == "temperature" and len(calibration["temperature"]) == 1
    assert calibration["fitted_on_validation_examples"] == results["eval_samples"]
    card = (out / "README.md").read_text()
    assert "temperature scaling" in card and "ece before calibration (lower is better)" in card

    # the head itself is calibrated: pipeline() gives the probabilities of the predictions file
    predictions = pd.read_csv(out / "test_predictions.csv")
    texts = pd.read_csv(SAMPLE / "test.csv")["text"].tolist()[:12]
    classify = pipeline("text-classification", model=str(out), device="cpu", top_k=None)
    for row, scores in zip(predictions.itertuples(), classify(texts, truncation=True, max_length=128)):
        for score in scores:
            assert score["score"] == pytest.approx(getattr(row, f"prob_{score['label']}"), abs=1e-4)

    # --calibration none: the same model and decisions, raw probabilities, nothing recorded
    raw = recipe.main(common(tiny_bert_dir, tmp_path / "raw", *sample_files(), "--do_train", "--do_eval",
                             "--do_predict", "--calibration", "none"))
    assert raw["test_accuracy"] == results["test_accuracy"] and raw["eval_macro_f1"] == results["eval_macro_f1"]
    assert raw["test_nll"] == pytest.approx(results["test_nll_uncalibrated"], rel=1e-4)
    assert "test_ece_uncalibrated" not in raw
    assert json.loads((tmp_path / "raw" / "config.json").read_text())["calibration"] is None


def test_multilabel_with_thresholds(recipe, tiny_bert_dir, tmp_path):
    rng = random.Random(0)
    names = ["cardiac", "renal", "infection"]
    words = {"cardiac": "chest pain troponin", "renal": "creatinine oliguria", "infection": "fever cough"}

    def write(path, n):
        with path.open("w") as f:
            for _ in range(n):
                labels = [name for name in names if rng.random() < 0.4]
                text = " ".join(words[label] for label in labels) + " patient reviewed today"
                f.write(json.dumps({"text": text, "labels": labels}) + "\n")

    for split, n in (("train", 60), ("dev", 24), ("test", 24)):
        write(tmp_path / f"{split}.jsonl", n)
    out = tmp_path / "out"
    results = recipe.main(common(
        tiny_bert_dir, out, "--train_file", str(tmp_path / "train.jsonl"), "--validation_file", str(tmp_path / "dev.jsonl"),
        "--test_file", str(tmp_path / "test.jsonl"), "--label_column", "labels", "--do_train", "--do_eval", "--do_predict",
        "--class_weighting", "balanced", "--num_train_epochs", "2",
    ))
    assert "test_micro_f1" in results and "test_macro_f1_ci_low" in results
    thresholds = json.loads((out / "thresholds.json").read_text())
    assert sorted(thresholds) == sorted(names)
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["decision_thresholds"] == pytest.approx(thresholds)
    assert len(config["calibration"]["temperature"]) == len(names)  # one temperature per label
    predictions = pd.read_csv(out / "test_predictions.csv", keep_default_na=False, float_precision="round_trip")
    probs = predictions[[f"prob_{n}" for n in names]].to_numpy()
    # the recipe lists a row's labels in label-map order (sorted), not in this test's order
    decided = [[n for n, p in sorted(zip(names, row)) if p >= thresholds[n]] for row in probs]
    assert decided == [json.loads(cell) for cell in predictions["prediction"]]  # one cell format: a JSON list


def test_text_pair_class_weighting_focal_and_oversampling(recipe, tiny_bert_dir, tmp_path):
    rng = random.Random(1)
    rows = []
    for i in range(80):
        answerable = i % 4 == 0  # imbalanced: 1 in 4
        question = "does the patient have a fever?"
        context = "temperature 39.1 , fever since monday" if answerable else "afebrile , no complaints today"
        rows.append({"question": question, "context": context + f" , bed {rng.randint(1, 30)}", "answerable": str(answerable)})
    pd.DataFrame(rows).to_csv(tmp_path / "pairs.csv", index=False)
    out = tmp_path / "out"
    results = recipe.main(common(
        tiny_bert_dir, out, "--train_file", str(tmp_path / "pairs.csv"), "--test_file", str(tmp_path / "pairs.csv"),
        "--text_column", "question", "--text_pair_column", "context", "--label_column", "answerable",
        "--class_weighting", "inverse_sqrt", "--focal_gamma", "2", "--oversample", "--do_train", "--do_predict",
    ))
    assert results["train_samples"] == 120  # 60 negatives + 20 positives oversampled to 60
    assert {"test_sensitivity", "test_specificity"} <= set(results)


def test_lora_adapter_reload_and_merge_give_same_predictions(recipe, tiny_bert_dir, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from shared.core.args import ModelArguments
    from shared.training.models import load_trained

    args = sample_files(64) + ["--do_train", "--do_predict", "--use_lora", "--lora_r", "4", "--learning_rate", "5e-3"]
    adapter_dir, merged_dir = tmp_path / "adapter", tmp_path / "merged"
    recipe.main(common(tiny_bert_dir, adapter_dir, *args, "--bf16", "false"))
    recipe.main(common(tiny_bert_dir, merged_dir, *args, "--bf16", "false", "--merge_lora"))
    assert (adapter_dir / "adapter_model.safetensors").exists() and not (adapter_dir / "model.safetensors").exists()
    assert (merged_dir / "model.safetensors").exists() and not (merged_dir / "adapter_config.json").exists()
    results = json.loads((adapter_dir / "train_results.json").read_text())
    assert 0 < results["train_trainable_parameters"] < 0.5 * sum(
        p.numel() for p in AutoModelForSequenceClassification.from_pretrained(merged_dir).parameters()
    )

    texts = pd.read_csv(SAMPLE / "test.csv")["text"].tolist()[:16]
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    expected = pd.read_csv(adapter_dir / "test_predictions.csv").filter(like="prob_").to_numpy()[:16]
    reloaded = load_trained(AutoModelForSequenceClassification,
                            ModelArguments(model_name_or_path=str(adapter_dir))).eval()
    with torch.no_grad():
        probs = torch.softmax(reloaded(**batch).logits, -1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    merged = pd.read_csv(merged_dir / "test_predictions.csv").filter(like="prob_").to_numpy()[:16]
    np.testing.assert_allclose(merged, expected, atol=1e-4)  # same seed, same training: merging changes nothing
    classify = pipeline("text-classification", model=str(merged_dir), device="cpu", top_k=None)
    scores = classify(texts[:4], truncation=True, max_length=128)
    names = sorted(s["label"] for s in scores[0])
    got = np.array([[{s["label"]: s["score"] for s in row}[n] for n in names] for row in scores])
    np.testing.assert_allclose(got, merged[:4], atol=1e-4)


def test_predict_mode_on_unlabelled_file(recipe, single_label_run, tmp_path):
    out, _ = single_label_run
    pd.read_csv(SAMPLE / "test.csv")[["text"]].head(10).to_csv(tmp_path / "new.csv", index=False)
    results = recipe.main(common(out, tmp_path / "pred", "--test_file", str(tmp_path / "new.csv"), "--do_predict"))
    assert not any(k.startswith("test_") for k in results)
    predictions = pd.read_csv(tmp_path / "pred" / "test_predictions.csv")
    assert len(predictions) == 10 and "label" not in predictions.columns and "prediction" in predictions.columns


def write_csv(path, rows, header=("text", "label")):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_column", r"train\.csv: column 'label' not found \(columns: text, diagnosis\)"),
        ("empty_split", r"validation\.csv: file has no rows"),
        ("unseen_label", r"validation\.csv:3: label 'renal' does not occur in the training data"),
        ("non_utf8", r"train\.csv:3: not valid UTF-8"),
        ("empty_text", r"train\.csv:5: empty or missing text in column 'text'"),
        ("missing_model", r"no_such_model: model folder does not exist"),
    ],
)
def test_bad_input_gives_one_clear_line(case, expected, tiny_bert_dir, tmp_path):
    rows = [("chest pain", "cardiac"), ("cough", "resp"), ("palpitations", "cardiac")]
    train = write_csv(tmp_path / "train.csv", rows)
    validation = write_csv(tmp_path / "validation.csv", rows)
    model = tiny_bert_dir
    if case == "missing_column":
        write_csv(train, rows, header=("text", "diagnosis"))
    elif case == "empty_split":
        write_csv(validation, [])
    elif case == "unseen_label":
        write_csv(validation, [("cough", "resp"), ("oliguria", "renal")])
    elif case == "non_utf8":
        train.write_bytes(b"text,label\nchest pain,cardiac\nfi\xe8vre,resp\n")
    elif case == "empty_text":
        write_csv(train, rows + [("", "resp")])
    elif case == "missing_model":
        model = tmp_path / "no_such_model"
    out = tmp_path / "out"
    proc = run_cli("text_classification", [
        "--model_name_or_path", str(model), "--train_file", str(train), "--validation_file", str(validation),
        "--output_dir", str(out), "--do_train", "--do_eval",
    ], timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in proc.stderr
    assert re.search(expected, last), last
    assert not out.exists()  # nothing half-written


@pytest.mark.slow
def test_minilm_on_medical_abstracts_beats_majority_class(recipe, tmp_path):
    data = real_asset("data", "text_classification", "medical_abstracts")
    model = real_asset("models", "all-MiniLM-L6-v2")
    results = recipe.main([
        "--model_name_or_path", str(model), "--output_dir", str(tmp_path / "out"),
        "--train_file", str(data / "train.csv"), "--test_file", str(data / "test.csv"),
        "--max_train_samples", "1000", "--max_predict_samples", "300", "--num_train_epochs", "2", "--learning_rate", "2e-4",
        "--bootstrap_resamples", "200", "--do_train", "--do_predict",
        "--train_windows", "one_per_epoch",  # a third of the training cost (abstracts span ~3 windows); the suite's slowest test
    ])
    gold = pd.read_csv(data / "test.csv")["label"].astype(str).head(300)
    majority = gold.value_counts(normalize=True).iloc[0]
    assert results["test_accuracy"] > majority + 0.15, (results["test_accuracy"], majority)
    assert results["test_accuracy_ci_low"] > majority  # clearly: the whole 95% interval is above it
    assert results["test_macro_f1"] > 0.35


def test_unreachable_hub_id_fails_fast_with_one_line(tmp_path, monkeypatch):
    """Without HF_HUB_OFFLINE, an unknown/unreachable Hub id still fails with one line (no minute of retries)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    train = write_csv(tmp_path / "train.csv", [("chest pain", "cardiac"), ("cough", "resp")])
    proc = run_cli("text_classification", [
        "--model_name_or_path", "no-such-org/no-such-model-xyz", "--train_file", str(train),
        "--output_dir", str(tmp_path / "out"), "--do_train",
    ], timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "--model_name_or_path models/<name>" in last and "no-such-org/no-such-model-xyz" in last
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ notes longer than the model
CUES = {"yes": "pneumonia", "no": "metformin"}


def cue_at_the_end(path, notes: int, seed: int) -> str:
    """Notes of 20 filler words whose label is decided by one word, always the last one: past the first window."""
    rng = random.Random(seed)
    filler = [w for text in TOY_CORPUS for w in text.split() if w not in CUES.values()]
    rows = [{"text": " ".join([*rng.choices(filler, k=20), CUES[label]]), "label": label}
            for label in ["yes", "no"] * (notes // 2)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def cue_runs(recipe, tiny_bert_dir, tmp_path_factory):
    """The same long notes trained with --long_text chunk (max aggregation) and with truncate, 16-token windows."""
    tmp = tmp_path_factory.mktemp("cue")
    files = ["--train_file", cue_at_the_end(tmp / "train.csv", 160, 0),
             "--test_file", cue_at_the_end(tmp / "test.csv", 60, 1)]
    settings = ["--model_name_or_path", str(tiny_bert_dir), *files, "--do_train", "--do_predict", "--max_seq_length",
                "16", "--num_train_epochs", "8", "--learning_rate", "1e-3", "--per_device_train_batch_size", "16",
                "--bootstrap_resamples", "0", "--seed", "0"]
    return tmp, {mode: recipe.main([*settings, "--output_dir", str(tmp / mode), "--long_text", mode,
                                    *(["--chunk_aggregation", "max"] if mode == "chunk" else [])])
                 for mode in ("chunk", "truncate")}


def test_a_cue_at_the_end_of_long_notes_is_learned_with_chunk_and_not_with_truncate(cue_runs):
    _, runs = cue_runs
    assert runs["truncate"]["test_truncated_examples"] == 60 and runs["chunk"]["test_truncated_examples"] == 0
    assert runs["chunk"]["test_accuracy"] >= 0.8, runs["chunk"]["test_accuracy"]  # learned from the last window
    assert runs["truncate"]["test_accuracy"] <= 0.65, runs["truncate"]["test_accuracy"]  # never sees the cue: chance


def test_long_notes_are_scored_once_per_note(cue_runs):
    tmp, runs = cue_runs
    chunk = runs["chunk"]
    assert chunk["train_samples"] == 160 < chunk["train_windows"]
    assert chunk["test_samples"] == 60 < chunk["test_windows"]
    predictions = pd.read_csv(tmp / "chunk" / "test_predictions.csv")
    assert list(predictions["row"]) == list(range(60))
    assert chunk["test_accuracy"] == pytest.approx((predictions["label"] == predictions["prediction"]).mean())
    report = json.loads((tmp / "chunk" / "test_report.json").read_text())
    assert np.asarray(report["confusion_matrix"]).sum() == 60  # notes, not windows


def test_a_folder_reads_long_notes_the_way_it_was_trained(recipe, cue_runs):
    tmp, runs = cue_runs
    config = json.loads((tmp / "chunk" / "config.json").read_text())
    assert config["long_text"] == {"mode": "chunk", "stride": 4, "aggregation": "max", "train_windows": "all",
                                   "chosen_on_validation": None}  # given, not chosen
    assert "max of its windows' logits" in (tmp / "chunk" / "README.md").read_text()
    evaluate = ["--model_name_or_path", str(tmp / "chunk"), "--test_file", str(tmp / "test.csv"), "--do_predict",
                "--max_seq_length", "16", "--bootstrap_resamples", "0"]
    again = recipe.main([*evaluate, "--output_dir", str(tmp / "again")])  # no --long_text: the folder's own
    assert again["test_windows"] == runs["chunk"]["test_windows"]
    assert again["test_accuracy"] == pytest.approx(runs["chunk"]["test_accuracy"])
    cut = recipe.main([*evaluate, "--output_dir", str(tmp / "cut"), "--long_text", "truncate"])  # a flag still wins
    assert cut["test_truncated_examples"] == 60 and cut["test_windows"] == 60


def test_auto_reads_long_notes_by_the_reading_that_wins_on_validation(recipe, tiny_bert_dir, cue_runs):
    """The cue is past the first window: validation says the first window alone is at chance, so the default keeps
    the mean of every window, and records both scores in config.json and the model card."""
    tmp, _ = cue_runs
    out = tmp / "auto"
    results = recipe.main(["--model_name_or_path", str(tiny_bert_dir), "--train_file", str(tmp / "train.csv"),
                           "--validation_file", cue_at_the_end(tmp / "validation.csv", 40, 2),
                           "--test_file", str(tmp / "test.csv"), "--do_train", "--do_eval", "--do_predict",
                           "--max_seq_length", "16", "--num_train_epochs", "8", "--learning_rate", "1e-3",
                           "--per_device_train_batch_size", "16", "--bootstrap_resamples", "0", "--seed", "0",
                           "--output_dir", str(out)])  # cue_runs' settings, no --chunk_aggregation
    saved = json.loads((out / "config.json").read_text())["long_text"]
    assert saved["aggregation"] == "mean", saved
    scores = saved["chosen_on_validation"]
    assert scores["mean"] >= 0.8 and scores["first"] <= 0.7, scores
    assert results["eval_macro_f1"] == pytest.approx(scores["mean"], abs=0.05)  # after calibration: same argmax
    assert "chosen on validation (mean" in (out / "README.md").read_text()


def test_a_first_window_folder_is_served_as_it_was_scored(recipe, cue_runs):
    """--chunk_aggregation first: the saved folder reads each note's first window in predict.py too."""
    tmp, _ = cue_runs
    out = tmp / "first"
    recipe.main(["--model_name_or_path", str(tmp / "chunk"), "--test_file", str(tmp / "test.csv"), "--do_predict",
                 "--chunk_aggregation", "first", "--bootstrap_resamples", "0", "--output_dir", str(tmp / "first_eval")])
    done = run_cli("text_classification", ["--model_dir", tmp / "chunk", "--input", tmp / "test.csv",
                                           "--output_dir", out], entry="predict")
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((tmp / "chunk" / "config.json").read_text())
    config["long_text"]["aggregation"] = "first"
    served = tmp / "chunk_first"
    shutil.copytree(tmp / "chunk", served)
    (served / "config.json").write_text(json.dumps(config))
    done = run_cli("text_classification", ["--model_dir", served, "--input", tmp / "test.csv",
                                           "--output_dir", tmp / "served_first"], entry="predict")
    assert done.returncode == 0, done.stderr[-2000:]
    scored = pd.read_csv(tmp / "first_eval" / "test_predictions.csv")
    predicted = pd.read_csv(tmp / "served_first" / "predictions.csv")
    columns = [c for c in scored.columns if c.startswith("prob_")]
    assert columns and np.allclose(scored[columns].to_numpy(), predicted[columns].to_numpy(), atol=1e-5)
    every = pd.read_csv(out / "predictions.csv")  # the folder as trained (max of every window) reads otherwise
    assert not np.allclose(every[columns].to_numpy(), predicted[columns].to_numpy(), atol=1e-3)


def test_oversampling_and_group_splits_count_notes_not_windows(recipe, tiny_bert_dir, tmp_path):
    train = with_patients(tmp_path / "train.csv", 60)
    labels = [row["label"] for row in csv.DictReader(open(train, encoding="utf-8"))]
    keep, holdout = split_indices(60, 0.25, labels, [f"p{i // 3:03d}" for i in range(60)], seed=3)
    results = recipe.main(common(tiny_bert_dir, tmp_path / "out", "--train_file", train, "--do_train", "--oversample",
                                 "--validation_split_percentage", "25", "--group_column", "patient_id",
                                 "--max_seq_length", "12", "--long_text", "chunk"))
    counts = pd.Series([labels[i] for i in keep]).value_counts()
    assert results["train_samples"] == counts.max() * len(counts)  # every class oversampled to the largest, in notes
    assert results["train_windows"] > results["train_samples"]
    assert results["eval_samples"] == len(holdout) < results["eval_windows"]  # whole patients, scored per note


def test_one_window_per_note_per_epoch_moves_on_every_epoch(recipe, tiny_bert_dir, tmp_path, monkeypatch):
    from shared.data.long_text import WindowPerEpoch

    epochs_read, read = set(), WindowPerEpoch.__getitem__

    def spy(self, index):
        epochs_read.add(self.epoch)
        return read(self, index)

    monkeypatch.setattr(WindowPerEpoch, "__getitem__", spy)
    results = recipe.main(common(tiny_bert_dir, tmp_path / "out", *sample_files(40), "--do_train", "--num_train_epochs",
                                 "3", "--long_text", "chunk", "--max_seq_length", "16", "--train_windows",
                                 "one_per_epoch"))
    assert epochs_read == {0, 1, 2}  # the Trainer callback told the training set each epoch
    assert results["train_windows"] == results["train_samples"] == 40  # one window per note


def test_a_model_that_learned_one_class_says_so_after_evaluation(recipe, tiny_bert_dir, tmp_path, caplog):
    import logging

    # 3 of every 4 rows "no" and nothing to learn from: a plain cross-entropy model settles on the majority class
    rows = [{"text": "patient seen today in clinic", "label": "yes" if i % 4 == 0 else "no"} for i in range(48)]
    pd.DataFrame(rows).to_csv(tmp_path / "flat.csv", index=False)
    data = str(tmp_path / "flat.csv")
    with caplog.at_level(logging.WARNING):
        results = recipe.main(common(tiny_bert_dir, tmp_path / "out", "--train_file", data, "--test_file", data,
                                     "--do_train", "--do_predict", "--num_train_epochs", "3",
                                     "--learning_rate", "1e-2"))
    assert results["test_predicted_classes"] == 1
    assert "test: every one of the 48 examples is predicted 'no' although the gold labels hold 2" in caplog.text


# ------------------------------------------------------------------------------------------ defaults from the data
def test_defaults_follow_a_small_imbalanced_training_set_and_keep_the_best_epoch(recipe, tiny_bert_dir, tmp_path):
    """120 training notes (172:41 classes in the sample): batch 8, epochs up to the step floor, balanced weights,
    and the epoch evaluated is the one that scored best on validation."""
    results = recipe.main(["--model_name_or_path", str(tiny_bert_dir), "--output_dir", str(tmp_path / "out"),
                           *sample_files(120), "--do_train", "--do_eval", "--bootstrap_resamples", "0"])
    assert results["train_batch_size"] == 8 and results["epoch"] == 10  # 15 steps per epoch, capped at 10 epochs
    assert 1 <= results["train_best_epoch"] <= 10
    assert results["eval_macro_f1"] == pytest.approx(results["train_best_eval_macro_f1"])
    card = (tmp_path / "out" / "README.md").read_text()
    assert "batch size 8 (not 32: 120 training examples)" in card and "class weighting balanced" in card
    assert f"kept_epoch: `{results['train_best_epoch']} of 10" in card


def test_options_the_user_sets_override_the_derived_defaults(recipe, tiny_bert_dir, tmp_path):
    (tmp_path / "run.yaml").write_text("num_train_epochs: 2\nclass_weighting: none\n")
    results = recipe.main(["--model_name_or_path", str(tiny_bert_dir), "--output_dir", str(tmp_path / "out"),
                           *sample_files(120), "--do_train", "--do_eval", "--bootstrap_resamples", "0",
                           "--per_device_train_batch_size", "32", "--eval_strategy", "no",
                           "--config", str(tmp_path / "run.yaml")])
    assert results["train_batch_size"] == 32 and results["epoch"] == 2 and "train_best_epoch" not in results
    card = (tmp_path / "out" / "README.md").read_text()
    assert "derived_from_the_training_data: `none" in card and "class_weighting: `none`" in card
