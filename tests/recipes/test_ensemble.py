"""Fold models that predict as one (shared/deploy/ensemble.py): recipes/cross_validate.py --keep_fold_models makes
its output folder an ensemble, and predict.py reads it as one model."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from shared.deploy.ensemble import Ensemble, write_ensemble
from shared.evaluation.metrics import tune_thresholds
from shared.tasks import task_record
from tests.helpers import IMAGE_SAMPLE, ROOT, TEXT_SAMPLE, assert_one_line, run_cli

CROSS_VALIDATE = ROOT / "recipes" / "cross_validate.py"
QUIET = ["--bf16", "false", "--bootstrap_resamples", "10", "--seed", "0"]


def probabilities(path) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return np.array([[float(v) for k, v in row.items() if k.startswith("prob_")] for row in rows])


def predict(model_dir, data, out, *extra) -> np.ndarray:
    done = run_cli("text_classification", ["--model_dir", model_dir, "--input", data, "--output_dir", out, *extra],
                   entry="predict")
    assert done.returncode == 0, done.stderr[-3000:]
    return probabilities(out / "predictions.csv")


@pytest.fixture(scope="module")
def text_cv(tiny_bert_dir, tmp_path_factory):
    """A 3-fold cross-validation of the text recipe whose fold models were kept (three fresh processes: slow)."""
    out = tmp_path_factory.mktemp("text_cv") / "cv"
    done = run_cli(CROSS_VALIDATE, [
        "--recipe", "text_classification", "--folds", "3", "--keep_fold_models", "--",
        "--model_name_or_path", tiny_bert_dir, "--train_file", TEXT_SAMPLE / "train.csv", "--max_train_samples", "60",
        "--output_dir", out, "--num_train_epochs", "2", "--learning_rate", "5e-3", "--max_seq_length", "24", *QUIET])
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_cross_validation_with_kept_models_is_a_folder_that_predicts_the_folds_average(text_cv, tmp_path):
    config = json.loads((text_cv / "config.json").read_text())
    assert config["ensemble"]["members"] == ["fold_0", "fold_1", "fold_2"]
    assert config["recipe"]["task"] == "text_classification"
    card = (text_cv / "README.md").read_text()
    assert "`fold_0/`, `fold_1/`, `fold_2/`" in card and "pooled out-of-fold" in card
    test = TEXT_SAMPLE / "test.csv"
    members = [predict(text_cv / f"fold_{k}", test, tmp_path / f"fold_{k}") for k in range(3)]
    assert not np.allclose(members[0], members[1])  # the folds learned different models
    ensemble = predict(text_cv, test, tmp_path / "ensemble")
    np.testing.assert_allclose(ensemble, np.mean(members, axis=0), atol=2e-6)  # 6 decimals written
    with open(tmp_path / "ensemble" / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = [c.removeprefix("prob_") for c in rows[0] if c.startswith("prob_")]
    assert [r["prediction"] for r in rows] == [names[i] for i in ensemble.argmax(axis=1)]
    results = json.loads((tmp_path / "ensemble" / "predict_results.json").read_text())
    assert results["examples"] == len(rows) and "macro_f1" in results


@pytest.mark.slow
def test_an_ensemble_of_one_model_twice_predicts_as_that_model(text_cv, tmp_path):
    folder = tmp_path / "twice"
    folder.mkdir()
    for name in ("a", "b"):
        shutil.copytree(text_cv / "fold_1", folder / name)
    config = json.loads((text_cv / "config.json").read_text())
    config["ensemble"]["members"] = ["a", "b"]
    (folder / "config.json").write_text(json.dumps(config))
    test = TEXT_SAMPLE / "test.csv"
    np.testing.assert_array_equal(predict(folder, test, tmp_path / "twice_out"),
                                  predict(text_cv / "fold_1", test, tmp_path / "one_out"))


@pytest.mark.slow
def test_a_broken_ensemble_is_one_line_before_anything_is_written(text_cv, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(text_cv, folder)
    shutil.rmtree(folder / "fold_2")
    out = tmp_path / "out"
    done = run_cli("text_classification", ["--model_dir", folder, "--input", TEXT_SAMPLE / "test.csv",
                                           "--output_dir", out], entry="predict")
    assert_one_line(done.returncode, done.stderr, r".*broken: ensemble member fold_2 is missing .*", out)
    shutil.copytree(text_cv / "fold_2", folder / "fold_2")
    config = json.loads((folder / "fold_2" / "config.json").read_text())
    config["max_seq_length"] = 16  # trained to read other windows: one encoding cannot serve every member
    (folder / "fold_2" / "config.json").write_text(json.dumps(config))
    done = run_cli("text_classification", ["--model_dir", folder, "--input", TEXT_SAMPLE / "test.csv",
                                           "--output_dir", out], entry="predict")
    assert_one_line(done.returncode, done.stderr, r".*ensemble member fold_2 reads its inputs differently from "
                                                  r"fold_0 \(max_length\).*", out)
    done = run_cli("image_classification", ["--model_dir", text_cv, "--input", IMAGE_SAMPLE / "folders" / "test",
                                            "--output_dir", out], entry="predict")
    assert_one_line(done.returncode, done.stderr, r".*text classification.*", out)


def test_multi_label_thresholds_are_tuned_on_the_pooled_out_of_fold_probabilities(tmp_path):
    labels = ["cardiac", "renal", "pulmonary"]
    folds = []
    for k in range(2):
        folder = tmp_path / f"fold_{k}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({
            **task_record("text_classification", text_column="text", label_column="labels"),
            "id2label": dict(enumerate(labels)), "problem_type": "multi_label_classification"}))
        folds.append(str(folder))
    rng = np.random.default_rng(0)
    probs = rng.random((40, 3))
    gold = [list(np.flatnonzero(p > 0.6)) for p in probs + rng.normal(0, 0.2, probs.shape)]
    pooled = {"label_names": labels, "multi_label": True, "probs": probs, "gold": gold}
    entry = write_ensemble(str(tmp_path), folds, pooled, None, {"test_macro_f1": 0.5}, "text_classification")
    indicator = np.zeros((40, 3), dtype=int)
    for row, ids in enumerate(gold):
        indicator[row, ids] = 1
    expected = tune_thresholds(indicator, probs)
    assert [entry["decision_thresholds"][n] for n in labels] == pytest.approx(expected.tolist())
    assert "pooled out-of-fold probabilities of 40 rows" in entry["thresholds_from"]
    assert "cardiac" in (tmp_path / "README.md").read_text()
    fixed = write_ensemble(str(tmp_path), folds, pooled, "0.3", {}, "text_classification")
    assert set(fixed["decision_thresholds"].values()) == {0.3}


def test_an_image_ensemble_decodes_once_and_averages(tmp_path):
    from shared.core.runner import run_recipe
    from shared.training.tiny_models import build_tiny_vit

    vit = build_tiny_vit(tmp_path / "vit")
    folder = tmp_path / "ensemble"
    for k, seed in enumerate(("1", "2")):
        run_recipe("image_classification", [
            "--model_name_or_path", vit, "--train_dir", IMAGE_SAMPLE / "folders" / "train", "--output_dir",
            folder / f"m{k}", "--do_train", "--num_train_epochs", "1", "--learning_rate", "1e-3", *QUIET[:4],
            "--seed", seed])
    config = json.loads((folder / "m0" / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({"recipe": config["recipe"], "ensemble": {
        "members": ["m0", "m1"], "decision_threshold": None}}))
    ensemble = Ensemble(str(folder))
    images = ensemble.read(str(IMAGE_SAMPLE / "folders" / "test"))
    decoded = ensemble.decode(images)
    members = [m.predict(decoded).probs for m in ensemble.members]
    assert not np.allclose(members[0], members[1])
    np.testing.assert_allclose(ensemble.predict(decoded).probs, np.mean(members, axis=0), rtol=1e-6)


def test_test_time_augmentation_averages_views_drawn_with_the_training_settings(tiny_vit, tmp_path):
    from shared.core.runner import run_recipe

    model = tmp_path / "model"
    run_recipe("image_classification", [
        "--model_name_or_path", tiny_vit, "--train_dir", IMAGE_SAMPLE / "folders" / "train", "--output_dir", model,
        "--do_train", "--num_train_epochs", "1", "--learning_rate", "1e-3", "--hflip", "0", *QUIET])
    saved = json.loads((model / "config.json").read_text())["augmentation"]
    assert saved["hflip"] == 0 and saved["vflip"] == 0  # what the views repeat: no flip training did not use
    test = IMAGE_SAMPLE / "folders" / "test"

    def predicted(out, *extra):
        done = run_cli("image_classification", ["--model_dir", model, "--input", test, "--output_dir", out, *extra],
                       entry="predict")
        assert done.returncode == 0, done.stderr[-3000:]
        return probabilities(out / "predictions.csv")

    plain, one, four, again = (predicted(tmp_path / "plain"), predicted(tmp_path / "one", "--tta", "1"),
                               predicted(tmp_path / "four", "--tta", "4"), predicted(tmp_path / "again", "--tta", "4"))
    np.testing.assert_array_equal(plain, one)
    assert not np.allclose(plain, four, atol=1e-4)  # the views differ from the image itself
    np.testing.assert_array_equal(four, again)  # and are the same on every run

    from shared.deploy.predictors import ImageClassifier
    from shared.images.augment import tta_views

    predictor = ImageClassifier(str(model))
    decoded = predictor.decode(predictor.read(str(test)))
    views = [np.stack([predictor.model(pixel_values=predictor.collate([v[i]])["pixel_values"]).logits[0]
                       .detach().numpy() for i in range(len(v))])
             for v in tta_views(decoded.pixels, predictor.mean, predictor.std, predictor.augmentation, 4)]
    expected = np.mean([predictor.probabilities(v) for v in views], axis=0)
    np.testing.assert_allclose(predictor.predict(decoded, 4).probs, expected, atol=1e-5)

    out = tmp_path / "bad"
    done = run_cli("image_classification", ["--model_dir", model, "--input", test, "--output_dir", out, "--tta", "0"],
                   entry="predict")
    assert_one_line(done.returncode, done.stderr, r"--tta must be at least 1 \(1: off\), got 0", out)
    config = json.loads((model / "config.json").read_text())
    config["augmentation"] = None  # trained with --augment false
    (model / "config.json").write_text(json.dumps(config))
    done = run_cli("image_classification", ["--model_dir", model, "--input", test, "--output_dir", out, "--tta", "3"],
                   entry="predict")
    assert_one_line(done.returncode, done.stderr, r".*model: --tta 3: this folder records no training augmentation "
                                                  r"to repeat .*", out)


# ------------------------------------------------------------------------------------------------------------ NER
@pytest.fixture(scope="module", params=["softmax", "crf"])
def ner_pair(request, tmp_path_factory):
    """Two tiny NER models of one configuration, trained with different seeds (with ``crf``: each with its own CRF),
    in one folder: an ensemble of the two and one of the first twice."""
    from shared.core.runner import run_recipe
    from tests.helpers import NER_SAMPLE, build_tiny_ner_model

    root = tmp_path_factory.mktemp(f"ner_{request.param}")
    model = build_tiny_ner_model(root / "bert")
    crf = ["--use_crf", "true"] if request.param == "crf" else []
    for k, seed in enumerate(("1", "2")):
        run_recipe("ner", [
            "--model_name_or_path", model, "--train_file", NER_SAMPLE / "train", "--output_dir", root / f"m{k}",
            "--do_train", "--num_train_epochs", "1", "--learning_rate", "5e-3", "--max_seq_length", "32", "--stride",
            "8", "--optim", "adamw_torch", *crf, *QUIET[:4], "--seed", seed])
    record = json.loads((root / "m0" / "config.json").read_text())["recipe"]
    for folder, members in (("pair", ["m0", "m1"]), ("twice", ["m0", "m0_again"])):
        (root / folder).mkdir()
        for name in members:
            shutil.copytree(root / name.removesuffix("_again"), root / folder / name)
        (root / folder / "config.json").write_text(json.dumps({"recipe": record, "ensemble": {"members": members}}))
    return root


def test_a_ner_ensemble_of_one_model_twice_tags_as_that_model(ner_pair):
    from shared.deploy.ensemble import load_folder_predictor
    from shared.deploy.predictors import EntityTagger
    from tests.helpers import NER_SAMPLE

    one = EntityTagger(str(ner_pair / "m0"))
    twice = load_folder_predictor(str(ner_pair / "twice"), task="ner")
    words = one.read(str(NER_SAMPLE / "test")).words
    assert twice.predict(words).labels == one.predict(words).labels

    from shared.deploy.chain import Chain

    notes = [p.read_text() for p in sorted((NER_SAMPLE / "test" / "txt").glob("*.txt"))]
    facts = Chain.from_folders(str(ner_pair / "twice")).annotate(notes)  # the chain reads an ensemble folder too
    assert facts == Chain.from_folders(str(ner_pair / "m0")).annotate(notes) and any(f.concepts for f in facts)
    assert [twice.entities(n) for n in notes] == [one.entities(n) for n in notes]  # what serve.py answers


@pytest.mark.parametrize("ner_pair", ["softmax"], indirect=True)
def test_an_ensemble_is_not_one_model_to_export_or_train_from(ner_pair, tmp_path):
    from tests.helpers import NER_SAMPLE

    out = tmp_path / "onnx"
    done = run_cli(ROOT / "recipes" / "export_onnx.py", ["--model_dir", ner_pair / "pair", "--input",
                                                         NER_SAMPLE / "test", "--output_dir", out])
    assert_one_line(done.returncode, done.stderr, r".*pair: this folder is an ensemble of fold models .* pass a "
                                                  r"member folder \(fold_0, \.\.\.\)", out)
    done = run_cli("ner", ["--model_name_or_path", ner_pair / "pair", "--do_predict", "--test_file",
                           NER_SAMPLE / "test", "--output_dir", out])
    assert_one_line(done.returncode, done.stderr, r".*pair: this folder is an ensemble of fold models .*", out)


def test_a_ner_ensemble_decides_on_the_members_mean_scores(ner_pair):
    """Softmax members: the tag most probable on average at each word's first subword; CRF members: the tag path
    whose mean member score (mean emissions + mean CRF transitions) is highest."""
    import torch

    from shared.deploy.ensemble import Ensemble
    from shared.formats.tags import from_scheme
    from shared.ner.crf import constrained_viterbi
    from shared.ner.windows import _collate
    from tests.helpers import NER_SAMPLE

    ensemble = Ensemble(str(ner_pair / "pair"))
    first, second = ensemble.members
    words = first.read(str(NER_SAMPLE / "test")).words
    tags = ensemble.predict(words).labels
    assert first.predict(words).labels != second.predict(words).labels  # the members disagree on some words
    crf = first.use_crf
    assert crf == (ner_pair.name.startswith("ner_crf"))
    expected = [[None] * len(w) for w in words]
    for window in first.windows(words):  # one window at a time, straight from each member's forward pass
        batch = _collate(first.tokenizer.pad_token_id)([window])
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "length")}
        with torch.no_grad():
            logits = [m.emissions_model.eval()(**inputs).logits[0] for m in ensemble.members]
        if crf:
            positions = [p for p in range(len(window.input_ids)) if window.scored[p]]

            def mean(part):
                return torch.stack([getattr(m.model.crf, part) for m in ensemble.members]).mean(0)

            emissions = torch.stack(logits).mean(0)[positions].unsqueeze(0)
            path = constrained_viterbi(emissions, torch.ones(emissions.shape[:2], dtype=torch.bool),
                                       mean("start_transitions"), mean("transitions"), mean("end_transitions"),
                                       first.model.allowed_start, first.model.allowed_trans,
                                       first.model.allowed_end)[0]
            best = dict(zip(positions, path.tolist()))
        else:
            best = dict(enumerate(torch.stack([lg.softmax(-1) for lg in logits]).mean(0).argmax(-1).tolist()))
        for p in window.owned:
            expected[window.example][window.word_ids[p]] = best[p]
    expected = [from_scheme([first.labels[i if i is not None else first.label2id["O"]] for i in row], first.scheme)
                for row in expected]
    assert tags == expected
