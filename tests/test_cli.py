"""The command line of every recipe, tried as a new user would: --help, a misspelt flag, --config=path, a config value
of the wrong type, a YAML list, a --max_seq_length longer than the model, an unreachable --dataset_name, a user error
deep inside, options a recipe cannot honour. Each mistake ends with exit status 2 and ONE line, no traceback, and no
--output_dir; the cases marked CLI start the script as a user does (a subprocess), the others call the same guarded
``main`` in-process (shared.core.runner.run_recipe), which is what the script runs after Python has started.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from shared.core.runner import run_recipe
from tests.helpers import IMAGE_SAMPLE, NER_SAMPLE, ROOT, TEXT_SAMPLE, assert_one_line, run_cli, run_in_process

TASKS = ("text_classification", "ner", "image_classification", "assertion_status", "relation_extraction")
TINY = ["--num_train_epochs", "1", "--bootstrap_resamples", "10", "--per_device_train_batch_size", "16"]


def text_data(max_train="24"):
    return ["--train_file", str(TEXT_SAMPLE / "train.csv"), "--test_file", str(TEXT_SAMPLE / "test.csv"),
            "--max_train_samples", max_train, "--max_predict_samples", "16", "--do_train", "--do_predict"]


def ner_data():
    return ["--train_file", str(NER_SAMPLE / "train"), "--test_file", str(NER_SAMPLE / "test"),
            "--max_train_samples", "30", "--max_predict_samples", "10", "--do_train", "--do_predict"]


def image_data():
    return ["--train_dir", str(IMAGE_SAMPLE / "folders" / "train"), "--test_dir", str(IMAGE_SAMPLE / "folders" / "test"),
            "--do_train", "--do_predict"]


# ------------------------------------------------------------------------------------------------ --help
@pytest.mark.parametrize("script", [*TASKS, "cross_validate"])
def test_help_exits_0_and_reads(script):
    if script == "cross_validate":
        proc = run_cli(ROOT / "recipes" / "cross_validate.py", ["--help"], timeout=120)
    else:
        proc = run_cli(script, ["--help"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and proc.stdout.startswith("usage:")
    if script == "cross_validate":
        assert "--recipe" in proc.stdout and "--folds" in proc.stdout
    else:
        for flag in ("--config FILE", "--model_name_or_path", "--overwrite_output_dir", "--learning_rate", "95%"):
            assert flag in proc.stdout, flag


# Every command a user starts: the recipes' train.py / predict.py and the tools beside them.
ENTRY_SCRIPTS = sorted([*ROOT.glob("recipes/*.py"), *ROOT.glob("recipes/*/train.py"),
                        *ROOT.glob("recipes/*/predict.py")])


@pytest.mark.parametrize("missing", ["shared", "torch"])
@pytest.mark.parametrize("script", ENTRY_SCRIPTS, ids=lambda path: str(path.relative_to(ROOT / "recipes")))
def test_help_before_the_install_is_one_line_naming_the_install(script, missing, tmp_path):
    """A new user's first command may come before the install. Python without its site-packages (-S) is a machine
    without the project; with the checkout on PYTHONPATH, one with the project's code and not its dependencies."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if missing == "torch":
        env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-S", str(script), "--help"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    assert_one_line(proc.returncode, proc.stderr, re.escape(f"this project is not installed (No module named "
                                                            f"'{missing}'): install it as its README.md says, torch "
                                                            "first, then `pip install -e .`"), tmp_path / "out")
    assert proc.stdout == ""


# ------------------------------------------------------------------------------------------------ flags
@pytest.mark.parametrize("task", TASKS)
def test_a_misspelt_flag_names_the_closest_valid_one(task, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(task, ["--model_name_or_path", "m", "--output_dir", out, "--do_train", "--lerning_rate", "1e-4"],
                   timeout=120)
    assert_one_line(proc.returncode, proc.stderr, re.escape("unknown option --lerning_rate (did you mean "
                                                            "--learning_rate?)"), out)


def test_cross_validate_mistakes_are_one_line(tmp_path):
    out = tmp_path / "cv"
    proc = run_cli(ROOT / "recipes" / "cross_validate.py",
                   ["--recipe", "text_classification", "--fols", "3", "--", "--output_dir", out], timeout=120)
    assert_one_line(proc.returncode, proc.stderr, "unrecognized arguments: --fols 3", out)
    proc = run_cli(ROOT / "recipes" / "cross_validate.py",
                   ["--recipe", "no_such_recipe", "--", "--output_dir", out], timeout=120)
    assert_one_line(proc.returncode, proc.stderr, r"--recipe no_such_recipe: no such recipe .*", out)


def test_config_equals_path_works_like_config_space_path(tiny_bert_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"model_name_or_path: {tiny_bert_dir}\ntrain_file: {TEXT_SAMPLE / 'train.csv'}\n"
                      f"test_file: {TEXT_SAMPLE / 'test.csv'}\nmax_train_samples: 24\nmax_predict_samples: 16\n"
                      "do_train: true\ndo_predict: true\nnum_train_epochs: 1\nbootstrap_resamples: 10\nseed: 5\n")
    proc = run_cli("text_classification", [f"--config={config}", "--output_dir", tmp_path / "a"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    other = run_recipe("text_classification", ["--config", str(config), "--output_dir", str(tmp_path / "b")])
    first = json.loads((tmp_path / "a" / "all_results.json").read_text())
    assert first["test_accuracy"] == pytest.approx(other["test_accuracy"])
    assert (tmp_path / "a" / "test_predictions.csv").read_text() == (tmp_path / "b" / "test_predictions.csv").read_text()


def test_a_config_value_of_the_wrong_type_names_the_file_and_key(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_name_or_path: m\ndo_train: true\nlearning_rate: fast\n")
    out = tmp_path / "out"
    proc = run_cli("text_classification", ["--config", config, "--output_dir", out], timeout=120)
    assert_one_line(proc.returncode, proc.stderr,
                    re.escape(f"{config}:3: learning_rate: expected a number, got 'fast'"), out)


def test_a_yaml_list_for_lora_target_modules(tiny_bert_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("use_lora: true\nlora_target_modules: [query, value]\n")
    run_recipe("text_classification", ["--config", str(config), "--model_name_or_path", str(tiny_bert_dir),
                                       "--output_dir", str(tmp_path / "out"), *text_data(), *TINY])
    adapter = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["query", "value"]


# ------------------------------------------------------------------------------------------------ lengths
@pytest.fixture(scope="module")
def short_model(tmp_path_factory):
    """A BERT that reads 64 positions and whose tokenizer, like older clinical BERT folders, sets no
    model_max_length."""
    from shared.training.tiny_models import build_tiny_bert
    from tests.helpers import TOY_CORPUS, ner_sample_corpus

    folder = build_tiny_bert(tmp_path_factory.mktemp("short_bert"), TOY_CORPUS + ner_sample_corpus(),
                             max_position_embeddings=64)
    config = folder / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    settings.pop("model_max_length", None)
    config.write_text(json.dumps(settings))
    return folder


def test_max_seq_length_longer_than_the_model_is_capped_with_a_warning(short_model, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="shared.training.models"):
        results = run_recipe("text_classification", ["--model_name_or_path", str(short_model), "--output_dir",
                                                     str(tmp_path / "text"), "--max_seq_length", "512", *text_data(),
                                                     *TINY])
    assert "--max_seq_length 512 is longer than the model reads (max_position_embeddings 64): using 64" in caplog.text
    assert "max_seq_length: `64`" in (tmp_path / "text" / "README.md").read_text() and "test_accuracy" in results
    run_recipe("ner", ["--model_name_or_path", str(short_model), "--output_dir", str(tmp_path / "ner"),
                       "--max_seq_length", "512", *ner_data(), *TINY])
    card = (tmp_path / "ner" / "README.md").read_text()
    assert "max_seq_length (window): `64`" in card and "stride: `16`" in card


def test_ner_default_stride_adapts_to_a_short_window(tiny_ner_model, tmp_path):
    results = run_recipe("ner", ["--model_name_or_path", tiny_ner_model, "--output_dir", str(tmp_path / "out"),
                                 "--max_seq_length", "16", *ner_data(), *TINY])
    assert "stride: `4`" in (tmp_path / "out" / "README.md").read_text()
    assert results["train_windows"] > results["train_samples"]  # long sentences were cut, none truncated


# ------------------------------------------------------------------------------------------------ deep inside
@pytest.mark.parametrize("task", ["text_classification", "ner"])
def test_an_unreachable_dataset_name_is_one_line(task, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "out"
    status, err = run_in_process(task, ["--model_name_or_path", str(tiny_bert_dir), "--output_dir", str(out),
                                        "--dataset_name", "no-such-org/no-such-dataset", "--do_train"], capsys)
    assert_one_line(status, err, r"cannot load dataset 'no-such-org/no-such-dataset' from the Hub \(\w+\); save it "
                                 r"where you have network and pass local files with .*", out)


@pytest.mark.parametrize("task, data", [("text_classification", text_data), ("ner", ner_data),
                                        ("image_classification", image_data)])
def test_freeze_layers_beyond_the_model_is_one_line(task, data, tiny_bert_dir, tiny_vit, tmp_path, capsys):
    model = tiny_vit if task == "image_classification" else tiny_bert_dir
    out = tmp_path / "out"
    status, err = run_in_process(task, ["--model_name_or_path", str(model), "--output_dir", str(out),
                                        "--freeze_layers", "5", *data()], capsys)
    assert_one_line(status, err, re.escape("--freeze_layers 5 exceeds the model's 2 encoder layers"), out)


@pytest.mark.parametrize("task, extra, expected", [
    ("ner", ["--oversample"], r"unknown option --oversample \(did you mean .*\)"),  # NER cannot oversample sentences
    ("text_classification", ["--resume_from_checkpoint", "true", "--do_train", "false"],
     r"--resume_from_checkpoint continues training: it needs --do_train"),
    ("text_classification", ["--dataset_config_name", "x"], r"--dataset_config_name needs --dataset_name"),
    ("text_classification", ["--long_text", "truncate", "--stride", "4"], r"--stride applies only to --long_text chunk"),
    ("text_classification", ["--long_text", "chunk", "--stride", "126"],
     r"--stride must be at least 0 and less than 126 \(--max_seq_length 128 minus 2 special tokens\), got 126"),
    ("image_classification", ["--decision_threshold", "0.3"], None),
])
def test_options_a_recipe_cannot_honour_are_refused(task, extra, expected, tiny_bert_dir, tiny_vit, tmp_path, capsys):
    out = tmp_path / "out"
    if task == "image_classification":  # a 3-class task: a binary threshold has no meaning
        data = tmp_path / "three"
        for name in ("a", "b", "c"):
            (data / name).mkdir(parents=True)
            for i, source in enumerate(sorted((IMAGE_SAMPLE / "folders" / "train" / "normal").iterdir())[:3]):
                (data / name / f"{i}.png").write_bytes(source.read_bytes())
        args = ["--model_name_or_path", tiny_vit, "--train_dir", str(data), "--do_train"]
        expected = re.escape("--decision_threshold applies to binary and multi-label tasks; this one has 3 classes "
                             "(predicted by argmax)")
    else:
        args = ["--model_name_or_path", str(tiny_bert_dir), *(text_data() if task == "text_classification" else ner_data())]
    status, err = run_in_process(task, [*args, "--output_dir", str(out), *extra], capsys)
    assert_one_line(status, err, expected, out)


# ------------------------------------------------------------------------------------------------ deployment commands
@pytest.mark.parametrize("command", ["text_classification/predict.py", "ner/predict.py",
                                     "image_classification/predict.py", "export_onnx.py", "verify_onnx.py",
                                     "serve.py"])
def test_deployment_commands_help_exits_0_and_reads(command, capsys):
    with pytest.raises(SystemExit) as info:
        run_recipe(ROOT / "recipes" / command, ["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith("usage:") and "--model_dir" in out
    assert "--model_name_or_path" not in out.split("\n")[0]  # its own usage line, not train.py's
    if command.endswith("predict.py"):
        assert "--backend" in out and "--input" in out and "--overwrite_output_dir" in out
    if command in ("export_onnx.py", "verify_onnx.py"):
        assert "depend on the task" in " ".join(out.split())  # input options listed once --model_dir names a folder
