#!/usr/bin/env python
"""Fine-tune a pretrained encoder for the assertion status of clinical problems (i2b2 2010 .txt + .con + .ast).

    python recipes/assertion_status/train.py --config recipes/assertion_status/configs/demo.yaml \\
        --model_name_or_path <folder>
    python recipes/assertion_status/train.py --model_name_or_path <folder> --train_file notes/train \\
        --validation_file notes/dev --test_file ner_out/test_predictions --output_dir out --do_train --do_eval --do_predict

Each problem concept of a .con file is one example: its sentence with [E] ... [/E] around the concept (marker tokens
added to the tokenizer, the embeddings resized), classified as present, absent, possible, conditional, hypothetical
or associated_with_someone_else. A test folder without .ast files is predicted, not scored; --test_concepts_dir
takes the test notes' concepts from another folder, e.g. the NER recipe's test_predictions/: notes go concept ->
assertion end to end.

Steps, the same in every recipe: 1 arguments -> 2 logging, output folder, checkpoint -> 3 seed -> 4 data -> 5 labels
-> 6 model -> 7 preprocessing -> 8 Trainer -> 9 train -> 10 evaluate -> 11 predict -> 12 save. Every check on the
input runs before the model is loaded, so bad data fails in seconds with one line naming the file and line.

Outputs in --output_dir: the model and tokenizer (with the marker tokens), all_results.json (+ train_/eval_/
test_results.json: accuracy, macro/micro/weighted F1 with bootstrap CIs over notes), {eval,test}_report.json (P/R/F1
per assertion), {eval,test}_confusion_matrix.png, {eval,test}_reliability.png, test_predictions.csv (one row per
concept: note, concept (its line:first-last tokens), label, prediction, probabilities; no text), test_predictions/
(each test note as .txt + .con + .ast with the predicted assertions: note text, sensitive), test_explanations.{html,
json} (--explain N: word attributions over the marked sentence of the first N test concepts; note words, sensitive)
and the model card README.md. With --conformal_alpha each concept also gets a conformal prediction set of
assertions (the prediction_set column; coverage and set size in the results; docs/prediction-sets-and-subgroups.md).
With --subgroup_columns site --subgroup_file notes.csv (one row per note: its name and its site) the labelled splits
are also scored per group of the concepts' notes: {eval,test}_subgroups.png and a table in {eval,test}_report.json.
With --use_lora the folder holds the adapter, the head and the trained [E] / [/E]
embedding rows (or, with --merge_lora, the merged model).
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

from shared.concepts.data import read_assertion_split, write_assertions
from shared.concepts.encode import concept_labels, marked_classifier, marked_datasets
from shared.concepts.i2b2 import ASSERTIONS
from shared.concepts.markers import ENTITY
from shared.core.args import ClassifierModelArguments, DataArguments, TrainingArguments, main_guard, parse_args
from shared.core.args import recipe_defaults, start_run
from shared.core.errors import DataError
from shared.core.outputs import remove_earlier_results
from shared.core.resume import train_with_resume
from shared.data.labels import label_counts
from shared.data.splits import carve_splits, check_split_sources, sample_limit, splits_to_carve
from shared.evaluation.calibration import calibrate, saved_calibration
from shared.evaluation.conformal import SET_HEADLINE, ConformalArguments, plan_conformal, saved_conformal
from shared.evaluation.forward import predict_in_order
from shared.evaluation.metrics import SINGLE_LABEL_HEADLINE, selection_macro_f1, softmax
from shared.evaluation.reports import prefixed, save_all_results, score_and_report, subgroup_section, training_card
from shared.evaluation.reports import write_model_card
from shared.evaluation.reports import write_predictions
from shared.evaluation.subgroups import SubgroupArguments, note_subgroups
from shared.tasks import task_record
from shared.training.adaptive import keep_best_epoch
from shared.training.lora import count_parameters, save_trained
from shared.training.models import max_sequence_length, requested_max_length
from shared.training.trainer import classifier_trainer
from shared.trust.explain import explain_marked_predictions

logger = logging.getLogger(__name__)


@dataclass
class AssertionDataArguments(DataArguments):
    max_seq_length: int = field(
        default=128, metadata={"help": "Tokens per marked sentence, special tokens included; longer sentences keep "
                                       "the words nearest the concept (counted in *_cut_examples)."})
    subgroup_file: str | None = field(
        default=None, metadata={"help": "With --subgroup_columns: a table (CSV/TSV/JSON/parquet) with one row per note, "
                                        "a 'note' column naming it (its file name) and the subgroup columns (e.g. "
                                        "site, sex); each concept is scored in its note's groups. Never fed to the "
                                        "model."})
    test_concepts_dir: str | None = field(
        default=None, metadata={"help": "Take the test notes' concepts from the .con files in this folder (the NER "
                                        "recipe's test_predictions/): concept -> assertion end to end; the test "
                                        "split is then predicted, not scored."})

    def __post_init__(self):
        super().__post_init__()
        if self.max_seq_length < 8:
            raise DataError(f"--max_seq_length must be at least 8, got {self.max_seq_length}")
        if self.dataset_name:
            raise DataError("--dataset_name: this recipe reads i2b2 folders (--train_file, --validation_file, "
                            "--test_file), not Hub datasets")
        if self.group_column:
            raise DataError("--group_column: splits carved here keep each note's concepts together already")
        if self.test_concepts_dir is not None and self.test_file is None:
            raise DataError("--test_concepts_dir gives the concepts of the --test_file notes: give --test_file too")


# This recipe's defaults; the command line and --config override every one (see the README for why each holds).
RECIPE_DEFAULTS = {
    **recipe_defaults(),
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "learning_rate": 2e-4,
    "num_train_epochs": 3.0,
    "warmup_steps": 0.06,  # a float below 1 is a fraction of the training steps
    "weight_decay": 0.01,
    "train_sampling_strategy": "group_by_length",
    "optim": "adamw_torch_fused",
    "freeze_embeddings": False,  # the added [E] / [/E] embeddings must learn what marks the concept
    "freeze_layers": 1 / 3,
}
WHERE_FROM = {"train": "--train_file (an i2b2 folder with .ast files)",
              "validation": "--validation_file (an i2b2 folder with .ast files)",
              "test": "--test_file (an i2b2 folder; without .ast files it is predicted only)"}


@main_guard
def main(args: list[str] | None = None) -> dict[str, float]:
    # 1. Arguments: command line > --config > RECIPE_DEFAULTS.
    model_args, data_args, training_args, set_args, subgroup_args = parse_args(
        ClassifierModelArguments, AssertionDataArguments, TrainingArguments, ConformalArguments, SubgroupArguments,
        defaults=RECIPE_DEFAULTS, args=args, description=__doc__)
    if bool(subgroup_args.columns) != bool(data_args.subgroup_file):
        raise DataError("--subgroup_columns and --subgroup_file go together: the columns are read from the file's "
                        "one row per note")
    # 2. Logging (metadata only), the output folder and the checkpoint to resume from, before any data is read;
    # 3. the seed, before anything random (both in shared/core/args.py: start_run).
    run = start_run(training_args)

    # 4. Data: every problem concept of every split, checked against its note (.con, .ast) before the model loads;
    # validation / a test fold carved out of the training notes where asked, each note's concepts kept together.
    files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    splits = {split: read_assertion_split(files[split], data_args.test_concepts_dir if split == "test" else None)
              for split in run.splits if files[split]}
    carve = splits_to_carve(data_args, training_args, splits)
    check_split_sources(run.splits, [*splits, *carve], WHERE_FROM)
    for split, concepts in list(splits.items()):
        limit = sample_limit(data_args, split)
        if limit is not None and limit < len(concepts):
            splits[split] = concepts.select(range(limit))
        if split != "test" and splits[split].labels is None:
            raise DataError(f"{split} data needs .ast files (labels)", path=splits[split].source)
    split_rows = {}
    if carve:
        train = splits["train"]
        for split, idx in carve_splits(len(train), data_args, carve, training_args.seed, train.labels,
                                       train.groups).items():
            splits[split], split_rows[split] = train.select(idx), idx

    # --subgroup_columns: each labelled concept takes its note's values from --subgroup_file, never fed to the model
    scored = [split for split in ("validation", "test") if split in splits and splits[split].labels is not None]
    subgroup_values = note_subgroups(data_args.subgroup_file, subgroup_args.columns,
                                     {split: splits[split].locations()["note"] for split in scored}
                                     ) if subgroup_args.columns else {}

    # 5. Labels: the assertions of the training data, in i2b2's order (or the model folder's when evaluating).
    label_names, label_ids = concept_labels(splits, model_args, ASSERTIONS)
    logger.info("%d assertion classes: %s", len(label_names), ", ".join(label_names))
    # --conformal_alpha: the validation concepts that calibrate prediction sets, apart from the temperature's; a
    # split too small for the alpha fails here, before the model loads (shared/evaluation/conformal.py)
    set_plan = plan_conformal(set_args, label_ids.get("validation"), False, label_names, training_args.do_train,
                              training_args.seed)

    # 6. Model and tokenizer: the marker tokens added (a fine-tuned folder has them) and the embeddings resized;
    # under --use_lora the [E] / [/E] rows train with the adapter (new tokens: no pretrained row knows them).
    tokenizer, config, model, frozen_layers = marked_classifier(model_args, training_args, label_names, ENTITY)
    trainable, total = count_parameters(model)
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)

    # 7. Preprocessing: each marked sentence tokenized; a long one keeps the words nearest its concept (counted):
    # shared/concepts/encode.py, the one encoding of both concept recipes.
    max_length = max_sequence_length(requested_max_length(data_args, config, training_args.do_train), tokenizer, config)
    tokenized, cut = marked_datasets(tokenizer, splits, label_ids, max_length, nearest="concept")

    # 8. Trainer: batch size, epochs and class weighting from the training data where the user set none
    # (shared/training/adaptive.py; "present" outnumbers the rest); the best epoch on validation kept.
    trainer, collator, derived, train_examples = classifier_trainer(
        model, tokenizer, tokenized, label_ids, len(label_names), model_args, training_args,
        RECIPE_DEFAULTS["num_train_epochs"])
    output_dir, is_main = training_args.output_dir, trainer.is_world_process_zero()
    if is_main:
        remove_earlier_results(output_dir, run.earlier_results)

    def predict_logits(split: str) -> np.ndarray:
        columns = ["input_ids", "attention_mask"]
        return np.stack(predict_in_order(trainer.model, tokenized[split].select_columns(columns), collator,
                                         training_args.per_device_eval_batch_size, tokenized[split]["length"]))

    def uncalibrated(logits: np.ndarray) -> np.ndarray | None:
        return softmax(calibration.undo(logits)) if calibration else None

    best_epoch = keep_best_epoch(trainer, "validation" in tokenized, "macro_f1", lambda model: selection_macro_f1(
        label_ids["validation"], softmax(predict_logits("validation")), False), run.checkpoint)

    # 9. Train.
    results: dict[str, float] = {}
    if training_args.do_train:
        results.update(train_with_resume(trainer, run.checkpoint).metrics)
        results.update(train_samples=train_examples, train_cut_examples=cut["train"],
                       train_trainable_parameters=trainable,
                       train_batch_size=training_args.per_device_train_batch_size,
                       **(best_epoch.results() if best_epoch else {}))

    # 10. Evaluate on validation: temperature scaling fitted there and folded into the head
    # (shared/evaluation/calibration.py); with --conformal_alpha the temperature sees only its part of the split and
    # the prediction sets are calibrated on the other (shared/evaluation/conformal.py).
    calibration = None if training_args.do_train else saved_calibration(trainer.model.config)  # already in the head
    conformal = None if training_args.do_train else saved_conformal(trainer.model.config)
    if "validation" in tokenized:
        logits = predict_logits("validation")
        if training_args.do_train and model_args.calibration == "temperature":
            fit_rows = set_plan.temperature_rows if set_plan else np.arange(len(logits))
            calibration = calibrate(trainer, logits[fit_rows], label_ids["validation"][fit_rows], False,
                                    len(label_names))
            logits = calibration.apply(logits) if calibration else logits
        if set_plan:
            conformal = set_plan.fit(softmax(logits), label_ids["validation"])
        metrics = score_and_report(output_dir if is_main else None, "eval", label_ids["validation"], softmax(logits),
                                   label_names, False, None, uncalibrated=uncalibrated(logits), conformal=conformal,
                                   set_rows=set_plan.temperature_rows if set_plan else None,
                                   subgroups=subgroup_values.get("validation"),
                                   subgroup_min_size=subgroup_args.subgroup_min_size)
        results.update(prefixed({**metrics, "samples": len(logits), "cut_examples": cut["validation"]}, "eval"))

    # 11. Predict on test: .ast files and test_predictions.csv always; metrics with CIs over notes when labelled.
    if "test" in tokenized:
        logits = predict_logits("test")
        probs = softmax(logits)
        test = splits["test"]
        if "test" in label_ids:
            metrics = score_and_report(output_dir if is_main else None, "test", label_ids["test"], probs, label_names,
                                       False, None, data_args.bootstrap_resamples, training_args.seed, test.groups,
                                       uncalibrated(logits), conformal, subgroups=subgroup_values.get("test"),
                                       subgroup_min_size=subgroup_args.subgroup_min_size)
            results.update(prefixed({**metrics, "samples": len(probs), "cut_examples": cut["test"]}, "test"))
        if is_main:
            write_predictions(output_dir, split_rows.get("test", range(len(probs))), probs, label_names, False, None,
                              None, gold=test.labels, extra=test.locations(),
                              prediction_sets=conformal.named(probs, label_names) if conformal else None)
            predicted = [label_names[i] for i in probs.argmax(axis=1)]
            notes = write_assertions(f"{output_dir}/test_predictions", test, predicted)
            logger.info("assertions of %d concepts in %d notes written to test_predictions/", len(predicted),
                        len(notes))
        if is_main and data_args.explain:  # word attributions over each marked sentence: holds note words
            explain_marked_predictions(output_dir, "test", trainer.model, tokenizer, test.words,
                                       split_rows.get("test", range(len(probs))), probs, label_names, max_length,
                                       data_args.explain)

    # 12. Save: the model and tokenizer (with the markers), results and the model card; only the main process writes.
    if training_args.do_train:
        save_trained(trainer, output_dir, model_args, tokenizer,
                     config_updates={**task_record("assertion_status", markers=list(ENTITY)),
                                     "max_seq_length": max_length,
                                     "calibration": calibration.saved() if calibration else None,
                                     "conformal": conformal.saved() if conformal else None})
    if is_main:
        save_all_results(output_dir, results)
        write_model_card(
            output_dir,
            title="Assertion status of clinical problems",
            base_model=model_args.model_name_or_path,
            pipeline_tag="text-classification",
            task_description=(f"The assertion status of each problem concept in its sentence, marked with [E] ... "
                              f"[/E]: {', '.join(label_names)}."),
            data_summary={split: {"examples": len(c), "notes": len(set(c.groups)),
                                  **({"labels": label_counts(label_ids[split], label_names)}
                                     if split in label_ids else {})}
                          for split, c in splits.items()},
            metrics=results,
            headline_metrics=SINGLE_LABEL_HEADLINE + (SET_HEADLINE if conformal else []),
            sections=subgroup_section(output_dir, "test") if subgroup_args.columns else None,
            training=training_card(training_args, model_args, frozen_layers, trainable, total, derived, best_epoch,
                                   calibration, max_seq_length=max_length,
                                   **({"prediction_sets": conformal.describe()} if conformal else {})),
            limitations=[
                "Input is a sentence with the concept between the tokens [E] and [/E]; `pipeline(\"text-"
                "classification\")` on this folder needs the markers in the text.",
                f"Sentences longer than {max_length} tokens keep the words nearest the concept.",
                "test_predictions/ holds the test notes' text, and test_explanations.{html,json} (--explain) the "
                "words of the explained sentences (sensitive, like the notes themselves).",
            ],
        )
        logger.info("results, predictions and model written to %s", output_dir)
    return results


if __name__ == "__main__":
    main()
