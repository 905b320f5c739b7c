"""Calibration (shared/evaluation/calibration.py): our ECE / MCE / Brier / NLL equal torchmetrics' and scikit-learn's on
fixed arrays, temperature scaling recovers a known temperature, and folding it into the head divides the logits by it
for the heads our users train (BERT, RoBERTa's out_proj, ViT, a LoRA model's trained copy of the head)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.evaluation.calibration import Calibration, calibration_metrics, fit_temperature, fold_into_head, head_layers
from shared.evaluation.calibration import plot_reliability, reliability_points, saved_calibration
from shared.evaluation.metrics import classifier_metrics, softmax


def fixed_single_label(classes: int, n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * 2.5
    gold = rng.integers(0, classes, n)
    logits[np.arange(n), gold] += 1.0  # better than chance, and overconfident
    return softmax(logits), gold


@pytest.mark.parametrize("classes", [2, 3, 7])
def test_single_label_metrics_equal_the_reference_implementations(classes):
    torchmetrics = pytest.importorskip("torchmetrics.functional.classification")
    from sklearn.metrics import brier_score_loss, log_loss

    probs, gold = fixed_single_label(classes)
    ours = calibration_metrics(gold, probs, multi_label=False)
    p, y = torch.tensor(probs), torch.tensor(gold)
    assert ours["ece"] == pytest.approx(torchmetrics.multiclass_calibration_error(
        p, y, num_classes=classes, n_bins=15, norm="l1").item(), abs=1e-6)
    assert ours["mce"] == pytest.approx(torchmetrics.multiclass_calibration_error(
        p, y, num_classes=classes, n_bins=15, norm="max").item(), abs=1e-6)
    assert ours["brier"] == pytest.approx(brier_score_loss(gold, probs, labels=list(range(classes))), abs=1e-9)
    assert ours["nll"] == pytest.approx(log_loss(gold, probs, labels=list(range(classes))), abs=1e-9)


def test_multi_label_metrics_equal_the_reference_implementations():
    torchmetrics = pytest.importorskip("torchmetrics.functional.classification")
    from sklearn.metrics import brier_score_loss, log_loss

    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, (150, 4))
    probs = np.clip(0.6 * gold + rng.uniform(-0.3, 0.5, gold.shape), 0.0, 1.0)  # includes exact 0s and 1s
    ours = calibration_metrics(gold, probs, multi_label=True)
    p, y = torch.tensor(probs.ravel()), torch.tensor(gold.ravel())
    assert ours["ece"] == pytest.approx(torchmetrics.binary_calibration_error(p, y, n_bins=15).item(), abs=1e-6)
    assert ours["mce"] == pytest.approx(torchmetrics.binary_calibration_error(p, y, n_bins=15, norm="max").item(),
                                        abs=1e-6)
    assert ours["brier"] == pytest.approx(brier_score_loss(gold.ravel(), probs.ravel()), abs=1e-9)
    assert ours["nll"] == pytest.approx(log_loss(gold.ravel(), np.clip(probs.ravel(), 1e-12, 1 - 1e-12)), rel=1e-6)


def test_a_perfectly_calibrated_model_has_a_small_ece_and_an_overconfident_one_a_large_one():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(20000, 3)) * 2
    probs = softmax(logits)
    gold = np.array([rng.choice(3, p=row) for row in probs])  # labels drawn from the model's own probabilities
    assert calibration_metrics(gold, probs, False)["ece"] < 0.02
    assert calibration_metrics(gold, softmax(logits * 3), False)["ece"] > 0.1


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_scaling_recovers_the_temperature_the_labels_were_drawn_at(true_t):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6000, 4)) * 3
    gold = np.array([rng.choice(4, p=row) for row in softmax(logits / true_t)])
    fitted = fit_temperature(logits, gold, multi_label=False)
    assert fitted.temperatures.shape == (1,)
    assert fitted.temperatures[0] == pytest.approx(true_t, rel=0.1)
    before = calibration_metrics(gold, softmax(logits), False)
    after = calibration_metrics(gold, softmax(fitted.apply(logits)), False)
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"] / 2
    assert (softmax(fitted.apply(logits)).argmax(1) == logits.argmax(1)).all()  # no decision changes


def test_multi_label_gets_one_temperature_per_label_and_a_constant_label_keeps_one():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(5000, 3)) * 3
    true_t = np.array([0.5, 3.0, 1.0])
    gold = (rng.uniform(size=logits.shape) < 1 / (1 + np.exp(-logits / true_t))).astype(int)
    gold[:, 2] = 0  # never present in validation: nothing to fit
    fitted = fit_temperature(logits, gold, multi_label=True)
    assert fitted.temperatures[:2] == pytest.approx(true_t[:2], rel=0.1)
    assert fitted.temperatures[2] == 1.0


def test_a_saved_calibration_reads_back():
    calibration = Calibration(np.array([1.7, 0.8]), fitted_on=40)
    config = type("Config", (), {"calibration": calibration.saved()})()
    again = saved_calibration(config)
    assert again.temperatures.tolist() == [1.7, 0.8] and again.fitted_on == 40
    assert saved_calibration(type("Config", (), {"calibration": None})()) is None
    logits = np.array([[1.0, -2.0]])
    np.testing.assert_allclose(again.undo(again.apply(logits)), logits)


def tiny_config(kind: str, num_labels: int):
    from transformers import BertConfig, RobertaConfig, ViTConfig

    small = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                 num_labels=num_labels)
    if kind == "bert":
        return BertConfig(vocab_size=50, **small)
    if kind == "roberta":
        return RobertaConfig(vocab_size=50, pad_token_id=1, **small)
    return ViTConfig(image_size=16, patch_size=8, num_channels=3, **small)


def model_and_inputs(kind: str, num_labels: int, lora: bool = False):
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = tiny_config(kind, num_labels)
    if kind == "vit":
        model = AutoModelForImageClassification.from_config(config)
        inputs = {"pixel_values": torch.randn(5, 3, 16, 16)}
    else:
        model = AutoModelForSequenceClassification.from_config(config)
        inputs = {"input_ids": torch.randint(3, 50, (5, 7))}
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["query", "value"], modules_to_save=["classifier"]))
    return model.eval(), inputs


@pytest.mark.parametrize("kind, lora", [("bert", False), ("roberta", False), ("vit", False), ("bert", True)])
@pytest.mark.parametrize("temperatures", [[2.0], [0.5, 4.0, 1.5]])
def test_folding_into_the_head_divides_the_logits_by_the_temperature(kind, lora, temperatures):
    model, inputs = model_and_inputs(kind, 3, lora)
    with torch.no_grad():
        before = model(**inputs).logits
    fold_into_head(model, Calibration(np.array(temperatures), 10), num_labels=3)
    with torch.no_grad():
        after = model(**inputs).logits
    torch.testing.assert_close(after, before / torch.tensor(temperatures), rtol=1e-5, atol=1e-6)


def test_only_the_head_is_rescaled_even_when_the_hidden_size_equals_the_label_count():
    model, _ = model_and_inputs("bert", 16)  # hidden size 16: every attention projection has 16 outputs too
    names = [name for name, _ in head_layers(model, 16)]
    assert names == ["classifier"]


def test_classifier_metrics_report_calibration_before_and_after_with_intervals():
    probs, gold = fixed_single_label(3, n=120)
    sharper = softmax(np.log(probs) * 2)
    metrics = classifier_metrics(gold, probs, False, resamples=50, seed=0, uncalibrated=sharper)
    for name in ("ece", "mce", "brier", "nll"):
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"]
        assert f"{name}_uncalibrated_ci_low" in metrics
    assert metrics["nll_uncalibrated"] > metrics["nll"]
    assert metrics["accuracy"] == classifier_metrics(gold, sharper, False)["accuracy"]


def test_the_reliability_diagram_uses_scikit_learns_bins(tmp_path):
    from sklearn.calibration import calibration_curve

    probs, gold = fixed_single_label(3)
    x, y = reliability_points(gold, probs, False)
    observed, predicted = calibration_curve(probs.argmax(1) == gold, probs.max(1), n_bins=15)
    np.testing.assert_allclose(x, predicted)
    np.testing.assert_allclose(y, observed)
    path = tmp_path / "test_reliability.png"
    plot_reliability(gold, probs, False, str(path), "Reliability (test)", uncalibrated=softmax(np.log(probs) * 2))
    assert path.stat().st_size > 1000


def test_a_temperature_that_does_not_help_held_out_examples_is_not_applied_and_the_card_says_so(caplog):
    """12 validation examples: the NLL-minimising temperature (0.777) takes the validation ECE from 0.133 to 0.377,
    and fitted on 4 folds it raises the 5th fold's NLL (0.723 -> 0.744). The head is left as it was, the recipes see
    no calibration (false), and the log and card say what happened."""
    from types import SimpleNamespace

    from shared.evaluation.calibration import calibrate
    from shared.evaluation.reports import training_card

    rng = np.random.default_rng(15)
    gold = rng.integers(0, 4, 12)
    logits = np.eye(4)[gold] * 2.0 + rng.normal(0, 1.5, (12, 4))
    model, _ = model_and_inputs("bert", 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level("WARNING", logger="shared.evaluation.calibration"):
        calibration = calibrate(SimpleNamespace(model=model), logits, gold, False, 4)
    assert calibration is not None and not calibration  # recipes: `if calibration` -> raw head, nothing saved
    assert all(v.equal(before[k]) for k, v in model.state_dict().items())  # the head is untouched
    expected = ("none (raw probabilities): temperature scaling (T = 0.777, fitted on 12 validation examples) did not "
                "lower the held-out NLL 0.723 -> 0.744 (5-fold cross-validation), so it was not applied")
    assert calibration.describe() == expected
    assert any(expected in record.getMessage() for record in caplog.records)
    args = SimpleNamespace(num_train_epochs=1, learning_rate=1e-3, per_device_train_batch_size=8, world_size=1,
                           bf16=False, seed=0)
    card = training_card(args, SimpleNamespace(use_lora=False), 0, 1, 1, SimpleNamespace(card=lambda best: {}), None,
                         calibration)
    assert card["calibration"] == expected

    # a split on which the temperature helps: applied, as before
    probs, gold = fixed_single_label(3, n=300)
    sharp = np.log(probs) * 2
    model, _ = model_and_inputs("bert", 3)
    applied = calibrate(SimpleNamespace(model=model), sharp, gold, False, 3)
    assert applied and applied.temperatures[0] > 1
    assert "(5-fold cross-validation)), folded into the classifier head" in applied.describe()
