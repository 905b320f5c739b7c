"""Unit tests for shared/ against hand-computed or scikit-learn values."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm
from sklearn.utils.class_weight import compute_class_weight

from shared.args import DataArguments, ModelArguments, load_pretrained, parse_args
from shared.errors import DataError
from shared.formats.tables import read_table, require_columns
from shared.imbalance import (
    binary_focal_loss,
    class_weights,
    focal_loss,
    make_loss_func,
    oversample,
    positive_weights,
)
from shared.metrics import (
    bootstrap_ci,
    classification_metrics,
    multilabel_metrics,
    softmax,
    tune_thresholds,
)
from shared.optim import freeze_encoder_layers, layerwise_lr_groups, num_encoder_layers
from shared.reporting import atomic_write_json, format_metric, save_results

# ---------------------------------------------------------------- class imbalance


def test_balanced_weights_match_scikit_learn():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(class_weights(labels, 3, "balanced"), expected)
    np.testing.assert_allclose(expected, [10 / 18, 10 / 9, 10 / 3])


def test_inverse_sqrt_weights_hand_computed_and_normalised():
    labels = np.array([0] * 4 + [1] * 1 + [-100] * 5)  # -100 (ignored sub-tokens) must not count
    w = class_weights(labels, 2, "inverse_sqrt")
    raw = np.array([1 / 2, 1.0])  # 1/sqrt(4), 1/sqrt(1)
    np.testing.assert_allclose(w, raw * 5 / (raw @ [4, 1]))
    assert (w * [4, 1]).sum() == pytest.approx(5)  # average weight over examples is 1
    assert class_weights(labels, 2, "none") is None


def test_class_weights_reject_missing_class_and_unknown_strategy():
    with pytest.raises(DataError, match=r"class id\(s\) \[2\]"):
        class_weights([0, 1, 1], 3, "balanced")
    with pytest.raises(DataError, match="unknown class weighting"):
        class_weights([0, 1], 2, "sqrt")


def test_positive_weights_for_multilabel():
    hot = np.array([[1, 0], [0, 0], [0, 1], [0, 1]])
    np.testing.assert_allclose(positive_weights(hot, "balanced"), [3.0, 1.0])
    np.testing.assert_allclose(positive_weights(hot, "inverse_sqrt"), [np.sqrt(3), 1.0])


def test_focal_loss_gamma_zero_is_weighted_cross_entropy():
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, -100])
    weight = torch.tensor([0.5, 1.0, 2.0])
    ours = focal_loss(logits, targets, gamma=0.0, weight=weight, reduction="sum")
    expected = F.cross_entropy(logits, targets, weight=weight, reduction="sum", ignore_index=-100)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_loss_hand_computed():
    logits = torch.log(torch.tensor([[0.8, 0.2], [0.4, 0.6]]))  # softmax gives these probabilities back
    targets = torch.tensor([0, 0])
    expected = -((0.2**2) * np.log(0.8) + (0.6**2) * np.log(0.4)) / 2
    assert focal_loss(logits, targets, gamma=2.0).item() == pytest.approx(expected, rel=1e-5)


def test_binary_focal_gamma_zero_is_bce_with_pos_weight():
    torch.manual_seed(1)
    logits, targets = torch.randn(4, 3), torch.randint(0, 2, (4, 3)).float()
    pos_weight = torch.tensor([1.0, 2.0, 3.0])
    expected = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
    assert binary_focal_loss(logits, targets, 0.0, pos_weight).item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_func_divides_by_num_items_for_gradient_accumulation():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    loss_func = make_loss_func(None, 0.0)
    plain = F.cross_entropy(logits, labels)
    assert loss_func({"logits": logits}, labels).item() == pytest.approx(plain.item(), rel=1e-6)
    # over two accumulation steps of 4 items each, each micro-batch contributes sum/8
    assert loss_func({"logits": logits}, labels, num_items_in_batch=8).item() == pytest.approx(plain.item() / 2, rel=1e-6)


def test_oversample_balances_classes_and_keeps_every_original_row():
    from datasets import Dataset

    labels = [0] * 8 + [1] * 2 + [2] * 1
    ds = Dataset.from_dict({"labels": labels, "row": list(range(len(labels)))})
    out = oversample(ds, labels, seed=0)
    assert np.bincount(out["labels"]).tolist() == [8, 8, 8]
    assert set(range(len(labels))) <= set(out["row"])
    with pytest.raises(DataError, match="single-label"):
        oversample(ds, np.zeros((11, 2)), seed=0)


# ---------------------------------------------------------------- metrics


def test_classification_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    probs = softmax(rng.normal(size=(50, 3)) + 2 * np.eye(3)[y])
    pred = probs.argmax(1)
    m = classification_metrics(y, probs)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["weighted_recall"] == pytest.approx(skm.recall_score(y, pred, average="weighted"))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def test_binary_metrics_sensitivity_specificity_and_threshold():
    y = np.array([0, 0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.4, 0.6, 0.3, 0.7, 0.9])
    probs = np.stack([1 - p1, p1], 1)
    m = classification_metrics(y, probs)  # threshold 0.5: TN=2 FP=1 FN=1 TP=2
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(2 / 3)
    m = classification_metrics(y, probs, threshold=0.25)  # everything but 0.1 is positive
    assert m["sensitivity"] == 1.0 and m["specificity"] == pytest.approx(1 / 3)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p1))


def test_multilabel_metrics_match_scikit_learn():
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    probs = np.array([[0.9, 0.2, 0.4], [0.1, 0.8, 0.3], [0.6, 0.4, 0.2], [0.3, 0.1, 0.7]])
    thresholds = np.array([0.5, 0.5, 0.35])
    pred = (probs >= thresholds).astype(int)
    m = multilabel_metrics(y, probs, thresholds)
    assert m["micro_f1"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["subset_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))


def test_tune_thresholds_maximises_f1():
    y = np.array([[0], [0], [1], [1], [1]])
    probs = np.array([[0.1], [0.35], [0.3], [0.4], [0.8]])
    t = tune_thresholds(y, probs)
    # 0.3 catches all three positives with one false positive: F1 = 6/7, the best achievable
    assert t[0] == pytest.approx(0.3)
    assert skm.f1_score(y[:, 0], probs[:, 0] >= t[0]) == pytest.approx(6 / 7)
    assert tune_thresholds(np.zeros((3, 1)), np.full((3, 1), 0.9))[0] == 0.5  # no positives: keep default


def test_bootstrap_ci_brackets_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(0)

    def interval(n):
        correct = rng.random(n) < 0.8
        return bootstrap_ci(lambda idx: {"acc": correct[idx].mean()}, n, resamples=500, seed=1)["acc"], correct.mean()

    (low_small, high_small), acc_small = interval(50)
    (low_big, high_big), acc_big = interval(2000)
    assert low_small <= acc_small <= high_small and low_big <= acc_big <= high_big
    assert (high_big - low_big) < (high_small - low_small) / 3
    # normal approximation for a proportion: half-width ~ 1.96 * sqrt(p(1-p)/n)
    assert (high_big - low_big) / 2 == pytest.approx(1.96 * np.sqrt(0.8 * 0.2 / 2000), rel=0.25)


def test_bootstrap_resamples_whole_groups():
    groups = np.repeat(np.arange(5), 3)
    seen = []

    def record(idx):
        seen.append(idx)
        return {"n": float(len(idx))}

    bootstrap_ci(record, len(groups), resamples=20, groups=groups, seed=0)
    for idx in seen:
        counts = np.bincount(groups[idx], minlength=5)
        assert set(counts.tolist()) <= {0, 3, 6, 9, 12, 15}  # each group drawn as a block of 3 rows


def test_bootstrap_skips_undefined_resamples():
    y = np.array([0] * 9 + [1])
    intervals = bootstrap_ci(lambda idx: {"pos": float("nan") if y[idx].sum() == 0 else y[idx].mean()}, 10, 200, seed=0)
    low, high = intervals["pos"]
    assert 0 < low <= high


# ---------------------------------------------------------------- layer freezing and layer-wise LR


@pytest.fixture
def tiny_classifier():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
    return BertForSequenceClassification(config)


def test_layerwise_lr_decay_groups(tiny_classifier):
    assert num_encoder_layers(tiny_classifier) == 3
    groups = layerwise_lr_groups(tiny_classifier, 1e-3, 0.5, 0.01)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(tiny_classifier.named_parameters())
    lr = lambda name: by_param[id(named[name])]["lr"]  # noqa: E731
    assert lr("classifier.weight") == pytest.approx(1e-3)
    assert lr("bert.encoder.layer.2.output.dense.weight") == pytest.approx(5e-4)
    assert lr("bert.encoder.layer.0.output.dense.weight") == pytest.approx(1.25e-4)
    assert lr("bert.embeddings.word_embeddings.weight") == pytest.approx(6.25e-5)
    assert by_param[id(named["bert.encoder.layer.0.output.dense.bias"])]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(named)


@pytest.mark.parametrize("optim, fused", [("adamw_torch_fused", True), ("adamw_torch", None)])
def test_layerwise_lr_decay_keeps_the_fused_optimizer(tiny_classifier, tmp_path, optim, fused):
    from transformers import TrainingArguments

    from shared.optim import optimizer_cls_and_kwargs

    args = TrainingArguments(output_dir=str(tmp_path), optim=optim, use_cpu=True, report_to="none")
    cls, kwargs = optimizer_cls_and_kwargs(tiny_classifier, args, 0.8)
    assert cls is torch.optim.AdamW and kwargs.get("fused") is fused
    cls(**kwargs).step()  # the fused CPU kernel accepts these parameter groups


def test_freeze_encoder_layers(tiny_classifier):
    frozen = freeze_encoder_layers(tiny_classifier, 2)
    state = {n: p.requires_grad for n, p in tiny_classifier.named_parameters()}
    assert not state["bert.embeddings.word_embeddings.weight"]
    assert not state["bert.encoder.layer.1.attention.self.query.weight"]
    assert state["bert.encoder.layer.2.attention.self.query.weight"] and state["classifier.weight"]
    assert frozen == sum(p.numel() for p in tiny_classifier.parameters() if not p.requires_grad)
    with pytest.raises(ValueError, match="exceeds"):
        freeze_encoder_layers(tiny_classifier, 4)


def test_freeze_layers_fraction_is_a_share_of_the_layers_rounded_down(tiny_classifier):
    from shared.args import ModelArguments
    from shared.optim import layers_to_freeze

    assert [layers_to_freeze(tiny_classifier, f) for f in (0, 1 / 3, 0.5, 0.99, 1, 2)] == [0, 1, 1, 2, 1, 2]
    assert freeze_encoder_layers(tiny_classifier, 0.3) == 0  # 0.9 of a layer: nothing frozen
    frozen = freeze_encoder_layers(tiny_classifier, 2 / 3)
    assert frozen == sum(p.numel() for p in tiny_classifier.parameters() if not p.requires_grad) > 0
    assert not tiny_classifier.bert.encoder.layer[1].output.dense.weight.requires_grad
    assert tiny_classifier.bert.encoder.layer[2].output.dense.weight.requires_grad
    with pytest.raises(DataError, match="whole number"):
        ModelArguments(model_name_or_path="m", freeze_layers=1.5)


# ---------------------------------------------------------------- arguments, config, model loading


def test_config_file_with_command_line_override(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_name_or_path: some/model\ntrain_file: null\nmax_train_samples: 10\nlora_r: 4\n")
    model_args, data_args = parse_args(ModelArguments, DataArguments, args=["--config", str(config), "--lora_r", "16"])
    assert model_args.model_name_or_path == "some/model"  # the required flag came from the file
    assert data_args.max_train_samples == 10
    assert model_args.lora_r == 16  # the command line wins


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_name_or_path": "m", "lora_rank": 4}))
    with pytest.raises(DataError, match="unknown argument.*lora_rank"):
        parse_args(ModelArguments, args=["--config", str(bad)])
    with pytest.raises(DataError, match="config file does not exist"):
        parse_args(ModelArguments, args=["--config", str(tmp_path / "nope.yaml")])


def test_load_pretrained_errors(tmp_path):
    from transformers import AutoModel

    with pytest.raises(DataError, match="model folder does not exist"):
        load_pretrained(AutoModel, ModelArguments(model_name_or_path=str(tmp_path / "missing")))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(DataError, match="no safetensors weights.*--allow_pickle_weights"):
        load_pretrained(AutoModel, ModelArguments(model_name_or_path=str(pickled)))


def test_unreachable_hub_id_says_how_to_pass_a_local_folder():
    from transformers import AutoConfig

    with pytest.raises(DataError, match="pass that folder: --model_name_or_path") as info:
        load_pretrained(AutoConfig, ModelArguments(model_name_or_path="no-such-org/no-such-model-xyz"))
    assert "\n" not in str(info.value)


def test_trust_remote_code_is_off_by_default():
    assert ModelArguments(model_name_or_path="m").trust_remote_code is False


# ---------------------------------------------------------------- table readers


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_bytes("text,label\nfine,a\n".encode() + "caf\xe9,b\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"notes\.csv:3: not valid UTF-8"):
        read_table(str(path))


def test_table_readers_and_column_check(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "labels": ["x"]}\n{"text": "b", "labels": []}\n')
    ds = read_table(str(jsonl))
    assert ds["labels"][0] == ["x"] and len(ds) == 2
    with pytest.raises(DataError, match=r"column 'label' not found \(columns: text, labels\)"):
        require_columns(ds, ["label"], str(jsonl))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(DataError, match=r"broken\.jsonl:2: invalid JSON"):
        read_table(str(broken))
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(DataError, match="no rows"):
        read_table(str(empty))
    parquet = tmp_path / "d.parquet"
    ds.to_parquet(str(parquet))
    assert read_table(str(parquet))["text"][:] == ["a", "b"]
    saved = tmp_path / "saved"
    ds.save_to_disk(str(saved))
    assert len(read_table(str(saved))) == 2


# ---------------------------------------------------------------- reporting


def test_results_are_merged_and_written_atomically(tmp_path):
    save_results(str(tmp_path), "eval", {"eval_accuracy": 0.5})
    save_results(str(tmp_path), "test", {"test_accuracy": 0.75, "test_auroc": float("nan")})
    combined = json.loads((tmp_path / "all_results.json").read_text())
    assert combined == {"eval_accuracy": 0.5, "test_accuracy": 0.75, "test_auroc": None}
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_format_metric_with_interval():
    assert format_metric({"x": 0.9, "x_ci_low": 0.85, "x_ci_high": 0.95}, "x") == "0.900 (0.850–0.950)"
    assert format_metric({}, "x") == "n/a"


def test_class_weights_allow_absent_classes_for_tag_schemes():
    labels = np.array([0, 0, 0, 1])  # class 2 (say I-X) never occurs
    w = class_weights(labels, 3, "balanced", allow_absent=True)
    assert w[2] == 1.0
    np.testing.assert_allclose(w[:2], compute_class_weight("balanced", classes=np.arange(2), y=labels))


def test_freeze_input_embeddings(tiny_classifier):
    from shared.optim import freeze_input_embeddings

    frozen = freeze_input_embeddings(tiny_classifier)
    assert frozen == tiny_classifier.bert.embeddings.word_embeddings.weight.numel()
    assert not tiny_classifier.bert.embeddings.word_embeddings.weight.requires_grad
    assert tiny_classifier.bert.embeddings.position_embeddings.weight.requires_grad
