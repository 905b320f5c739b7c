#!/usr/bin/env python
"""Fine-tune a pretrained encoder for medical text classification (single- or multi-label, single texts or pairs).

    python recipes/text_classification/train.py --config recipes/text_classification/configs/demo.yaml
    accelerate launch recipes/text_classification/train.py --model_name_or_path <folder> \\
        --train_file train.csv --validation_file dev.csv --test_file test.csv --output_dir out --do_train --do_eval --do_predict

Steps, the same in every recipe: 1 arguments -> 2 logging, output folder, checkpoint -> 3 seed -> 4 data -> 5 labels
-> 6 model -> 7 preprocessing -> 8 Trainer -> 9 train -> 10 evaluate -> 11 predict -> 12 save. Every check on the
input runs before the model is loaded, so bad data fails in seconds with one line naming the file and row.

Notes longer than --max_seq_length are read in overlapping windows and scored once per note (--long_text chunk,
the default: a note is read by the mean of its windows or by its first window, whichever scores better on the
validation split) or truncated (--long_text truncate).

Outputs in --output_dir: the model and tokenizer (loads with pipeline("text-classification")), all_results.json
(+ train_/eval_/test_results.json), {eval,test}_report.json, {eval,test}_confusion_matrix.png, {eval,test}_roc.png,
{eval,test}_reliability.png, test_predictions.csv, thresholds.json (multi-label), test_explanations.{html,json}
(--explain N; they hold note text) and the model card README.md. With a validation split the probabilities are
calibrated (temperature scaling folded into the head; --calibration none keeps them raw). With --conformal_alpha
every prediction also gets a conformal prediction set (the prediction_set column; coverage and set size in the
results; docs/prediction-sets-and-subgroups.md). With --subgroup_columns sex,site the labelled splits are also
scored per group of those columns (never fed to the model): {eval,test}_subgroups.png, a table in
{eval,test}_report.json and the model card.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

try:
    import shared.core.args  # noqa: F401  (this project's package, and through it torch and transformers)
except ImportError as error:
    print(f"error: this project is not installed ({error}): install it as its README.md says, torch first, then "
          "`pip install -e .`", file=sys.stderr)
    raise SystemExit(2) from None

import numpy as np
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer

from shared.core.args import ClassifierModelArguments, DataArguments, TrainingArguments, main_guard, parse_args
from shared.core.args import recipe_defaults, start_run
from shared.core.errors import DataError
from shared.core.outputs import remove_earlier_results
from shared.core.resume import EpochSeededSampling, train_with_resume
from shared.data.labels import encode_labels, label_counts, names_in, require_classes, sort_label_names
from shared.data.long_text import AGGREGATIONS, CHOOSE_ON_VALIDATION, MODES, READINGS, TRAIN_WINDOWS
from shared.data.long_text import WindowPerEpoch, long_text_settings, notes_from_windows, windows_of_notes
from shared.data.overlap import texts_also_in_train, warn_shared_examples
from shared.data.splits import carve_splits, check_split_sources, sample_limit, splits_to_carve, table_groups
from shared.data.splits import warn_shared_groups
from shared.data.tables import LabelledTableArguments, load_splits
from shared.evaluation.calibration import calibrate, saved_calibration
from shared.evaluation.conformal import SET_HEADLINE, ConformalArguments, plan_conformal, saved_conformal
from shared.evaluation.forward import predict_in_order
from shared.evaluation.metrics import MULTI_LABEL_HEADLINE, SINGLE_LABEL_HEADLINE, selection_macro_f1, sigmoid, softmax
from shared.evaluation.metrics import tune_thresholds
from shared.evaluation.reports import decision_thresholds, prefixed, save_all_results, saved_thresholds
from shared.evaluation.reports import score_and_report, subgroup_section, training_card, write_model_card
from shared.evaluation.reports import write_predictions
from shared.evaluation.subgroups import SubgroupArguments, require_subgroup_columns
from shared.tasks import task_record
from shared.text.data import NoteEncoder, read_text_columns
from shared.training.adaptive import Derived, adapt_to_training_data, keep_best_epoch, wants_best_epoch
from shared.training.imbalance import oversampled_order, training_loss
from shared.training.lora import count_parameters, save_trained
from shared.training.models import classification_config, load_pretrained, max_sequence_length, model_for_run
from shared.training.models import requested_max_length, require_fast, trained_labels
from shared.training.optim import optimizer_cls_and_kwargs
from shared.trust.explain import explain_text_predictions

logger = logging.getLogger(__name__)


@dataclass
class TextDataArguments(LabelledTableArguments, DataArguments):
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    text_pair_column: str | None = field(
        default=None, metadata={"help": "Optional second text column (e.g. question + context), encoded as a pair."}
    )
    label_column: str = field(
        default="label",
        metadata={"help": "Column holding the label; a list of labels per row (a JSON list, or names split on "
                          "--label_separator) makes the task multi-label."},
    )
    label_separator: str | None = field(
        default=None, metadata={"help": "Split label cells on this string (e.g. ';') for multi-label data."}
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "Tokens per window (--long_text chunk) or per example (truncate), special "
                                       "tokens included. Capped by what the model reads."}
    )
    long_text: str | None = field(
        default=None,
        metadata={"help": "Examples longer than --max_seq_length: 'chunk' cuts them into overlapping windows, trains "
                          "on every window with the note's label and predicts each note from all its windows; "
                          "'truncate' keeps the first window only (and counts what it cuts). Default: chunk, or the "
                          "mode a fine-tuned folder was trained with when only evaluating / predicting.",
                  "choices": list(MODES)},
    )
    stride: int | None = field(
        default=None, metadata={"help": "Tokens shared by consecutive windows (--long_text chunk). Default: a "
                                        "quarter of the window, at most 32 (or the fine-tuned folder's)."}
    )
    chunk_aggregation: str | None = field(
        default=None,
        metadata={"help": "How a note's windows make its prediction (--long_text chunk): the 'mean' or the 'max' of "
                          "their logits, per class, or the 'first' window's alone; 'auto' scores the mean and the "
                          "first window on the validation split after every epoch and keeps the better reading with "
                          "its epoch (the mean without a validation split). Default: auto when training, else the "
                          "fine-tuned folder's.", "choices": [*AGGREGATIONS, CHOOSE_ON_VALIDATION]},
    )
    train_windows: str | None = field(
        default=None,
        metadata={"help": "Which windows train each epoch (--long_text chunk): 'all' of every note, or "
                          "'one_per_epoch' per note, each note's windows in turn (the training cost of one window "
                          "per note). Default: all.", "choices": list(TRAIN_WINDOWS)},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.max_seq_length < 8:
            raise DataError(f"--max_seq_length must be at least 8, got {self.max_seq_length}")
        if self.label_separator == "":
            raise DataError("--label_separator is empty")
        if self.stride is not None and self.stride < 0:
            raise DataError(f"--stride must be at least 0, got {self.stride}")


# This recipe's defaults; the command line and --config override every one (see the README for why each holds).
RECIPE_DEFAULTS = {
    **recipe_defaults(),
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "learning_rate": 2e-4,
    "num_train_epochs": 3.0,
    "warmup_steps": 0.06,  # a float below 1 is a fraction of the training steps
    "weight_decay": 0.01,
    "train_sampling_strategy": "group_by_length",  # batches of similar length waste little compute on padding
    "optim": "adamw_torch_fused",
    "freeze_embeddings": True,
    "freeze_layers": 1 / 3,  # the bottom third of the encoder: no backward pass through it
}
WHERE_FROM = {"train": "--train_file (or --dataset_name)", "validation": "--validation_file (or --dataset_name)",
              "test": "--test_file (or --dataset_name)"}


@main_guard
def main(args: list[str] | None = None) -> dict[str, float]:
    # 1. Arguments: command line > --config > RECIPE_DEFAULTS.
    model_args, data_args, training_args, set_args, subgroup_args = parse_args(
        ClassifierModelArguments, TextDataArguments, TrainingArguments, ConformalArguments, SubgroupArguments,
        defaults=RECIPE_DEFAULTS, args=args, description=__doc__)

    # 2. Logging (metadata only), the output folder and the checkpoint to resume from, before any data is read;
    # 3. the seed, before anything random (both in shared/core/args.py: start_run).
    run = start_run(training_args)

    # 4. Data: read and validate every split before the model is loaded; carve validation / a test fold out of the
    # training data where asked (stratified by label; --group_column keeps each patient in one split).
    files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    tables = load_splits(data_args, {split: files[split] for split in run.splits})
    carve = splits_to_carve(data_args, training_args, tables)
    check_split_sources(run.splits, [*tables, *carve], WHERE_FROM)
    labels = {}
    for split, table in list(tables.items()):  # the same reading as predict.py's (shared/text/data.py)
        limit = sample_limit(data_args, split)
        if limit is not None and limit < len(table):
            tables[split] = table = table.select(range(limit))
        parsed = read_text_columns(table, data_args.text_column, data_args.text_pair_column, data_args.label_column,
                                   data_args.label_separator, require_labels=split != "test")
        if parsed is not None:
            labels[split] = parsed
    split_rows, split_groups = {}, {}
    if carve:
        train, train_labels = tables["train"], labels["train"]
        groups = table_groups(train, data_args.group_column) if data_args.group_column else None
        for split, idx in carve_splits(len(train), data_args, carve, training_args.seed, train_labels, groups).items():
            tables[split], labels[split], split_rows[split] = train.select(idx), [train_labels[i] for i in idx], idx
            if groups is not None:
                split_groups[split] = [groups[i] for i in idx]  # test CIs resample whole groups
    if data_args.group_column:  # supplied validation/test files with the column: same patients as training?
        for split, table in tables.items():
            if split not in split_groups and (split == "train" or data_args.group_column in table.column_names):
                split_groups[split] = table_groups(table, data_args.group_column)
        warn_shared_groups(split_groups, data_args.group_column)
    text_columns = [data_args.text_column] + ([data_args.text_pair_column] if data_args.text_pair_column else [])
    also_in_train = texts_also_in_train({split: zip(*(table[c] for c in text_columns))
                                         for split, table in tables.items()})
    warn_shared_examples(also_in_train, {split: len(table) for split, table in tables.items()}, "texts",
                         "identical text")
    leaks = {split: {"texts_also_in_train": n} for split, n in also_in_train.items()}

    # 5. Labels: the classes of the training data (or of the model folder when only evaluating / predicting).
    if "train" in labels:
        multi_label = isinstance(labels["train"][0], list)
        label_names = require_classes(sort_label_names(names_in(labels["train"])), multi_label, tables["train"].source)
    else:
        label_names, multi_label = trained_labels(load_pretrained(AutoConfig, model_args))
    known_as = "the training data" if "train" in labels else "the model's labels"
    label2id = {name: i for i, name in enumerate(label_names)}
    label_ids = {split: encode_labels(values, label2id, multi_label, tables[split].where, known_as)
                 for split, values in labels.items()}
    logger.info("%s task with %d labels", "multi-label" if multi_label else "single-label", len(label_names))
    # --conformal_alpha: the validation rows that calibrate prediction sets, apart from the temperature's; a split
    # too small for the alpha fails here, before the model loads (shared/evaluation/conformal.py)
    set_plan = plan_conformal(set_args, label_ids.get("validation"), multi_label, label_names,
                              training_args.do_train, training_args.seed)
    # --subgroup_columns: read from the labelled tables for the report, never fed to the model
    require_subgroup_columns({split: tables[split] for split in labels}, subgroup_args.columns,
                             [*text_columns, data_args.label_column], multi_label)

    def subgroups(split: str) -> dict | None:
        return {c: tables[split][c] for c in subgroup_args.columns} if subgroup_args.columns else None

    # 6. Model and tokenizer: a fresh head over the labels (training), or the fine-tuned folder as saved.
    tokenizer = load_pretrained(AutoTokenizer, model_args)
    config = classification_config(model_args, label_names, multi_label)
    model, frozen_layers = model_for_run(AutoModelForSequenceClassification, model_args, config, training_args)
    trainable, total = count_parameters(model)
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)

    # 7. Preprocessing: tokenization into windows (chunk: every window of every note; truncate: the first one, and
    # what it cuts is counted and reported, never silent). Each window remembers its note.
    max_length = max_sequence_length(requested_max_length(data_args, config, training_args.do_train), tokenizer, config)
    long_text = long_text_settings(data_args.long_text, data_args.stride, data_args.chunk_aggregation,
                                   data_args.train_windows, max_length, None if training_args.do_train else config)
    chunk = long_text.mode == "chunk"
    if chunk:
        require_fast(tokenizer, "--long_text chunk needs its overflowing windows (or use --long_text truncate)")
    encoder = NoteEncoder(tokenizer, max_length, long_text)  # the predictor's encoder too (shared/text/data.py)
    truncated, tokenized, note_of_window = {}, {}, {}

    def tokenize(batch, indices):
        encoded = encoder(batch[data_args.text_column],
                          batch[data_args.text_pair_column] if data_args.text_pair_column else None)
        encoded["note"] = [indices[i] for i in encoded["note"]]
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    for split, table in tables.items():
        pairs = table[data_args.text_pair_column] if data_args.text_pair_column else None
        truncated[split] = encoder.check(table[data_args.text_column], pairs, table.where, data_args.text_column)
        if truncated[split]:
            logger.warning("%s: %d of %d examples (%.1f%%) are longer than %d tokens and were truncated",
                           split, truncated[split], len(table), 100 * truncated[split] / len(table), max_length)
        encoded = table.dataset.map(tokenize, batched=True, with_indices=True, remove_columns=table.column_names)
        note_of_window[split] = encoded["note"]
        encoded = encoded.remove_columns("note")
        if chunk and len(encoded) > len(table):
            logger.info("%s: %d notes in %d windows", split, len(table), len(encoded))
        if split in label_ids:
            encoded = encoded.add_column("labels", [label_ids[split][note] for note in note_of_window[split]])
        tokenized[split] = encoded
    if chunk:  # auto chooses on validation epochs with long notes; without them a note is read whole (the mean)
        if long_text.undecided and not (wants_best_epoch(training_args, "validation" in tokenized)
                                        and len(tokenized["validation"]) > len(tables["validation"])):
            long_text.choose(None)
        logger.info("long examples read in windows of %d tokens: %s", max_length, long_text.describe())

    # 8. Trainer: the batch size, epochs and class weighting the training data calls for where the user set none
    # (shared/training/adaptive.py); class imbalance through compute_loss_func (weighted / focal loss) or oversampling,
    # both counted in notes (an oversampled note brings all its windows); the best epoch on validation kept.
    loss_func, train_notes, derived = None, len(tables.get("train", ())), Derived()
    if training_args.do_train:
        notes = range(train_notes)
        if model_args.oversample:
            if multi_label:
                raise DataError("--oversample supports single-label data only; use --class_weighting for multi-label")
            notes = oversampled_order(label_ids["train"], seed=training_args.seed)
            train_notes = len(notes)
            logger.info("oversampled training set: %d examples", train_notes)
        if chunk and long_text.train_windows == "one_per_epoch":
            tokenized["train"] = WindowPerEpoch(tokenized["train"], note_of_window["train"], notes, training_args.seed)
        elif model_args.oversample:
            tokenized["train"] = tokenized["train"].select(windows_of_notes(note_of_window["train"], notes))
        derived = adapt_to_training_data(training_args, model_args, len(tokenized["train"]),
                                         RECIPE_DEFAULTS["num_train_epochs"],
                                         None if multi_label else label_ids["train"], len(label_names))
        loss_func = training_loss(label_ids["train"], len(label_names), model_args.class_weighting,
                                  model_args.focal_gamma, multi_label,
                                  label_smoothing=training_args.label_smoothing_factor)
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized.get("train"),
        eval_dataset=tokenized.get("validation"),
        processing_class=tokenizer,
        data_collator=collator,
        compute_loss_func=loss_func,
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(model, training_args, model_args.layerwise_lr_decay),
        callbacks=[EpochSeededSampling()],  # a resumed run trains in the same order (shared/core/resume.py)
    )
    output_dir, is_main = training_args.output_dir, trainer.is_world_process_zero()
    if is_main:
        remove_earlier_results(output_dir, run.earlier_results)

    def window_logits(split: str) -> np.ndarray:
        return np.stack(predict_in_order(trainer.model, tokenized[split], collator,
                                         training_args.per_device_eval_batch_size, tokenized[split]["length"]))

    def predict_logits(split: str) -> np.ndarray:
        """One row of logits per note (chunk: aggregated from its windows)."""
        return notes_from_windows(window_logits(split), note_of_window[split], len(tables[split]),
                                  long_text.aggregation)

    def selection_score(model) -> float | tuple[float, dict]:
        """Validation macro-F1 of this epoch; with --chunk_aggregation auto, of each reading of the same windows'
        logits, the better one with its name (ties keep the mean: it reads the whole note)."""
        if not long_text.undecided:
            return selection_macro_f1(label_ids["validation"], probabilities(predict_logits("validation")), multi_label)
        logits = window_logits("validation")
        scores = {how: selection_macro_f1(label_ids["validation"], probabilities(notes_from_windows(
            logits, note_of_window["validation"], len(tables["validation"]), how)), multi_label) for how in READINGS}
        best = max(READINGS, key=lambda how: (scores[how], how == READINGS[0]))
        if trainer.is_world_process_zero():
            logger.info("validation macro_f1 by reading: %s", ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        return scores[best], {"aggregation": best, "scores": scores}

    def probabilities(logits: np.ndarray) -> np.ndarray:
        return sigmoid(logits) if multi_label else softmax(logits)

    def uncalibrated(logits: np.ndarray) -> np.ndarray | None:
        """The probabilities the head gave before calibration (for the before/after metrics), or None."""
        return probabilities(calibration.undo(logits)) if calibration else None

    best_epoch = keep_best_epoch(trainer, "validation" in tokenized, "macro_f1", selection_score, run.checkpoint)

    # 9. Train.
    results: dict[str, float] = {}
    if training_args.do_train:
        results.update(train_with_resume(trainer, run.checkpoint).metrics)
        results.update(train_samples=train_notes, train_windows=len(tokenized["train"]),
                       train_truncated_examples=truncated["train"], train_trainable_parameters=trainable,
                       train_batch_size=training_args.per_device_train_batch_size,
                       **(best_epoch.results() if best_epoch else {}))
        if chunk and long_text.undecided:  # from here on notes are read the chosen way, and saved so
            long_text.choose(best_epoch.best_detail if best_epoch else None)
            logger.info("long notes read as: %s", long_text.describe())

    # 10. Evaluate on validation: temperature scaling is fitted there and folded into the head
    # (shared/evaluation/calibration.py), then multi-label decision thresholds are tuned on the calibrated
    # probabilities (never on test); with --conformal_alpha the temperature sees only its part of the split and the
    # prediction sets are calibrated on the other (shared/evaluation/conformal.py).
    thresholds = saved_thresholds(trainer.model.config, label_names) if multi_label else None
    calibration = None if training_args.do_train else saved_calibration(trainer.model.config)  # already in the head
    conformal = None if training_args.do_train else saved_conformal(trainer.model.config)
    if "validation" in tokenized:
        logits = predict_logits("validation")
        if training_args.do_train and model_args.calibration == "temperature":
            fit_rows = set_plan.temperature_rows if set_plan else np.arange(len(logits))
            calibration = calibrate(trainer, logits[fit_rows], label_ids["validation"][fit_rows], multi_label,
                                    len(label_names))
            logits = calibration.apply(logits) if calibration else logits  # what the head now gives
        probs = probabilities(logits)
        if multi_label and training_args.do_train:
            thresholds = tune_thresholds(label_ids["validation"], probs)
        if set_plan:
            conformal = set_plan.fit(probs, label_ids["validation"])
        metrics = score_and_report(output_dir if is_main else None, "eval", label_ids["validation"], probs, label_names,
                                   multi_label, thresholds, uncalibrated=uncalibrated(logits), conformal=conformal,
                                   set_rows=set_plan.temperature_rows if set_plan else None,
                                   subgroups=subgroups("validation"), subgroup_min_size=subgroup_args.subgroup_min_size)
        results.update(prefixed({**metrics, "samples": len(probs), "windows": len(tokenized["validation"]),
                                 "truncated_examples": truncated["validation"], **leaks.get("validation", {})},
                                "eval"))

    # 11. Predict on test: the predictions file always; metrics with bootstrap CIs, report and plots when labelled.
    if "test" in tokenized:
        logits = predict_logits("test")
        probs = probabilities(logits)
        labelled = "test" in label_ids
        if labelled:
            metrics = score_and_report(output_dir if is_main else None, "test", label_ids["test"], probs, label_names,
                                       multi_label, thresholds, data_args.bootstrap_resamples, training_args.seed,
                                       split_groups.get("test"), uncalibrated(logits), conformal, subgroups=subgroups("test"),
                                       subgroup_min_size=subgroup_args.subgroup_min_size)
            results.update(prefixed({**metrics, "samples": len(probs), "windows": len(tokenized["test"]),
                                     "truncated_examples": truncated["test"], **leaks.get("test", {})}, "test"))
        if is_main:
            write_predictions(output_dir, split_rows.get("test", range(len(probs))),  # a fold: rows of the train file
                              probs, label_names, multi_label, thresholds, data_args.label_separator,
                              gold=labels["test"] if labelled else None,
                              prediction_sets=conformal.named(probs, label_names) if conformal else None)
        if is_main and data_args.explain:  # word attributions: holds note text, like the predictions
            explain_text_predictions(output_dir, "test", trainer.model, tokenizer, tables["test"][data_args.text_column],
                                     tables["test"][data_args.text_pair_column] if data_args.text_pair_column else None,
                                     split_rows.get("test", range(len(probs))), probs, label_names, multi_label,
                                     thresholds, max_length, long_text.stride if chunk else None,
                                     long_text.aggregation, data_args.explain)

    # 12. Save: the model (plain, merged LoRA, or adapter + head), results and the model card. Every process takes
    # part in gathering FSDP-sharded weights (None otherwise); only the main one writes.
    cuts = decision_thresholds(label_names, thresholds) if multi_label else None  # config.json + thresholds.json
    if training_args.do_train:  # config.json records the task, its input columns and how long notes are read
        save_trained(trainer, output_dir, model_args, tokenizer,
                     config_updates={**task_record("text_classification", text_column=data_args.text_column,
                                                   text_pair_column=data_args.text_pair_column,
                                                   label_column=data_args.label_column,
                                                   label_separator=data_args.label_separator),
                                     **long_text.as_config(), "max_seq_length": max_length,
                                     **({"decision_thresholds": cuts} if cuts else {}),
                                     "calibration": calibration.saved() if calibration else None,
                                     "conformal": conformal.saved() if conformal else None})
    if is_main:
        save_all_results(output_dir, results, thresholds=cuts)
        write_model_card(
            output_dir,
            title="Medical text classifier",
            base_model=model_args.model_name_or_path,
            pipeline_tag="text-classification",
            task_description=(f"{'Multi-label' if multi_label else 'Single-label'} classification into "
                              f"{len(label_names)} classes: {', '.join(label_names)}."),
            data_summary={split: {"examples": len(table), **({"labels": label_counts(label_ids[split], label_names)}
                                                             if split in label_ids else {})}
                          for split, table in tables.items()},
            metrics=results,
            sections=subgroup_section(output_dir, "test") if subgroup_args.columns else None,
            headline_metrics=(MULTI_LABEL_HEADLINE if multi_label else SINGLE_LABEL_HEADLINE)
            + (SET_HEADLINE if conformal else []),
            training=training_card(training_args, model_args, frozen_layers, trainable, total, derived, best_epoch,
                                   calibration, max_seq_length=max_length, long_text=long_text.describe(),
                                   **({"prediction_sets": conformal.describe()} if conformal else {})),
            limitations=[
                (f"Notes longer than {max_length} tokens are read in overlapping windows by this recipe "
                 "(`--do_predict`); `pipeline()` on this folder reads a note in one pass (truncated where asked), "
                 "so long notes can score differently there."
                 if chunk else f"Inputs longer than {max_length} tokens are truncated "
                 f"({sum(truncated.values())} of {sum(len(t) for t in tables.values())} examples here)."),
                *(["Multi-label decisions use per-label thresholds tuned on the validation set (`thresholds.json`)."]
                  if multi_label else []),
            ],
        )
        logger.info("results, predictions and model written to %s", output_dir)
    return results


if __name__ == "__main__":
    main()
