"""shared/core/args.py: the command line and --config files, whose every user mistake is one DataError line."""

from __future__ import annotations

import json

import pytest

from shared.core.args import DataArguments, ModelArguments, TrainingArguments, parse_args
from shared.core.errors import DataError


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


def test_config_equals_form_is_the_same_as_the_separate_form(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_name_or_path: some/model\nlora_r: 4\n")
    assert parse_args(ModelArguments, args=[f"--config={config}"]) == parse_args(ModelArguments, args=["--config", str(config)])
    with pytest.raises(DataError, match="--config needs a file path"):
        parse_args(ModelArguments, args=["--config="])
    with pytest.raises(DataError, match="give --config once"):
        parse_args(ModelArguments, args=["--config", str(config), f"--config={config}"])


@pytest.mark.parametrize("text, line, message", [
    ("model_name_or_path: m\nlora_r: four\n", 2, "lora_r: expected a whole number, got 'four'"),
    ("model_name_or_path: m\nlora_r: 2.5\n", 2, "lora_r: expected a whole number, got 2.5"),
    ("model_name_or_path: m\nuse_lora: maybe\n", 2, "use_lora: expected true or false, got 'maybe'"),
    ("model_name_or_path: m\nlora_dropout: [0.1]\n", 2, "lora_dropout: expected a single value, got a list [0.1]"),
    ("model_name_or_path: m\nclass_weighting: heavy\n", 2,
     "class_weighting: 'heavy' is not one of none, balanced, inverse_sqrt"),
    ("model_name_or_path: m\n\nlerning_rate: 1e-4\n", 3, "unknown argument 'lerning_rate' (did you mean learning_rate?)"),
    ("model_name_or_path: m\n  lora_r: 4\n", 2, "cannot parse config"),
    # null: None where the option's unset value is None, refused (never a quiet default) where it needs a value
    ("model_name_or_path: m\nseed: ~\n", 2,
     "seed: empty (null) value where a whole number is needed; remove the line to use the default"),
    ("model_name_or_path: m\nlearning_rate:\n", 2,
     "learning_rate: empty (null) value where a number is needed; remove the line to use the default"),
    ("model_name_or_path: m\nuse_lora: ~\n", 2, "use_lora: empty (null) value where true or false is needed"),
])
def test_a_config_value_of_the_wrong_type_names_the_file_line_and_key(tmp_path, text, line, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    with pytest.raises(DataError) as info:
        parse_args(ModelArguments, TrainingArguments, args=["--config", str(config)])
    assert str(info.value).startswith(f"{config}:{line}: ") and message in str(info.value), str(info.value)


def test_null_is_none_only_where_none_is_the_unset_value(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_name_or_path: m\ndropout: ~\nattn_implementation:\n")
    (model_args,) = parse_args(ModelArguments, args=["--config", str(config)])
    assert model_args.dropout is None and model_args.attn_implementation is None
    config.write_text("model_name_or_path: m\nreport_to: ~\n")  # None, but the recipe's default is "none"
    with pytest.raises(DataError, match=r"run\.yaml:2: report_to: empty \(null\) value where a value is needed"):
        parse_args(ModelArguments, TrainingArguments, defaults={"report_to": "none"}, args=["--config", str(config)])


def test_a_list_for_a_one_path_option_names_the_key(tmp_path):
    (tmp_path / "a.csv").write_text("text,label\n")
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\n\ntrain_file: [{tmp_path / 'a.csv'}, {tmp_path / 'a.csv'}]\n")
    with pytest.raises(DataError) as info:
        parse_args(DataArguments, TrainingArguments, args=["--config", str(config)])
    assert str(info.value).startswith(f"{config}:3: train_file: takes one path, got a list ["), str(info.value)


def test_a_yaml_list_serves_a_comma_separated_option(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_name_or_path: m\nlora_target_modules: [query, value]\n")
    (model_args,) = parse_args(ModelArguments, args=["--config", str(config)])
    assert model_args.lora_targets() == ["query", "value"]
    assert ModelArguments(model_name_or_path="m", lora_target_modules="query, value").lora_targets() == ["query", "value"]


def test_a_json_config_with_a_bom_and_a_bad_line(tmp_path):
    config = tmp_path / "run.json"
    config.write_text("\ufeff" + json.dumps({"model_name_or_path": "m", "lora_r": 4}), encoding="utf-8")
    assert parse_args(ModelArguments, args=["--config", str(config)])[0].lora_r == 4
    config.write_text('{"model_name_or_path": "m",\n "lora_r": }')
    with pytest.raises(DataError, match=r"run\.json:2: cannot parse config"):
        parse_args(ModelArguments, args=["--config", str(config)])


@pytest.mark.parametrize("argv, message", [
    (["--model_name_or_path", "m", "--lerning_rate", "1e-4"], "unknown option --lerning_rate (did you mean --learning_rate?)"),
    (["--model_name_or_path", "m", "--learning_rate=abc"], "argument --learning_rate: invalid float value: 'abc'"),
    (["--model_name_or_path", "m", "stray"], "unexpected argument 'stray' (options start with --)"),
    (["--learning_rate", "1e-4", "--output_dir", "o"], "the following arguments are required: --model_name_or_path"),
    (["--model_name_or_path", "m", "--class_weighting", "heavy"], "argument --class_weighting: invalid choice: 'heavy'"),
    # a combination TrainingArguments.__post_init__ refuses with a ValueError deep inside transformers
    (["--model_name_or_path", "m", "--load_best_model_at_end", "--eval_strategy", "epoch", "--save_strategy", "no"],
     "--load_best_model_at_end requires"),
])
def test_command_line_mistakes_are_one_line(argv, message):
    with pytest.raises(DataError) as info:
        parse_args(ModelArguments, TrainingArguments, args=argv)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_help_strings_with_a_percent_sign_format(capsys):
    """argparse %-formats help strings: "95% confidence" crashed --help before."""
    with pytest.raises(SystemExit) as info:
        parse_args(ModelArguments, DataArguments, TrainingArguments, args=["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "95% confidence" in out and "--overwrite_output_dir" in out and "--config FILE" in out


def test_recipe_defaults_sit_below_the_config_and_the_command_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_name_or_path: m\nlora_r: 4\n")
    defaults = {"lora_r": 2, "lora_alpha": 8}
    (model_args,) = parse_args(ModelArguments, defaults=defaults, args=["--config", str(config)])
    assert (model_args.lora_r, model_args.lora_alpha) == (4, 8)
    (model_args,) = parse_args(ModelArguments, defaults=defaults, args=["--config", str(config), "--lora_alpha", "1"])
    assert model_args.lora_alpha == 1
