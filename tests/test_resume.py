"""Stopping and resuming (issues #5, #6): a run continued from a checkpoint ends exactly where an uninterrupted run
with the same seed ends (metrics and predictions), for every recipe; incomplete checkpoints are skipped; a run killed
with SIGTERM resumes with ``--resume_from_checkpoint true``; results files are replaced atomically.

The "stopped" run is the uninterrupted run's own checkpoint copied into a fresh output folder (what a crash leaves,
minus the later checkpoints), resumed from the middle of the *second* epoch: the first epoch resumes exactly even
without shared/core/resume.py, later ones did not (length-grouped order and image augmentation drew from the global RNG,
and ViT checkpoints reloaded only their head).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from shared.core.errors import DataError
from shared.core.resume import last_complete_checkpoint, resolve_checkpoint
from shared.core.runner import load_recipe
from tests.helpers import ROOT, run_cli

TEXT = ROOT / "recipes" / "text_classification" / "sample_data"
NER = ROOT / "recipes" / "ner" / "sample_data"
IMAGES = ROOT / "recipes" / "image_classification" / "sample_data" / "folders"


def scores(results: dict) -> dict:
    """Evaluation and test metrics (train_* hold the resumed part's own loss and runtime, so they differ)."""
    return {k: v for k, v in results.items() if k.startswith(("eval_", "test_"))}


def outputs(out: Path) -> dict[str, str]:
    """Every prediction file a run wrote, by name."""
    files = sorted(out.glob("test_predictions.csv")) + sorted((out / "test_predictions").glob("*"))
    assert files, f"no prediction files in {out}"
    return {p.name: p.read_text() for p in files}


def same_weights(a: Path, b: Path) -> bool:
    """Whether the two output folders hold bit-identical saved weights (every top-level *.safetensors file)."""
    from safetensors.torch import load_file

    names = sorted(p.name for p in a.glob("*.safetensors"))
    if not names or names != sorted(p.name for p in b.glob("*.safetensors")):
        return False
    for name in names:
        x, y = load_file(a / name), load_file(b / name)
        if x.keys() != y.keys() or not all(x[k].equal(y[k]) for k in x):
            return False
    return True


def stopped_copy(full: Path, dest: Path, keep: list[int]) -> Path:
    """An output folder holding only the checkpoints ``keep`` of ``full``: a run stopped after the last of them."""
    dest.mkdir()
    for step in keep:
        shutil.copytree(full / f"checkpoint-{step}", dest / f"checkpoint-{step}")
    return dest


def incomplete_copy(checkpoint: Path, dest: Path) -> None:
    """What a run killed while saving leaves: weights half written, no trainer_state.json."""
    shutil.copytree(checkpoint, dest)
    (dest / "trainer_state.json").unlink()
    weights = dest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def final_step(out: Path) -> int:
    return json.loads((Path(last_complete_checkpoint(out)) / "trainer_state.json").read_text())["global_step"]


# ------------------------------------------------------------------------------------------ text classification


def text_args(model, out, *extra):
    # 64 examples, batch 8: 8 steps per epoch, 24 in all; bf16 stays at the recipe default (on where the CPU has it)
    return ["--model_name_or_path", str(model), "--output_dir", str(out), "--train_file", str(TEXT / "train.csv"),
            "--validation_file", str(TEXT / "validation.csv"), "--test_file", str(TEXT / "test.csv"),
            "--max_train_samples", "64", "--per_device_train_batch_size", "8", "--num_train_epochs", "3",
            "--learning_rate", "1e-3", "--bootstrap_resamples", "0", "--seed", "3", "--do_train", "--do_eval",
            "--do_predict", "--save_strategy", "steps", *extra]


@pytest.mark.parametrize("reading", [
    ["--long_text", "truncate"],
    # 16-token windows, one per note each epoch: which window a note trains depends on the epoch
    ["--long_text", "chunk", "--max_seq_length", "16", "--train_windows", "one_per_epoch"],
], ids=["truncate", "chunk-one-window-per-epoch"])
@pytest.mark.slow
def test_text_resume_true_mid_second_epoch_matches_uninterrupted_run(tiny_bert_dir, tmp_path, reading):
    recipe = load_recipe("text_classification")
    full = recipe.main(text_args(tiny_bert_dir, tmp_path / "full", "--save_steps", "4", *reading))
    out = stopped_copy(tmp_path / "full", tmp_path / "resumed", [4, 12])  # step 12: the middle of epoch 2
    incomplete_copy(tmp_path / "full" / "checkpoint-16", out / "checkpoint-16")  # killed while saving step 16
    resumed = recipe.main(text_args(tiny_bert_dir, out, "--save_steps", "4", "--resume_from_checkpoint", "true",
                                    *reading))
    assert scores(resumed) == scores(full)
    assert outputs(out) == outputs(tmp_path / "full")
    assert same_weights(out, tmp_path / "full")
    assert final_step(out) == 24
    assert json.loads((out / "checkpoint-16" / "trainer_state.json").read_text())["global_step"] == 16  # rewritten


# ------------------------------------------------------------------------------------------ NER


def ner_args(model, out, *extra):
    # 64 sentences, batch 8: 9 steps per epoch (a few sentences make two windows), 18 in all
    return ["--model_name_or_path", str(model), "--output_dir", str(out), "--train_file", str(NER / "train"),
            "--validation_file", str(NER / "validation"), "--test_file", str(NER / "test"),
            "--max_train_samples", "64", "--per_device_train_batch_size", "8", "--num_train_epochs", "2",
            "--learning_rate", "5e-3", "--bootstrap_resamples", "0", "--seed", "3", "--do_train", "--do_eval",
            "--do_predict", "--save_strategy", "steps", "--save_steps", "4", *extra]


@pytest.fixture(scope="module")
def tiny_ner_model(tmp_path_factory):
    from tests.helpers import build_tiny_ner_model

    return build_tiny_ner_model(str(tmp_path_factory.mktemp("tiny_ner_bert")))


@pytest.mark.parametrize("head", [[], ["--use_crf"]], ids=["softmax", "crf"])
def test_ner_resume_mid_second_epoch_matches_uninterrupted_run(tiny_ner_model, tmp_path, head):
    recipe = load_recipe("ner")
    full = recipe.main(ner_args(tiny_ner_model, tmp_path / "full", *head))
    out = stopped_copy(tmp_path / "full", tmp_path / "resumed", [12])
    resumed = recipe.main(ner_args(tiny_ner_model, out, *head, "--resume_from_checkpoint", str(out / "checkpoint-12")))
    assert scores(resumed) == scores(full)
    assert outputs(out) == outputs(tmp_path / "full")
    assert same_weights(out, tmp_path / "full")
    assert final_step(out) == final_step(tmp_path / "full")


# ------------------------------------------------------------------------------------------ images


def image_args(model, out, *extra):
    # 48 images, batch 8: 6 steps per epoch, 18 in all; augmentation on (the default)
    return ["--model_name_or_path", model, "--output_dir", str(out), "--train_dir", str(IMAGES / "train"),
            "--validation_dir", str(IMAGES / "validation"), "--test_dir", str(IMAGES / "test"),
            "--per_device_train_batch_size", "8", "--num_train_epochs", "3", "--learning_rate", "1e-3",
            "--bootstrap_resamples", "0", "--seed", "3", "--do_train", "--do_eval", "--do_predict",
            "--save_strategy", "steps", "--save_steps", "4", *extra]


def test_image_resume_mid_second_epoch_matches_uninterrupted_run(tiny_vit, tmp_path):
    recipe = load_recipe("image_classification")
    full = recipe.main(image_args(tiny_vit, tmp_path / "full"))
    out = stopped_copy(tmp_path / "full", tmp_path / "resumed", [8])  # step 8: the middle of epoch 2
    resumed = recipe.main(image_args(tiny_vit, out, "--resume_from_checkpoint", "True"))
    assert scores(resumed) == scores(full)
    assert outputs(out) == outputs(tmp_path / "full")
    assert same_weights(out, tmp_path / "full")
    assert final_step(out) == 18


def test_image_load_best_model_at_end_restores_the_whole_best_model(tiny_vit, tmp_path):
    """Trainer's reload of the best checkpoint has the same key-renaming gap as its resume (ViT: head only)."""
    out = tmp_path / "best"
    recipe = load_recipe("image_classification")
    recipe.main(image_args(tiny_vit, out, "--eval_strategy", "steps", "--eval_steps", "4", "--do_predict", "false",
                           "--load_best_model_at_end", "true", "--metric_for_best_model", "loss",
                           "--calibration", "none"))  # a calibrated head is rescaled after the reload, on purpose
    best = json.loads((Path(last_complete_checkpoint(out)) / "trainer_state.json").read_text())["best_model_checkpoint"]
    assert best and not best.endswith("-18")  # the test is only meaningful if the best is not the last step
    assert same_weights(out, Path(best))


# ------------------------------------------------------------------------------------------ which checkpoint


def make_checkpoint(out: Path, step: int, complete: bool = True) -> Path:
    path = out / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_resolve_checkpoint_values_and_incomplete_checkpoints(tmp_path):
    def resolve(value):
        return resolve_checkpoint(SimpleNamespace(resume_from_checkpoint=value, output_dir=str(tmp_path), do_train=True))

    for value in (None, False, "false", "False", ""):
        assert resolve(value) is None
    with pytest.raises(DataError, match="no complete checkpoint"):
        resolve("true")
    make_checkpoint(tmp_path, 9)
    make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 12, complete=False)  # killed while saving
    truncated = make_checkpoint(tmp_path, 11)
    (truncated / "trainer_state.json").write_text('{"global_st')  # killed while writing the state itself
    (tmp_path / "checkpoint-13").write_text("not a folder")
    for value in ("true", "True", "TRUE", "last", True):
        assert resolve(value) == str(tmp_path / "checkpoint-10")
    assert resolve(str(tmp_path / "checkpoint-9")) == str(tmp_path / "checkpoint-9")
    with pytest.raises(DataError, match="not a complete Trainer checkpoint"):
        resolve(str(tmp_path / "checkpoint-12"))
    with pytest.raises(DataError, match="does not exist"):
        resolve(str(tmp_path / "checkpoint-99"))


def test_bad_resume_path_fails_before_any_work(tiny_bert_dir, tmp_path, capsys):
    recipe = load_recipe("text_classification")
    with pytest.raises(SystemExit) as exit_:
        recipe.main(text_args(tiny_bert_dir, tmp_path / "out", "--resume_from_checkpoint", str(tmp_path / "nope")))
    assert exit_.value.code == 2
    assert "--resume_from_checkpoint folder does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_length_grouped_order_depends_on_seed_and_epoch_only():
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from shared.core.resume import EpochSeededSampling

    def order(epoch, seed=3, noise=0):
        sampler = LengthGroupedSampler(4, lengths=list(range(5, 69)))
        loader = torch.utils.data.DataLoader(list(range(64)), batch_size=4, sampler=sampler)
        callback, args = EpochSeededSampling(), SimpleNamespace(seed=seed, data_seed=None)
        callback.on_train_begin(args, None, None, train_dataloader=loader)
        torch.manual_seed(noise)  # whatever else drew from the global RNG before this epoch
        callback.on_epoch_begin(args, SimpleNamespace(epoch=epoch + 0.5 if epoch else 0), None)
        return list(sampler)

    assert order(1) == order(1, noise=1)
    assert order(1) != order(2)
    assert order(1) != order(1, seed=4)


# ------------------------------------------------------------------------------------------ killed runs


@pytest.mark.slow
def test_sigterm_mid_training_then_resume_true_matches_uninterrupted_run(tiny_bert_dir, tmp_path):
    """Kill the text recipe (a subprocess) with SIGTERM once a checkpoint exists, preferably while it is writing
    the next one; ``--resume_from_checkpoint true`` must skip a half-written checkpoint and end like an
    uninterrupted run."""
    args = text_args(tiny_bert_dir, tmp_path / "run", "--save_steps", "1", "--per_device_train_batch_size", "4",
                     "--num_train_epochs", "2")  # 32 steps, a checkpoint after each
    log = open(tmp_path / "killed.log", "w")  # a file, not a pipe nobody reads (a full pipe would block the run)
    proc = subprocess.Popen([sys.executable, str(ROOT / "recipes" / "text_classification" / "train.py"), *args],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    run = tmp_path / "run"
    deadline, during_save = time.monotonic() + 300, False
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            steps = sorted(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*")) if run.exists() else []
            complete = [s for s in steps if (run / f"checkpoint-{s}" / "trainer_state.json").exists()]
            if complete and steps[-1] not in complete:  # checkpoint-N being written right now
                during_save = True
                break
            if len(complete) >= 6:  # never caught a save in progress: kill between saves
                break
            time.sleep(0.002)
        log_tail = (tmp_path / "killed.log").read_text()[-2000:] if proc.poll() is not None else ""
        assert proc.poll() is None, f"the run ended before it could be killed: {log_tail}"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGTERM
    killed_at = final_step(run)
    assert 1 <= killed_at < 32 and not (run / "all_results.json").exists()

    resumed = run_cli("text_classification", args + ["--resume_from_checkpoint", "true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert final_step(run) == 32
    full = tmp_path / "full"
    load_recipe("text_classification").main(text_args(tiny_bert_dir, full, "--save_steps", "1000",  # (saves nothing)
                                                      "--per_device_train_batch_size", "4", "--num_train_epochs", "2"))
    saved = {folder.name: json.loads((folder / "all_results.json").read_text()) for folder in (run, full)}
    assert scores(saved["run"]) == scores(saved["full"])
    assert outputs(run) == outputs(full)
    assert same_weights(run, full)
    print(f"killed at step {killed_at}, {'while saving the next checkpoint' if during_save else 'between saves'}")


# ------------------------------------------------------------------------------------------ atomic results files


def test_interrupted_atomic_write_leaves_the_old_file(tmp_path, monkeypatch):
    import shared.core.files as reporting
    from shared.evaluation.reports import write_model_card

    path = tmp_path / "all_results.json"
    reporting.atomic_write_json(path, {"eval_accuracy": 0.5})
    real_fdopen = os.fdopen

    class DiesMidWrite:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            raise KeyboardInterrupt  # e.g. Ctrl-C half-way through the write

    monkeypatch.setattr(reporting.os, "fdopen", lambda *a, **k: DiesMidWrite(real_fdopen(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        reporting.atomic_write_json(path, {"eval_accuracy": 0.75, "test_accuracy": 0.7})
    monkeypatch.setattr(reporting.os, "fdopen", real_fdopen)

    def no_rename(*args):
        raise OSError("killed before the rename")

    monkeypatch.setattr(reporting.os, "replace", no_rename)
    with pytest.raises(OSError):
        write_model_card(str(tmp_path), title="t", base_model="m", pipeline_tag="p", task_description="d",
                         data_summary={}, metrics={}, headline_metrics=[], training={}, limitations=[])
    assert json.loads(path.read_text()) == {"eval_accuracy": 0.5}
    assert sorted(os.listdir(tmp_path)) == ["all_results.json"]  # no temporary file, no half-written card


# ------------------------------------------------------------------------------------------ assertion status
ASSERTIONS = ROOT / "recipes" / "assertion_status" / "sample_data"


def test_assertion_resume_mid_second_epoch_matches_uninterrupted_run(tmp_path):
    from shared.training.tiny_models import build_tiny_bert

    corpus = [p.read_text() for p in sorted(ASSERTIONS.glob("*/*.txt"))]
    model = build_tiny_bert(tmp_path / "tiny", corpus)
    recipe = load_recipe("assertion_status")

    def args(out, *extra):  # 64 concepts, batch 8: 8 steps per epoch, 24 in all; the marker embeddings train too
        return ["--model_name_or_path", model, "--output_dir", str(out), "--train_file", str(ASSERTIONS / "train"),
                "--validation_file", str(ASSERTIONS / "validation"), "--test_file", str(ASSERTIONS / "test"),
                "--max_train_samples", "64", "--per_device_train_batch_size", "8", "--num_train_epochs", "3",
                "--learning_rate", "1e-3", "--bootstrap_resamples", "0", "--seed", "3", "--do_train", "--do_eval",
                "--do_predict", "--save_strategy", "steps", "--save_steps", "4", *extra]

    full = recipe.main(args(tmp_path / "full"))
    out = stopped_copy(tmp_path / "full", tmp_path / "resumed", [12])
    resumed = recipe.main(args(out, "--resume_from_checkpoint", "True"))
    assert scores(resumed) == scores(full)
    assert outputs(out) == outputs(tmp_path / "full")
    assert same_weights(out, tmp_path / "full")
    assert final_step(out) == 24


# ------------------------------------------------------------------------------------------ relation extraction
RELATIONS = ROOT / "recipes" / "relation_extraction" / "sample_data" / "i2b2"


def test_relation_resume_mid_second_epoch_matches_uninterrupted_run(tmp_path):
    from shared.training.tiny_models import build_tiny_bert

    corpus = [p.read_text() for p in sorted(RELATIONS.glob("*/*.txt"))]
    model = build_tiny_bert(tmp_path / "tiny", corpus)
    recipe = load_recipe("relation_extraction")

    def args(out, *extra):  # 64 of the pairs, negatives subsampled, batch 8; the marker embeddings train too
        return ["--model_name_or_path", model, "--output_dir", str(out), "--train_file", str(RELATIONS / "train"),
                "--validation_file", str(RELATIONS / "validation"), "--test_file", str(RELATIONS / "test"),
                "--max_train_samples", "96", "--negative_ratio", "1", "--per_device_train_batch_size", "8",
                "--num_train_epochs", "3", "--learning_rate", "1e-3", "--bootstrap_resamples", "0", "--seed", "3",
                "--do_train", "--do_eval", "--do_predict", "--save_strategy", "steps", "--save_steps", "3", *extra]

    full = recipe.main(args(tmp_path / "full"))
    steps = final_step(tmp_path / "full")
    saved = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "full").glob("checkpoint-*"))
    middle = min(saved, key=lambda step: abs(step - steps / 2))  # in the second of three epochs
    assert steps / 3 < middle < 2 * steps / 3
    out = stopped_copy(tmp_path / "full", tmp_path / "resumed", [middle])
    resumed = recipe.main(args(out, "--resume_from_checkpoint", "True"))
    assert scores(resumed) == scores(full)
    assert outputs(out) == outputs(tmp_path / "full")
    assert same_weights(out, tmp_path / "full")
    assert final_step(out) == steps


def test_max_steps_inside_an_epoch_scores_each_epoch_once_and_names_the_partial_one(tiny_bert_dir, tmp_path, caplog):
    """8 steps per epoch, --max_steps 20: validation after epochs 1 and 2 and after the partial epoch 2.5, each
    logged once (the partial one was logged as a second "epoch 2"), and a kept partial epoch is reported as 2.5."""
    import logging
    import re

    recipe = load_recipe("text_classification")
    args = [a for a in text_args(tiny_bert_dir, tmp_path / "out") if a != "--do_predict"]
    args = [*args[:-2], "--save_strategy", "no", "--max_steps", "20"]  # (instead of text_args' steps)
    with caplog.at_level(logging.INFO, logger="shared.training.adaptive"):
        results = recipe.main(args)
    scored = [m.split(": validation")[0] for r in caplog.records
              if re.match(r"epoch [\d.]+.*: validation", m := r.getMessage())]
    assert scored == ["epoch 1", "epoch 2", "epoch 2.5 (partial: --max_steps ended training inside it)"]
    assert results["train_best_epoch"] in (1, 2, 2.5)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "of 2.5 (best validation macro_f1" in card and "a partial one: --max_steps ended training" in card
