"""Outputs never mix two runs: a reused --output_dir is refused unless --overwrite_output_dir (which first removes the
earlier run's results) or --resume_from_checkpoint; --resume_from_checkpoint auto resumes or starts fresh."""

from __future__ import annotations

import json
import os

import pytest

from shared.core.runner import run_recipe
from tests.helpers import IMAGE_SAMPLE, NER_SAMPLE, TEXT_SAMPLE

FAST = ["--num_train_epochs", "1", "--bootstrap_resamples", "10", "--per_device_train_batch_size", "16", "--seed", "2"]


def data(task: str, with_validation: bool) -> list[str]:
    if task == "text_classification":
        files = ["--train_file", str(TEXT_SAMPLE / "train.csv"), "--test_file", str(TEXT_SAMPLE / "test.csv"),
                 "--max_train_samples", "32", "--max_predict_samples", "16"]
        validation = ["--validation_file", str(TEXT_SAMPLE / "validation.csv"), "--max_eval_samples", "16"]
    elif task == "ner":
        files = ["--train_file", str(NER_SAMPLE / "train"), "--test_file", str(NER_SAMPLE / "test"),
                 "--max_train_samples", "30", "--max_predict_samples", "10"]
        validation = ["--validation_file", str(NER_SAMPLE / "validation"), "--max_eval_samples", "10"]
    else:
        folders = IMAGE_SAMPLE / "folders"
        files = ["--train_dir", str(folders / "train"), "--test_dir", str(folders / "test")]
        validation = ["--validation_dir", str(folders / "validation")]
    flags = ["--do_train", "--do_predict"] + (["--do_eval"] if with_validation else [])
    return files + (validation if with_validation else []) + flags


def model_for(task, tiny_bert_dir, tiny_ner_model, tiny_vit) -> str:
    return {"text_classification": str(tiny_bert_dir), "ner": tiny_ner_model, "image_classification": tiny_vit}[task]


@pytest.mark.parametrize("task", ["text_classification", "ner", "image_classification"])
def test_a_reused_output_dir_is_refused_then_overwritten_without_stale_files(task, tiny_bert_dir, tiny_ner_model,
                                                                            tiny_vit, tmp_path, capsys):
    out = tmp_path / "out"
    model = ["--model_name_or_path", model_for(task, tiny_bert_dir, tiny_ner_model, tiny_vit), "--output_dir", str(out)]
    run_recipe(task, [*model, *data(task, with_validation=True), *FAST])
    assert (out / "eval_report.json").exists() and (out / "eval_results.json").exists()
    before = (out / "all_results.json").read_text()

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # the same command again, with other data: refused, nothing touched
        run_recipe(task, [*model, *data(task, with_validation=False), *FAST])
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: {out}: --output_dir holds results of an earlier run (")
    assert last.endswith("pass --overwrite_output_dir to replace them, --resume_from_checkpoint to continue that run, "
                         "or choose a new folder")
    assert (out / "all_results.json").read_text() == before and (out / "eval_report.json").exists()

    results = run_recipe(task, [*model, *data(task, with_validation=False), *FAST, "--overwrite_output_dir"])
    saved = json.loads((out / "all_results.json").read_text())
    assert set(saved) == set(results) - {"epoch"} and not any(k.startswith("eval_") for k in saved)
    for stale in ("eval_report.json", "eval_results.json", "eval_roc.png", "eval_confusion_matrix.png"):
        assert not (out / stale).exists(), stale  # the earlier run's validation outputs are gone


def test_evaluating_a_model_into_its_own_folder_keeps_the_model(tiny_bert_dir, tmp_path):
    out = tmp_path / "model"
    first = run_recipe("text_classification", ["--model_name_or_path", str(tiny_bert_dir), "--output_dir", str(out),
                                                *data("text_classification", with_validation=False), *FAST])
    weights = (out / "model.safetensors").read_bytes()
    again = run_recipe("text_classification", ["--model_name_or_path", str(out), "--output_dir", str(out),
                                               "--test_file", str(TEXT_SAMPLE / "test.csv"), "--max_predict_samples",
                                               "16", "--do_predict", "--overwrite_output_dir", *FAST])
    assert (out / "model.safetensors").read_bytes() == weights  # the input model stays
    assert again["test_accuracy"] == pytest.approx(first["test_accuracy"])
    assert "train_runtime" not in json.loads((out / "all_results.json").read_text())  # results of this run only


def test_resume_auto_starts_fresh_then_resumes(tiny_bert_dir, tmp_path, caplog):
    out = tmp_path / "out"
    args = ["--model_name_or_path", str(tiny_bert_dir), "--output_dir", str(out),
            *data("text_classification", with_validation=False), *FAST, "--save_strategy", "steps", "--save_steps",
            "1", "--resume_from_checkpoint", "auto"]
    with caplog.at_level("INFO", logger="shared.core.resume"):
        first = run_recipe("text_classification", args)  # nothing there yet: a fresh start
    assert "no complete checkpoint, starting fresh" in caplog.text
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-1", "checkpoint-2"]
    caplog.clear()
    with caplog.at_level("INFO", logger="shared.core.resume"):
        again = run_recipe("text_classification", args)  # the restart script runs the same command again
    assert "--resume_from_checkpoint auto: resuming" in caplog.text
    assert again["test_accuracy"] == pytest.approx(first["test_accuracy"])
    assert os.path.isdir(out / "checkpoint-2")  # a resumed run keeps its checkpoints
