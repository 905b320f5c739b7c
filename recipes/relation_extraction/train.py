#!/usr/bin/env python
"""Fine-tune a pretrained encoder to classify the relation of every candidate pair of concepts in a sentence
(i2b2 2010 .txt + .con + .rel, or BRAT .txt + .ann with R lines, e.g. DDI 2013).

    python recipes/relation_extraction/train.py --config recipes/relation_extraction/configs/demo.yaml \\
        --model_name_or_path <folder>
    python recipes/relation_extraction/train.py --model_name_or_path <folder> --train_file ddi/train \\
        --test_file ddi/test --output_dir out --do_train --do_eval --do_predict

Each candidate pair is one example: its sentence with [E1] ... [/E1] and [E2] ... [/E2] around the two concepts
(marker tokens added to the tokenizer, the embeddings resized), classified as one relation type or "none".
Candidates: i2b2's type-compatible pairs of a sentence (treatment-problem, test-problem, problem-problem; a pair only
takes the relation types that join its types); in BRAT data every pair of entities of a sentence, or only the type
pairs of --candidate_types. Most pairs have no relation: --negative_ratio keeps a sample of the training negatives,
and the loss weights each class by the inverse square root of its frequency (see the README). The headline score
is the i2b2 / DDI one: precision, recall and F1 micro-averaged over the positive relation types (test_f1), with
bootstrap CIs over notes.
--test_concepts_dir takes the test notes' concepts from another folder (the NER recipe's test_predictions/): notes go
concept -> relation end to end.

Steps, the same in every recipe: 1 arguments -> 2 logging, output folder, checkpoint -> 3 seed -> 4 data -> 5 labels
-> 6 model -> 7 preprocessing -> 8 Trainer -> 9 train -> 10 evaluate -> 11 predict -> 12 save. Every check on the
input runs before the model is loaded, so bad data fails in seconds with one line naming the file and line.

Outputs in --output_dir: the model and tokenizer (with the marker tokens), all_results.json (+ train_/eval_/
test_results.json: precision / recall / f1 over the positive types with bootstrap CIs over notes, accuracy, macro-F1,
calibration), {eval,test}_report.json (P/R/F1 per relation type), {eval,test}_confusion_matrix.png,
{eval,test}_reliability.png, test_predictions.csv (one row per pair: note, where each concept is, label, prediction,
probabilities; no text), test_predictions/ (each test note written back with the predicted relations: .txt + .con +
.rel, or .txt + .ann; note text, sensitive), test_explanations.{html,json} (--explain N: word attributions over
the marked sentence of the first N test pairs; note words, sensitive) and the model card README.md. With
--use_lora the folder holds the adapter, the head and the trained [E1] ... [/E2] embedding rows (or, with
--merge_lora, the merged model).
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

from shared.concepts.encode import concept_labels, marked_classifier, marked_datasets
from shared.concepts.i2b2 import NO_RELATION, RELATION_TYPES
from shared.concepts.markers import FIRST, SECOND
from shared.concepts.relations import RELATION_FORMATS, parse_type_pairs, read_relation_split, write_relations
from shared.core.args import ClassifierModelArguments, DataArguments, TrainingArguments, main_guard, parse_args
from shared.core.args import recipe_defaults, start_run
from shared.core.errors import DataError
from shared.core.outputs import remove_earlier_results
from shared.core.resume import train_with_resume
from shared.data.labels import label_counts, names_in
from shared.data.splits import carve_splits, check_split_sources, sample_limit, splits_to_carve
from shared.evaluation.calibration import calibrate, saved_calibration
from shared.evaluation.forward import predict_in_order
from shared.evaluation.metrics import positive_micro_metrics, softmax
from shared.evaluation.reports import prefixed, save_all_results, score_and_report, training_card, write_model_card
from shared.evaluation.reports import write_predictions
from shared.tasks import task_record
from shared.training.adaptive import keep_best_epoch
from shared.training.lora import count_parameters, save_trained
from shared.training.models import max_sequence_length, requested_max_length
from shared.training.trainer import classifier_trainer
from shared.trust.explain import explain_marked_predictions

logger = logging.getLogger(__name__)

# The headline metrics of the model card, with CIs: the positive-type micro scores first (shared/evaluation/metrics.py).
HEADLINE = ["f1", "precision", "recall", "accuracy", "macro_f1", "ece", "brier"]


@dataclass
class RelationDataArguments(DataArguments):
    data_format: str = field(
        default="auto", metadata={"help": "i2b2 (.txt + .con + .rel) or brat (.txt + .ann); auto tells them apart by "
                                          "the files in the folder.", "choices": list(RELATION_FORMATS)})
    candidate_types: str | None = field(
        default=None, metadata={"help": "BRAT data: only pairs of these entity types are candidates, as comma-"
                                        "separated type pairs in either order (drug:drug,drug:brand); default every "
                                        "pair of a sentence. i2b2 data: a subset of its type-compatible pairs."})
    negative_ratio: float | None = field(
        default=None, metadata={"help": "Train on at most this many 'none' pairs per positive pair (a seeded sample, "
                                        "drawn once; validation and test keep every pair). Default: all."})
    max_seq_length: int = field(
        default=128, metadata={"help": "Tokens per marked sentence, special tokens included; longer sentences keep "
                                       "the words nearest the two concepts (counted in *_cut_examples)."})
    test_concepts_dir: str | None = field(
        default=None, metadata={"help": "Take the test notes' concepts from the .con (i2b2) or .ann (BRAT) files in "
                                        "this folder (the NER recipe's test_predictions/): concept -> relation end "
                                        "to end; the test split is then predicted, not scored."})

    def __post_init__(self):
        super().__post_init__()
        if self.max_seq_length < 8:
            raise DataError(f"--max_seq_length must be at least 8, got {self.max_seq_length}")
        if self.negative_ratio is not None and self.negative_ratio <= 0:
            raise DataError(f"--negative_ratio must be above 0, got {self.negative_ratio}")
        if self.dataset_name:
            raise DataError("--dataset_name: this recipe reads i2b2 or BRAT folders (--train_file, --validation_file, "
                            "--test_file), not Hub datasets")
        if self.group_column:
            raise DataError("--group_column: splits carved here keep each note's pairs together already")
        if self.test_concepts_dir is not None and self.test_file is None:
            raise DataError("--test_concepts_dir gives the concepts of the --test_file notes: give --test_file too")
        self.type_pairs = parse_type_pairs(self.candidate_types)


# This recipe's defaults; the command line and --config override every one (see the README for why each holds).
RECIPE_DEFAULTS = {
    **recipe_defaults(),
    # batch 8: at 32, an epoch of a few thousand DDI pairs took too few steps to leave "none" (README, Measured)
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 64,
    "learning_rate": 1e-4,
    "num_train_epochs": 3.0,
    "warmup_steps": 0.06,  # a float below 1 is a fraction of the training steps
    "weight_decay": 0.01,
    "train_sampling_strategy": "group_by_length",
    "optim": "adamw_torch_fused",
    "freeze_embeddings": False,  # the added [E1] ... [/E2] embeddings must learn what marks the two concepts
    "freeze_layers": 1 / 3,
    # "none" outnumbers a rare type by 100:1 and more: balanced weights make every pair look related, no weights
    # leave a small training set predicting "none" only; the milder inverse square root held between (README)
    "class_weighting": "inverse_sqrt",
}
WHERE_FROM = {"train": "--train_file (an i2b2 folder with .rel files, or a BRAT folder)",
              "validation": "--validation_file (an i2b2 folder with .rel files, or a BRAT folder)",
              "test": "--test_file (an i2b2 or BRAT folder; i2b2 without .rel files is predicted only)"}


def sample_negatives(labels: list[str], ratio: float, seed: int) -> np.ndarray:
    """The indices of every positive pair and of at most ``ratio`` negatives per positive (seeded), in input order."""
    labels = np.asarray(labels)
    negatives = np.flatnonzero(labels == NO_RELATION)
    keep = min(len(negatives), int(round(ratio * (len(labels) - len(negatives)))))
    kept = np.random.default_rng(seed).choice(negatives, size=keep, replace=False)
    return np.sort(np.concatenate([np.flatnonzero(labels != NO_RELATION), kept]))


@main_guard
def main(args: list[str] | None = None) -> dict[str, float]:
    # 1. Arguments: command line > --config > RECIPE_DEFAULTS.
    model_args, data_args, training_args = parse_args(ClassifierModelArguments, RelationDataArguments,
                                                      TrainingArguments, defaults=RECIPE_DEFAULTS, args=args,
                                                      description=__doc__)
    # 2. Logging (metadata only), the output folder and the checkpoint to resume from, before any data is read;
    # 3. the seed, before anything random (both in shared/core/args.py: start_run).
    run = start_run(training_args)

    # 4. Data: every candidate pair of every split, checked against its note (.con + .rel, or .ann) before the model
    # loads; validation / a test fold carved out of the training notes where asked, each note's pairs kept together;
    # then, if asked, a sample of the training negatives.
    files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    splits = {split: read_relation_split(files[split], data_args.data_format,
                                         data_args.test_concepts_dir if split == "test" else None,
                                         data_args.type_pairs)
              for split in run.splits if files[split]}
    carve = splits_to_carve(data_args, training_args, splits)
    check_split_sources(run.splits, [*splits, *carve], WHERE_FROM)
    for split, pairs in list(splits.items()):
        limit = sample_limit(data_args, split)
        if limit is not None and limit < len(pairs):
            splits[split] = pairs.select(range(limit))
        if split != "test" and splits[split].labels is None:
            raise DataError(f"{split} data needs .rel files (labels)", path=splits[split].source)
    split_rows = {}
    if carve:
        train = splits["train"]
        for split, idx in carve_splits(len(train), data_args, carve, training_args.seed, train.labels,
                                       train.groups).items():
            splits[split], split_rows[split] = train.select(idx), idx
    if "train" in splits and data_args.negative_ratio is not None:
        before = len(splits["train"])
        splits["train"] = splits["train"].select(sample_negatives(splits["train"].labels, data_args.negative_ratio,
                                                                  training_args.seed))
        logger.info("training pairs: %d of %d (at most %g negatives per positive)", len(splits["train"]), before,
                    data_args.negative_ratio)

    # 5. Labels: "none" first, then the relation types of the training data (i2b2's in its order; or the model
    # folder's when evaluating).
    if "train" in splits and names_in(splits["train"].labels) == {NO_RELATION}:
        raise DataError("training data has no relations (every candidate pair is 'none')", path=splits["train"].source)
    label_names, label_ids = concept_labels(splits, model_args, (NO_RELATION, *RELATION_TYPES))
    if NO_RELATION not in label_names:
        raise DataError(f"the model has no '{NO_RELATION}' class: it was not trained by this recipe",
                        model_args.model_name_or_path)
    none_id = label_names.index(NO_RELATION)
    masks = {split: pairs.allowed_mask(label_names) for split, pairs in splits.items()}
    logger.info("%d classes: %s", len(label_names), ", ".join(label_names))

    # 6. Model and tokenizer: the marker tokens added (a fine-tuned folder has them) and the embeddings resized;
    # under --use_lora the [E1] ... [/E2] rows train with the adapter (new tokens: no pretrained row knows them).
    tokenizer, config, model, frozen_layers = marked_classifier(model_args, training_args, label_names,
                                                                [*FIRST, *SECOND])
    trainable, total = count_parameters(model)
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)

    # 7. Preprocessing: each marked sentence tokenized; a long one keeps the words nearest its pair (counted):
    # shared/concepts/encode.py, the one encoding of both concept recipes.
    max_length = max_sequence_length(requested_max_length(data_args, config, training_args.do_train), tokenizer, config)
    tokenized, cut = marked_datasets(tokenizer, splits, label_ids, max_length, nearest="pair")

    # 8. Trainer: batch size and epochs from the training data where the user set none (shared/training/adaptive.py),
    # the loss weighted by inverse square root class frequencies ("none" outnumbers every type); the best epoch on
    # validation (positive micro-F1) kept.
    trainer, collator, derived, train_examples = classifier_trainer(
        model, tokenizer, tokenized, label_ids, len(label_names), model_args, training_args,
        RECIPE_DEFAULTS["num_train_epochs"])
    output_dir, is_main = training_args.output_dir, trainer.is_world_process_zero()
    if is_main:
        remove_earlier_results(output_dir, run.earlier_results)

    def predict_logits(split: str) -> np.ndarray:
        """Logits of every pair, a class the pair's types cannot take (i2b2) pushed out of reach."""
        columns = ["input_ids", "attention_mask"]
        logits = np.stack(predict_in_order(trainer.model, tokenized[split].select_columns(columns), collator,
                                           training_args.per_device_eval_batch_size, tokenized[split]["length"]))
        return np.where(masks[split], logits, np.float32(-1e4))

    def uncalibrated(logits: np.ndarray) -> np.ndarray | None:
        return softmax(calibration.undo(logits)) if calibration else None

    best_epoch = keep_best_epoch(trainer, "validation" in tokenized, "f1", lambda model: positive_micro_metrics(
        label_ids["validation"], predict_logits("validation"), none_id)["f1"], run.checkpoint)

    # 9. Train.
    results: dict[str, float] = {}
    if training_args.do_train:
        results.update(train_with_resume(trainer, run.checkpoint).metrics)
        results.update(train_samples=train_examples, train_cut_examples=cut["train"],
                       train_trainable_parameters=trainable,
                       train_batch_size=training_args.per_device_train_batch_size,
                       **(best_epoch.results() if best_epoch else {}))

    def scores(split: str, logits: np.ndarray, resamples: int = 0) -> dict[str, float]:
        """The classifier's metrics and plots, and the positive-type micro P/R/F1 (CIs over notes)."""
        probs, groups = softmax(logits), splits[split].groups
        prefix = "eval" if split == "validation" else split
        metrics = score_and_report(output_dir if is_main else None, prefix, label_ids[split], probs, label_names,
                                   False, None, resamples, training_args.seed, groups, uncalibrated(logits))
        metrics.update(positive_micro_metrics(label_ids[split], probs, none_id, resamples, training_args.seed,
                                              groups))
        return prefixed({**metrics, "samples": len(probs), "cut_examples": cut[split]}, prefix)

    # 10. Evaluate on validation: temperature scaling fitted there and folded into the head
    # (shared/evaluation/calibration.py).
    calibration = None if training_args.do_train else saved_calibration(trainer.model.config)  # already in the head
    if "validation" in tokenized:
        logits = predict_logits("validation")
        if training_args.do_train and model_args.calibration == "temperature":
            calibration = calibrate(trainer, logits, label_ids["validation"], False, len(label_names))
            logits = calibration.apply(logits) if calibration else logits
        results.update(scores("validation", logits))

    # 11. Predict on test: the notes with their relations and test_predictions.csv always; metrics with CIs over
    # notes when labelled.
    if "test" in tokenized:
        logits = predict_logits("test")
        probs = softmax(logits)
        test = splits["test"]
        if "test" in label_ids:
            results.update(scores("test", logits, data_args.bootstrap_resamples))
        if is_main:
            write_predictions(output_dir, split_rows.get("test", range(len(probs))), probs, label_names, False, None,
                              None, gold=test.labels, extra=test.locations())
            predicted = [label_names[i] for i in probs.argmax(axis=1)]
            notes = write_relations(f"{output_dir}/test_predictions", test, predicted)
            logger.info("%d relations among %d pairs in %d notes written to test_predictions/",
                        sum(p != NO_RELATION for p in predicted), len(predicted), len(notes))
        if is_main and data_args.explain:  # word attributions over each marked sentence: holds note words
            explain_marked_predictions(output_dir, "test", trainer.model, tokenizer, test.words,
                                       split_rows.get("test", range(len(probs))), probs, label_names, max_length,
                                       data_args.explain)

    # 12. Save: the model and tokenizer (with the markers), results and the model card; only the main process writes.
    if training_args.do_train:
        save_trained(trainer, output_dir, model_args, tokenizer,
                     config_updates={**task_record("relation_extraction", data_format=splits["train"].format,
                                                   candidate_types=data_args.candidate_types,
                                                   entity_types=splits["train"].entity_types,
                                                   markers=[*FIRST, *SECOND]),
                                     "max_seq_length": max_length,
                                     "calibration": calibration.saved() if calibration else None})
    if is_main:
        save_all_results(output_dir, results)
        write_model_card(
            output_dir,
            title="Relations between clinical concepts",
            base_model=model_args.model_name_or_path,
            pipeline_tag="text-classification",
            task_description=(f"The relation of each candidate pair of concepts in its sentence, marked with [E1] ... "
                              f"[/E1] and [E2] ... [/E2]: {', '.join(label_names)}. f1 / precision / recall are "
                              f"micro-averaged over the relation types ('{NO_RELATION}' earns nothing)."),
            data_summary={split: {"examples": len(p), "notes": len(set(p.groups)),
                                  **({"labels": label_counts(label_ids[split], label_names)}
                                     if split in label_ids else {})}
                          for split, p in splits.items()},
            metrics=results,
            headline_metrics=HEADLINE,
            training=training_card(training_args, model_args, frozen_layers, trainable, total, derived, best_epoch,
                                   calibration, max_seq_length=max_length,
                                   candidate_types=data_args.candidate_types or "every pair of a sentence (BRAT) / "
                                                                                "i2b2's",
                                   negative_ratio=data_args.negative_ratio or "all negatives"),
            limitations=[
                "Input is a sentence with the first concept between [E1] and [/E1] and the second between [E2] and "
                "[/E2]; `pipeline(\"text-classification\")` on this folder needs the markers in the text.",
                "Relations are found within a sentence (a line of the note) only.",
                f"Sentences longer than {max_length} tokens keep the words nearest the two concepts.",
                "test_predictions/ holds the test notes' text, and test_explanations.{html,json} (--explain) the "
                "words of the explained sentences (sensitive, like the notes themselves).",
            ],
        )
        logger.info("results, predictions and model written to %s", output_dir)
    return results


if __name__ == "__main__":
    main()
