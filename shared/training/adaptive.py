"""Defaults that follow the training data: what a recipe derives from the size and label balance of the training
split when the user did not set the option (``shared.core.args.given``), and the best epoch kept on validation.

Why: fixed defaults chosen on thousands of examples fail on the few hundred our users typically have (batch 32 for
3 epochs is 48 optimizer steps on 500 examples: the text recipe then predicted the majority class). The rules, each
measured in ``benchmarks/bench_small_data.py`` (table in benchmarks/README.md):

- **optimizer steps**: the batch size halves (down to ``SMALLEST_BATCH``) until the recipe's default number of
  epochs gives at least ``MIN_STEPS`` optimizer steps; if even the smallest batch does not, the epochs grow (up to
  ``MAX_EPOCHS``). The batch size follows the training set size only, not the epochs asked for, so a data set
  large enough for the default batch keeps it (and its speed) whatever the schedule. A smaller batch gets a
  smaller learning rate, by the square root of the ratio (the square-root scaling rule for Adam: Malladi et al.,
  "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms", NeurIPS 2022), unless the user set one;
- **class weighting** (classifiers, single-label): ``balanced`` loss weights when the largest training class is at
  least ``IMBALANCE_RATIO`` times the smallest and no other imbalance option (weighting, focal loss, oversampling)
  was given;
- **best epoch**: with a validation split and more than one epoch, the model is scored on validation after every
  epoch with the recipe's own metric (macro-F1, or strict entity F1) and the best epoch's weights are the ones
  evaluated and saved (:class:`KeepBestEpoch`: kept in memory, and in every checkpoint so that a resumed run keeps
  the same epoch), unless the user chose an ``--eval_strategy`` or ``--load_best_model_at_end`` of their own.

With the environment variable ``EPOCH_METRICS_FILE`` set to a path, the main process also appends each epoch's
validation score there as one JSON line, ``{"epoch": 2, "metric": "macro_f1", "value": 0.71}``: how
``recipes/tune.py`` watches a running trial and stops it when Optuna's pruner says so.

Everything derived is logged in one line and returned as text for ``all_results.json`` and the model card.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from shared.core.args import given

logger = logging.getLogger(__name__)

MIN_STEPS = 150
SMALLEST_BATCH = 8
MAX_EPOCHS = 10
IMBALANCE_RATIO = 4.0
IMBALANCE_OPTIONS = ("class_weighting", "focal_gamma", "oversample")


@dataclass
class Derived:
    """What the data decided: ``{option: value}`` and why, in the order the rules ran."""

    values: dict[str, object] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    trained: bool = False

    def describe(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "none (every option set or the defaults already fit)"

    def card(self, best: KeepBestEpoch | None) -> dict[str, str]:
        """The model card's lines: what was derived from the training data, and the epoch kept."""
        if not self.trained:
            return {}
        lines = {"derived_from_the_training_data": self.describe()}
        if best is not None and best.best_epoch is not None:
            last = best.history[-1][0]
            lines["kept_epoch"] = (f"{best.best_epoch} of {last} (best validation {best.metric_name} "
                                   f"{best.best_value:.4f})" + (PARTIAL if isinstance(last, float) else ""))
        return lines


def optimizer_steps(examples: int, batch_size: int, epochs: float, accumulation: int = 1, processes: int = 1) -> int:
    """Trainer's count: batches per epoch (the last one partial), over gradient accumulation, times epochs."""
    batches = math.ceil(examples / (batch_size * processes))
    return max(1, batches // accumulation) * epochs


def schedule_for(examples: int, batch_size: int, epochs: float, default_epochs: float, set_batch: bool,
                 set_epochs: bool, accumulation: int = 1, processes: int = 1) -> tuple[int, float]:
    """(batch size, epochs) after the step floor. Unless the user set it, the batch halves while it is above
    ``SMALLEST_BATCH`` and ``default_epochs`` (the recipe's) give fewer than ``MIN_STEPS`` steps; then, unless the
    user set them, the epochs grow to reach the floor (at most ``MAX_EPOCHS``)."""
    if not set_batch:
        while batch_size > SMALLEST_BATCH and optimizer_steps(examples, batch_size, default_epochs, accumulation,
                                                              processes) < MIN_STEPS:
            batch_size = max(SMALLEST_BATCH, batch_size // 2)
    if not set_epochs:
        per_epoch = optimizer_steps(examples, batch_size, 1, accumulation, processes)
        if per_epoch * epochs < MIN_STEPS:
            epochs = float(max(epochs, min(MAX_EPOCHS, math.ceil(MIN_STEPS / per_epoch))))
    return batch_size, epochs


def imbalance_ratio(label_ids: Sequence[int], num_labels: int) -> float:
    """Largest over smallest training class count (classes absent from training are not counted)."""
    counts = np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=num_labels)
    counts = counts[counts > 0]
    return float(counts.max() / counts.min()) if len(counts) else 1.0


def adapt_to_training_data(training_args, model_args, examples: int, default_epochs: float,
                           label_ids: Sequence[int] | None = None, num_labels: int = 0) -> Derived:
    """Apply the rules above to ``training_args`` / ``model_args`` in place, for a training split of ``examples``
    rows (what one epoch iterates: windows for text and NER). ``default_epochs``: the recipe's. ``label_ids``:
    single-label class ids of the training examples (None: no class-weighting rule, e.g. NER, multi-label).
    Options the user set are never changed."""
    derived = Derived(trained=training_args.do_train)
    if not training_args.do_train or examples == 0:
        return derived
    training_given, model_given = given(training_args), given(model_args)
    if training_args.max_steps is None or training_args.max_steps <= 0:
        batch, epochs = training_args.per_device_train_batch_size, training_args.num_train_epochs
        new_batch, new_epochs = schedule_for(
            examples, batch, epochs, default_epochs, "per_device_train_batch_size" in training_given,
            "num_train_epochs" in training_given, training_args.gradient_accumulation_steps,
            training_args.world_size)
        if new_batch != batch:
            derived.values["per_device_train_batch_size"] = training_args.per_device_train_batch_size = new_batch
            derived.reasons.append(f"batch size {new_batch} (not {batch}: {examples} training examples)")
            if "learning_rate" not in training_given:
                lr = training_args.learning_rate
                derived.values["learning_rate"] = training_args.learning_rate = lr * math.sqrt(new_batch / batch)
                derived.reasons.append(f"learning rate {training_args.learning_rate:.3g} (not {lr:.3g}: "
                                       f"square root of the batch ratio)")
        if new_epochs != epochs:
            derived.values["num_train_epochs"] = training_args.num_train_epochs = new_epochs
            derived.reasons.append(f"{new_epochs:g} epochs (not {epochs:g}: at least {MIN_STEPS} optimizer steps)")
    if label_ids is not None and not any(name in model_given for name in IMBALANCE_OPTIONS) \
            and model_args.class_weighting == "none" and model_args.focal_gamma == 0 \
            and not getattr(model_args, "oversample", False):
        ratio = imbalance_ratio(label_ids, num_labels)
        if ratio >= IMBALANCE_RATIO:
            derived.values["class_weighting"] = model_args.class_weighting = "balanced"
            derived.reasons.append(f"class weighting balanced (largest class {ratio:.1f}x the smallest)")
    if derived.reasons:
        logger.info("defaults derived from the training data: %s", derived.describe())
    return derived


def wants_best_epoch(training_args, has_validation: bool) -> bool:
    """Whether :class:`KeepBestEpoch` applies: training with a validation split for more than one epoch, and the
    user chose no evaluation schedule or best-model rule of their own (Trainer's then applies as they set it)."""
    chosen = given(training_args) & {"eval_strategy", "load_best_model_at_end", "metric_for_best_model"}
    return (training_args.do_train and has_validation and not chosen and training_args.num_train_epochs > 1
            and not training_args.load_best_model_at_end)


EPOCH_METRICS_FILE = "EPOCH_METRICS_FILE"  # the environment variable naming the per-epoch scores file
PARTIAL = "; a fractional epoch is a partial one: --max_steps ended training inside it"


def epoch_label(epoch: float) -> int | float:
    """Trainer's ``state.epoch`` as the epoch it names: the whole number at an epoch's end, the fraction (2.4) where
    ``--max_steps`` ended training inside an epoch (rounding would call it epoch 2 a second time)."""
    return round(epoch) if abs(epoch - round(epoch)) < 1e-6 else round(epoch, 2)


class KeepBestEpoch(TrainerCallback):
    """After every epoch, score the model on validation with ``score(model)`` (higher is better) and keep a copy of
    the best epoch's weights in memory; at the end of training load them back, so that what is evaluated, tested
    and saved is the best epoch. Every process scores (the same full validation split) and so keeps the same epoch.
    ``score`` may return ``(value, detail)`` where it also chose something with the value (the text recipe's reading
    of long notes): the best epoch's ``detail`` is kept as ``best_detail`` and survives a resume like the weights.

    Every checkpoint also holds the best epoch so far (``best_epoch.safetensors`` and ``best_epoch.json``, written
    by the main process after Trainer's own files), and :meth:`resume_from` reads them back: a run resumed from
    that checkpoint keeps the epoch the uninterrupted run keeps. A checkpoint without them (saved before the first
    epoch ended, or by a run without this callback) resumes choosing among the epochs still to train.

    Epochs are named by :func:`epoch_label`: where ``--max_steps`` ends training inside an epoch, that last partial
    epoch is scored too and named by its fraction (2.4), in the log, ``train_best_epoch`` and the model card."""

    WEIGHTS, STATE = "best_epoch.safetensors", "best_epoch.json"

    def __init__(self, score: Callable[[object], float | tuple[float, dict]], metric_name: str):
        self.score, self.metric_name = score, metric_name
        self.best_value, self.best_epoch, self.best_state, self.history = -math.inf, None, None, []
        self.best_detail: dict | None = None  # what score() chose with its value, e.g. a reading of long notes

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        scored = self.score(model)
        value, detail = (float(scored[0]), scored[1]) if isinstance(scored, tuple) else (float(scored), None)
        epoch = epoch_label(state.epoch or 0)
        self.history.append((epoch, value))
        if state.is_world_process_zero:
            logger.info("epoch %s%s: validation %s %.4f", epoch,
                        " (partial: --max_steps ended training inside it)" if isinstance(epoch, float) else "",
                        self.metric_name, value)
            if os.environ.get(EPOCH_METRICS_FILE):  # recipes/tune.py reads it while the run goes on
                with open(os.environ[EPOCH_METRICS_FILE], "a", encoding="utf-8") as f:
                    f.write(json.dumps({"epoch": epoch, "metric": self.metric_name, "value": value}) + "\n")
        if value > self.best_value:  # ties keep the earlier epoch
            self.best_value, self.best_epoch, self.best_detail = value, epoch, detail
            self.best_state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}

    def on_save(self, args, state, control, **kwargs):
        if self.best_state is None or not state.is_world_process_zero:
            return
        from safetensors.torch import save_file

        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if not os.path.isdir(folder):
            return
        save_file(self.best_state, os.path.join(folder, self.WEIGHTS))
        with open(os.path.join(folder, self.STATE), "w", encoding="utf-8") as f:
            json.dump({"metric": self.metric_name, "best_epoch": self.best_epoch, "best_value": self.best_value,
                       "best_detail": self.best_detail, "history": self.history}, f)

    def resume_from(self, checkpoint: str | None) -> None:
        """Take the best epoch so far from ``checkpoint`` (a folder :meth:`on_save` wrote to), when it holds one."""
        if checkpoint is None:
            return
        weights, saved = os.path.join(checkpoint, self.WEIGHTS), os.path.join(checkpoint, self.STATE)
        if not (os.path.isfile(weights) and os.path.isfile(saved)):
            return
        from safetensors.torch import load_file

        with open(saved, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("metric") != self.metric_name:
            return
        self.best_epoch, self.best_value = epoch_label(float(data["best_epoch"])), float(data["best_value"])
        self.best_detail = data.get("best_detail")
        self.history = [(epoch_label(float(epoch)), float(value)) for epoch, value in data["history"]]
        self.best_state = load_file(weights)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.best_state is not None and self.history and self.best_epoch != self.history[-1][0]:
            model.load_state_dict(self.best_state)
            if state.is_world_process_zero:
                logger.info("kept epoch %s of %s (validation %s %.4f)", self.best_epoch, self.history[-1][0],
                            self.metric_name, self.best_value)
        self.best_state = None

    def results(self) -> dict[str, float]:
        """``train_best_epoch`` and the validation metric it had (empty when no epoch was scored)."""
        if self.best_epoch is None:
            return {}
        return {"train_best_epoch": self.best_epoch, f"train_best_eval_{self.metric_name}": self.best_value}


def keep_best_epoch(trainer, has_validation: bool, metric_name: str,
                    score: Callable[[object], float | tuple[float, dict]],
                    checkpoint: str | None = None) -> KeepBestEpoch | None:
    """Add :class:`KeepBestEpoch` to ``trainer`` when :func:`wants_best_epoch` says so, with the best epoch so far
    of ``checkpoint`` (the one the run resumes from, or None); the callback, or None."""
    if not wants_best_epoch(trainer.args, has_validation):
        return None
    callback = KeepBestEpoch(score, metric_name)
    callback.resume_from(checkpoint)
    trainer.add_callback(callback)
    return callback
