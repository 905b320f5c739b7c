"""--dropout and --attn_implementation: what they change in the config, and that every recipe trains with them."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import BertConfig, DistilBertConfig, ViTConfig

from conftest import load_recipe
from shared.args import ModelArguments, attention_implementation, set_dropout
from shared.errors import DataError
from test_multiprocess import recipe_case


@pytest.mark.parametrize("config, names", [
    (BertConfig(), {"hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"}),
    (DistilBertConfig(), {"dropout", "attention_dropout", "qa_dropout", "seq_classif_dropout"}),
    (ViTConfig(hidden_dropout_prob=0.2), {"hidden_dropout_prob", "attention_probs_dropout_prob"}),
])
def test_set_dropout_sets_every_dropout_probability(config, names):
    before = config.to_dict()
    assert set_dropout(config, None) == [] and config.to_dict() == before
    assert set(set_dropout(config, 0.0)) == names
    assert all(getattr(config, name) == 0.0 for name in names)
    unrelated = {k: v for k, v in config.to_dict().items() if "dropout" not in k}
    assert unrelated == {k: v for k, v in before.items() if "dropout" not in k}


def test_dropout_argument_is_a_probability():
    with pytest.raises(DataError, match="--dropout must be in"):
        ModelArguments(model_name_or_path="m", dropout=1.0)
    with pytest.raises(DataError, match="--dropout must be in"):
        ModelArguments(model_name_or_path="m", dropout=-0.1)


def test_attention_is_eager_for_cpu_training_unless_asked():
    args = ModelArguments(model_name_or_path="m")
    assert attention_implementation(args, torch.device("cpu")) == "eager"
    assert attention_implementation(args, torch.device("cuda", 0)) is None  # the model's default (SDPA)
    args.attn_implementation = "sdpa"
    assert attention_implementation(args, torch.device("cpu")) == "sdpa"


class Captured(Exception):
    """Raised by the spy instead of training: what the recipe built is all this test needs."""


@pytest.mark.parametrize("task, flags, dropout, attention", [
    ("text_classification", [], 0.1, "eager"),  # the model's own dropout
    ("text_classification", ["--dropout", "0.25", "--attn_implementation", "sdpa"], 0.25, "sdpa"),
    ("ner", [], 0.0, "eager"),  # the NER recipe's default
    ("ner", ["--dropout", "0.1"], 0.1, "eager"),
    ("image_classification", ["--dropout", "0.3"], 0.3, "eager"),
])
def test_recipes_train_with_the_requested_dropout_and_attention(task, flags, dropout, attention, tiny_bert_dir,
                                                                tmp_path_factory, tmp_path, monkeypatch):
    seen = {}

    def spy(trainer, *args, **kwargs):
        model = trainer.model
        seen["attention"] = model.config._attn_implementation
        seen["dropouts"] = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
        raise Captured

    monkeypatch.setattr(transformers.Trainer, "train", spy)
    train_args, _ = recipe_case(task, tiny_bert_dir, tmp_path_factory)
    with pytest.raises(Captured):
        load_recipe(task).main([*train_args, "--output_dir", str(tmp_path / "out"), "--do_train", *flags])
    assert seen["attention"] == attention
    assert seen["dropouts"] == {dropout}
