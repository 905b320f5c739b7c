"""Defaults derived from the training data (shared/training/adaptive.py): they follow the training set size and label
balance, and every option the user set, on the command line or in a config, wins."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from shared.core.args import ClassifierModelArguments, DataArguments, TrainingArguments, given, parse_args
from shared.training.adaptive import IMBALANCE_RATIO, MAX_EPOCHS, MIN_STEPS, SMALLEST_BATCH, KeepBestEpoch
from shared.training.adaptive import adapt_to_training_data, imbalance_ratio, optimizer_steps, schedule_for
from shared.training.adaptive import wants_best_epoch


@pytest.mark.parametrize("examples, batch, epochs", [
    (5000, 32, 3),  # plenty: the defaults stand
    (2021, 32, 3),  # Medical Abstracts' training split, truncated: 64 batches x 3 epochs
    (1000, 16, 3),
    (500, 8, 3),  # the 500 examples: 48 steps at batch 32, 189 at batch 8
    (300, 8, 4),
    (40, 8, MAX_EPOCHS),  # the floor is out of reach: the epochs stop at the cap
])
def test_the_schedule_follows_the_training_set_size(examples, batch, epochs):
    assert schedule_for(examples, 32, 3.0, 3.0, set_batch=False, set_epochs=False) == (batch, epochs)
    if epochs < MAX_EPOCHS:
        assert optimizer_steps(examples, batch, epochs) >= MIN_STEPS


def test_options_the_user_set_stay_as_set():
    assert schedule_for(300, 32, 3.0, 3.0, set_batch=True, set_epochs=False) == (32, MAX_EPOCHS)
    assert schedule_for(300, 32, 3.0, 3.0, set_batch=False, set_epochs=True) == (SMALLEST_BATCH, 3.0)
    assert schedule_for(300, 32, 3.0, 3.0, set_batch=True, set_epochs=True) == (32, 3.0)
    # the batch follows the data, not the epochs asked for: one epoch on plenty keeps the default batch
    assert schedule_for(5000, 32, 1.0, 3.0, set_batch=False, set_epochs=True) == (32, 1.0)


def test_processes_and_gradient_accumulation_count_as_the_trainer_counts():
    assert optimizer_steps(1000, 16, 3, accumulation=2) == 31 * 3
    assert optimizer_steps(1000, 16, 3, processes=2) == 32 * 3
    assert schedule_for(1000, 32, 3.0, 3.0, False, False, processes=2) == (8, 3.0)


def parsed(tmp_path, *flags, config: str | None = None):
    argv = ["--model_name_or_path", "m", "--output_dir", str(tmp_path / "out"), "--do_train", *flags]
    if config is not None:
        (tmp_path / "run.yaml").write_text(config)
        argv += ["--config", str(tmp_path / "run.yaml")]
    model_args, _, training_args = parse_args(
        ClassifierModelArguments, DataArguments, TrainingArguments, args=argv,
        defaults={"per_device_train_batch_size": 32, "num_train_epochs": 3.0, "report_to": "none", "use_cpu": True})
    return model_args, training_args


def test_given_names_what_the_user_set_even_to_the_default_value(tmp_path):
    model_args, training_args = parsed(tmp_path, "--per_device_train_batch_size", "32", "--class_weighting=none",
                                       config="num_train_epochs: 3\n")
    assert {"per_device_train_batch_size", "num_train_epochs"} <= given(training_args)
    assert "class_weighting" in given(model_args)
    assert "learning_rate" not in given(training_args)  # a recipe / dataclass default is not the user's
    _, training_args = parsed(tmp_path, "--per_device_train", "16")  # argparse's abbreviations count too
    assert "per_device_train_batch_size" in given(training_args)


def test_adapting_changes_only_what_the_user_left_unset(tmp_path):
    model_args, training_args = parsed(tmp_path)
    derived = adapt_to_training_data(training_args, model_args, 300, 3.0, [0] * 270 + [1] * 30, 2)
    assert (training_args.per_device_train_batch_size, training_args.num_train_epochs) == (8, 4.0)
    assert model_args.class_weighting == "balanced"
    assert training_args.learning_rate == pytest.approx(5e-5 / 2)  # batch 32 -> 8: sqrt(1/4)
    assert derived.values == {"per_device_train_batch_size": 8, "learning_rate": training_args.learning_rate,
                              "num_train_epochs": 4.0, "class_weighting": "balanced"}
    assert "batch size 8" in derived.describe() and "9.0x" in derived.describe()
    assert derived.card(None)["derived_from_the_training_data"] == derived.describe()

    model_args, training_args = parsed(tmp_path, "--per_device_train_batch_size", "32", "--num_train_epochs", "3",
                                       "--class_weighting", "none")
    derived = adapt_to_training_data(training_args, model_args, 300, 3.0, [0] * 270 + [1] * 30, 2)
    assert (training_args.per_device_train_batch_size, training_args.num_train_epochs) == (32, 3.0)
    assert model_args.class_weighting == "none" and derived.values == {}
    assert derived.describe().startswith("none")

    _, training_args = parsed(tmp_path, "--learning_rate", "1e-4")
    adapt_to_training_data(training_args, model_args, 300, 3.0)
    assert (training_args.per_device_train_batch_size, training_args.learning_rate) == (8, 1e-4)

    model_args, training_args = parsed(tmp_path, "--oversample")
    adapt_to_training_data(training_args, model_args, 5000, 3.0, [0] * 4500 + [1] * 500, 2)
    assert model_args.class_weighting == "none"  # the user chose another answer to the imbalance

    model_args, training_args = parsed(tmp_path, "--max_steps", "5")
    assert adapt_to_training_data(training_args, model_args, 300, 3.0).values == {}


def test_class_weighting_only_beyond_the_imbalance_ratio(tmp_path):
    balanced_enough = [0] * 60 + [1] * 30 + [2] * 16  # 3.75x: Medical Abstracts' 3.2x lost 3 points weighted
    assert imbalance_ratio(balanced_enough, 3) < IMBALANCE_RATIO
    model_args, training_args = parsed(tmp_path)
    adapt_to_training_data(training_args, model_args, 5000, 3.0, balanced_enough, 3)
    assert model_args.class_weighting == "none"
    assert imbalance_ratio([0] * 60 + [2] * 15, 4) == 4.0  # classes absent from training are not counted


def test_the_best_epoch_needs_validation_and_an_unchosen_schedule(tmp_path):
    _, training_args = parsed(tmp_path)
    assert wants_best_epoch(training_args, has_validation=True)
    assert not wants_best_epoch(training_args, has_validation=False)
    _, training_args = parsed(tmp_path, "--eval_strategy", "epoch")
    assert not wants_best_epoch(training_args, has_validation=True)
    _, training_args = parsed(tmp_path, "--num_train_epochs", "1")
    assert not wants_best_epoch(training_args, has_validation=True)


def test_the_best_epoch_is_the_one_left_in_the_model():
    model = torch.nn.Linear(2, 1)
    scores = iter([0.5, 0.8, 0.8, 0.6])  # epoch 2 is best; epoch 3 ties it and does not replace it
    keep = KeepBestEpoch(lambda m: next(scores), "macro_f1")
    state = SimpleNamespace(epoch=0, is_world_process_zero=True)
    weights = []
    for epoch in range(1, 5):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        state.epoch = float(epoch)
        keep.on_epoch_end(None, state, None, model=model)
        weights.append(model.weight.detach().clone())
    keep.on_train_end(None, state, None, model=model)
    assert torch.equal(model.weight, weights[1])
    assert keep.results() == {"train_best_epoch": 2, "train_best_eval_macro_f1": 0.8}
    assert keep.best_state is None  # the copy is not kept after training
    assert json.dumps(keep.results())


def test_a_checkpoint_carries_the_best_epoch_into_the_resumed_run(tmp_path):
    """What a checkpoint saved mid-epoch-3 holds lets a resumed run keep epoch 1, which it never trains again; a
    checkpoint without it (or written for another metric) leaves the resumed run choosing among its own epochs. What
    the score chose with its value (a reading of long notes) comes back with the epoch."""
    model = torch.nn.Linear(2, 1)
    scores = iter([(0.9, {"aggregation": "first"}), (0.4, {"aggregation": "mean"})])
    before = KeepBestEpoch(lambda m: next(scores), "macro_f1")
    state = SimpleNamespace(epoch=0, global_step=0, is_world_process_zero=True)
    args = SimpleNamespace(output_dir=str(tmp_path))
    for epoch in (1, 2):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        state.epoch = float(epoch)
        before.on_epoch_end(args, state, None, model=model)
    state.global_step = 25
    checkpoint = tmp_path / "checkpoint-25"
    checkpoint.mkdir()
    before.on_save(args, state, None)

    after = KeepBestEpoch(lambda m: (0.5, {"aggregation": "mean"}), "macro_f1")  # epoch 3 scores below epoch 1
    after.resume_from(str(checkpoint))
    assert after.best_detail == {"aggregation": "first"}
    with torch.no_grad():
        model.weight.fill_(3.0)
    state.epoch = 3.0
    after.on_epoch_end(args, state, None, model=model)
    after.on_train_end(args, state, None, model=model)
    assert torch.equal(model.weight, torch.ones_like(model.weight))
    assert after.results() == {"train_best_epoch": 1, "train_best_eval_macro_f1": 0.9}
    assert after.best_detail == {"aggregation": "first"}

    other = KeepBestEpoch(lambda m: 0.5, "f1")
    other.resume_from(str(checkpoint))
    assert other.best_epoch is None
    empty = tmp_path / "checkpoint-5"
    empty.mkdir()
    fresh = KeepBestEpoch(lambda m: 0.5, "macro_f1")
    fresh.resume_from(str(empty))
    assert fresh.best_epoch is None and fresh.history == []
