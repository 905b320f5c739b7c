"""shared/training/optim.py: layer freezing (counts and fractions) and layer-wise learning-rate decay."""

from __future__ import annotations

import pytest
import torch

from shared.core.errors import DataError
from shared.training.optim import freeze_encoder_layers, layerwise_lr_groups, num_encoder_layers


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

    from shared.training.optim import optimizer_cls_and_kwargs

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
    from shared.core.args import ModelArguments
    from shared.training.optim import layers_to_freeze

    assert [layers_to_freeze(tiny_classifier, f) for f in (0, 1 / 3, 0.5, 0.99, 1, 2)] == [0, 1, 1, 2, 1, 2]
    assert freeze_encoder_layers(tiny_classifier, 0.3) == 0  # 0.9 of a layer: nothing frozen
    frozen = freeze_encoder_layers(tiny_classifier, 2 / 3)
    assert frozen == sum(p.numel() for p in tiny_classifier.parameters() if not p.requires_grad) > 0
    assert not tiny_classifier.bert.encoder.layer[1].output.dense.weight.requires_grad
    assert tiny_classifier.bert.encoder.layer[2].output.dense.weight.requires_grad
    with pytest.raises(DataError, match="whole number"):
        ModelArguments(model_name_or_path="m", freeze_layers=1.5)


def test_freeze_input_embeddings(tiny_classifier):
    from shared.training.optim import freeze_input_embeddings

    frozen = freeze_input_embeddings(tiny_classifier)
    assert frozen == tiny_classifier.bert.embeddings.word_embeddings.weight.numel()
    assert not tiny_classifier.bert.embeddings.word_embeddings.weight.requires_grad
    assert tiny_classifier.bert.embeddings.position_embeddings.weight.requires_grad
