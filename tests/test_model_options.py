"""--dropout and --attn_implementation: what they change in the config, and that every recipe trains with them."""

from __future__ import annotations

import pytest
import torch
import transformers

from shared.core.runner import load_recipe
from tests.helpers import recipe_case


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
