"""shared/training/models.py: safe loading with one-line errors, the one-line load report, dropout, attention,
lengths."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import BertConfig, DistilBertConfig, ViTConfig

from shared.core.args import ModelArguments
from shared.core.errors import DataError
from shared.training.models import attention_implementation, classification_config, load_for_training, load_pretrained
from shared.training.models import max_sequence_length, set_dropout


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


def test_what_fine_tuning_adds_on_purpose_is_one_info_line(tiny_bert_dir, tmp_path, caplog, capsys):
    from transformers import AutoModelForTokenClassification, BertModel

    # a checkpoint with a pooler, as pretrained BERTs have: token classification does not use it
    BertModel.from_pretrained(tiny_bert_dir, add_pooling_layer=True).save_pretrained(tmp_path / "pooled")
    model_args = ModelArguments(model_name_or_path=str(tmp_path / "pooled"))
    config = classification_config(model_args, ["O", "B-x", "I-x"])
    with caplog.at_level(logging.INFO, logger="shared.training.models"):
        load_for_training(AutoModelForTokenClassification, model_args, config, "cpu")
    assert "new classifier head for 3 labels; pooler weights of the checkpoint unused" in caplog.text
    assert "WARNING" not in caplog.text
    assert "LOAD REPORT" not in capsys.readouterr().err  # transformers' table is not printed


def test_any_other_missing_weight_stays_loud(tiny_bert_dir, tmp_path, caplog):
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSequenceClassification

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_bert_dir.iterdir():
        if f.is_file():
            (broken / f.name).write_bytes(f.read_bytes())
    weights = load_file(str(broken / "model.safetensors"))
    del weights["encoder.layer.0.output.dense.weight"]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    model_args = ModelArguments(model_name_or_path=str(broken))
    with caplog.at_level(logging.INFO, logger="shared.training.models"):
        load_for_training(AutoModelForSequenceClassification, model_args, classification_config(model_args, ["a", "b"]),
                          "cpu")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "not in the checkpoint (initialised at random)" in warnings[0]
    assert "encoder.layer.0.output.dense.weight" in warnings[0]


class Tokenizer:
    def __init__(self, model_max_length):
        self.model_max_length = model_max_length


def test_max_seq_length_is_capped_by_the_tokenizer_and_the_position_embeddings(caplog):
    bert = BertConfig(max_position_embeddings=64)
    assert max_sequence_length(128, Tokenizer(512), bert) == 64  # an older folder: the config is the limit
    assert max_sequence_length(128, Tokenizer(int(1e30)), bert) == 64  # unset model_max_length is a huge number
    assert max_sequence_length(128, Tokenizer(32), bert) == 32
    assert max_sequence_length(48, Tokenizer(512), bert) == 48
    from transformers import RobertaConfig

    assert max_sequence_length(1024, Tokenizer(int(1e30)), RobertaConfig(max_position_embeddings=514)) == 512
    with caplog.at_level(logging.WARNING, logger="shared.training.models"):
        max_sequence_length(128, Tokenizer(int(1e30)), bert)
    assert "--max_seq_length 128 is longer than the model reads (max_position_embeddings 64): using 64" in caplog.text
