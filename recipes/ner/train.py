#!/usr/bin/env python
"""Fine-tune a pretrained encoder for clinical named-entity recognition (i2b2 2010, BRAT, CoNLL, JSON, hub).

    python recipes/ner/train.py --config recipes/ner/configs/demo.yaml
    python recipes/ner/train.py --model_name_or_path <folder> --train_file notes/train --validation_file notes/dev \\
        --test_file notes/test --output_dir out --do_train --do_eval --do_predict

Steps, the same in every recipe: 1 arguments -> 2 logging, output folder, checkpoint -> 3 seed -> 4 data -> 5 labels
-> 6 model -> 7 preprocessing (subword alignment + sliding windows) -> 8 Trainer -> 9 train -> 10 evaluate ->
11 predict -> 12 save. Bad input fails before the model is loaded, with one line naming the file and line. Long
examples are cut into overlapping windows over subwords; every word gets a prediction.

Outputs in --output_dir: the model and tokenizer (loads with pipeline("token-classification")), all_results.json
(+ train_/eval_/test_results.json), {eval,test}_report.json, test_predictions/ (the test input written back in its
own format with the predicted entities), test_explanations.{html,json} (--explain N: word attributions per
predicted entity; they hold note words), test_tag_probabilities.json (a --fold of cross-validation: per-word
tag probabilities for the label audit, no words) and the model card README.md.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

try:
    import shared.core.args  # noqa: F401  (this project's package, and through it torch and transformers)
except ImportError as error:
    print(f"error: this project is not installed ({error}): install it as its README.md says, torch first, then "
          "`pip install -e .`", file=sys.stderr)
    raise SystemExit(2) from None

import datasets
import numpy as np
from transformers import AutoConfig, AutoModelForTokenClassification, DataCollatorForTokenClassification, Trainer

from shared.core.args import DataArguments, ModelArguments, TrainingArguments, main_guard, parse_args, recipe_defaults
from shared.core.args import start_run
from shared.core.errors import DataError
from shared.core.files import atomic_write_json
from shared.core.outputs import remove_earlier_results
from shared.core.resume import EpochSeededSampling, train_with_resume
from shared.data.labels import IGNORE_INDEX
from shared.data.long_text import default_stride
from shared.data.splits import carve_splits, check_split_sources, sample_limit, splits_to_carve
from shared.evaluation.metrics import add_ci
from shared.evaluation.reports import prefixed, save_all_results, training_card, write_model_card
from shared.formats.tags import SCHEMES, from_scheme, label_list, split_tag, to_scheme, validate_tags
from shared.ner.crf import CrfTokenClassifier, has_crf
from shared.ner.data import NER_FORMATS, OVERLAPPING_ENTITIES, carve_groups, load_ner_splits
from shared.ner.metrics import entity_collapse_check, entity_metrics, entity_metrics_ci, entity_report
from shared.ner.windows import load_tokenizer, make_windows, pipeline_agreement, predict_windows, subword_maps
from shared.ner.windows import word_probabilities, words_from_windows
from shared.tasks import task_record
from shared.training.adaptive import Derived, adapt_to_training_data, keep_best_epoch
from shared.training.imbalance import training_loss
from shared.training.lora import count_parameters, save_trained
from shared.training.models import load_pretrained, max_sequence_length, model_for_run, requested_max_length
from shared.training.optim import optimizer_cls_and_kwargs
from shared.trust.audit import write_tag_probabilities
from shared.trust.explain import explain_entities

logger = logging.getLogger(__name__)

HEADLINE = ["f1", "precision", "recall", "macro_f1", "lenient_f1", "token_accuracy", "pipeline_agreement"]
CI_METRICS = ("f1", "precision", "recall", "macro_f1", "lenient_f1")


@dataclass
class NerDataArguments(DataArguments):
    data_format: str = field(
        default="auto",
        metadata={"help": "Input format; auto guesses from the path (.con -> i2b2, .ann -> BRAT, .json/.jsonl -> "
                          "JSON, anything else -> CoNLL).", "choices": list(NER_FORMATS)},
    )
    overlapping_entities: str = field(
        default="error",
        metadata={"help": "i2b2 / BRAT entities that flat tags cannot hold: two on the same words, or a discontinuous "
                          "one with words in its gap. 'error': an overlap stops the run naming file and line (a "
                          "discontinuous entity is read as the range from its first to its last character); "
                          "'first_fragment': a discontinuous entity keeps its first fragment, and the later (.ann / "
                          ".con line) of two entities on the same words is dropped; 'drop': a discontinuous entity "
                          "is dropped, and so is the later of two entities on the same words. What changed is "
                          "counted in the log; predict.py reads with the trained choice.",
                  "choices": list(OVERLAPPING_ENTITIES)},
    )
    tokens_column: str = field(default="tokens", metadata={"help": "JSON / hub field holding the word list."})
    tags_column: str = field(default="ner_tags", metadata={"help": "JSON / hub field holding the tag list."})
    conll_tag_column: int = field(
        default=-1, metadata={"help": "CoNLL column (0-based, negative from the end) holding the tag; tokens are "
                                      "column 0."})
    tag_scheme: str = field(
        default="IOB2", metadata={"help": "Labels the model learns; input in IOB2 or BIOES is converted, scores are "
                                          "always strict IOB2.", "choices": list(SCHEMES)})
    repair_tags: bool = field(
        default=False, metadata={"help": "Turn invalid IOB2 (I-X not after B-X/I-X) into B-X and report how many "
                                         "were repaired, instead of stopping with an error."})
    label_alignment: str = field(
        default="all",
        metadata={"help": "Which subwords of a word carry its label: 'first' (others ignored, as run_ner.py) or "
                          "'all' (continuations get I-X for B-X). 'all' also trains the continuation subwords that "
                          "pipeline(aggregation_strategy='simple') reads.", "choices": ["first", "all"]},
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "Subword tokens per window, special tokens included (capped by what the "
                                       "model reads). Longer examples are split into overlapping windows, never "
                                       "truncated."})
    stride: int | None = field(
        default=None, metadata={"help": "Subword tokens shared by consecutive windows of a long example; each word "
                                        "is predicted from the window where it has the most context. Default: a "
                                        "quarter of the window, at most 32."})

    def __post_init__(self):
        super().__post_init__()
        if self.max_seq_length < 8:
            raise DataError(f"--max_seq_length must be at least 8, got {self.max_seq_length}")
        if self.stride is not None and not 0 <= self.stride < self.max_seq_length // 2:
            raise DataError(f"--stride must be in [0, max_seq_length/2), got {self.stride}")


@dataclass
class NerModelArguments(ModelArguments):
    use_crf: bool = field(
        default=False, metadata={"help": "Add a CRF output layer trained jointly; Viterbi decoding that never "
                                         "emits an invalid tag transition (e.g. I-X after O)."})


# This recipe's defaults; the command line and --config override every one (see the README for why each holds).
RECIPE_DEFAULTS = {
    **recipe_defaults(),
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "learning_rate": 3e-4,
    "num_train_epochs": 3.0,
    "warmup_steps": 0.1,  # a float below 1 is a fraction of the training steps
    "weight_decay": 0.01,
    "train_sampling_strategy": "group_by_length",  # similar lengths per batch: little compute spent on padding
    "optim": "adamw_torch_fused",
    "dropout": 0.0,  # no random dropout masks to draw
}
WHERE_FROM = {"train": "--train_file (or a --dataset_name with a 'train' split)",
              "validation": "--validation_file (or a --dataset_name with a 'validation' split)",
              "test": "--test_file (or a --dataset_name with a 'test' split)"}


@main_guard
def main(args: list[str] | None = None) -> dict[str, float]:
    # 1. Arguments: command line > --config > RECIPE_DEFAULTS.
    model_args, data_args, training_args = parse_args(NerModelArguments, NerDataArguments, TrainingArguments,
                                                      defaults=RECIPE_DEFAULTS, args=args, description=__doc__)

    # 2. Logging (metadata only), the output folder and the checkpoint to resume from, before any data is read;
    # 3. the seed, before anything random (both in shared/core/args.py: start_run).
    run = start_run(training_args)

    # 4. Data: read + validate every split (offsets, concept text, overlaps, tag sequences) before the model; carve
    # validation / a test fold out of the training data where asked, whole documents per split.
    splits = load_ner_splits(data_args, run.splits, {split: sample_limit(data_args, split) for split in run.splits})
    carve = splits_to_carve(data_args, training_args, splits)
    check_split_sources(run.splits, [*splits, *carve], WHERE_FROM)
    if carve:
        train = splits["train"]
        for split, idx in carve_splits(len(train), data_args, carve, training_args.seed, None,
                                       carve_groups(train, data_args.group_column)).items():
            splits[split] = train.select(idx)
    repaired = {}
    for name, split in splits.items():
        if split.tags is not None:
            split.tags, repaired[name] = validate_tags(split.tags, split.where, repair=data_args.repair_tags)
            if repaired[name]:
                logger.warning("%s: repaired %d invalid IOB2 tags (--repair_tags)", name, repaired[name])
        logger.info("%s: %d examples from %s (%s)", name, len(split), split.source, split.format)
    if "train" in splits and not any(tag != "O" for tags in splits["train"].tags for tag in tags):
        raise DataError("training data has no entity at all (every tag is O); check --data_format / the tag "
                        "column", splits["train"].source)

    # 5. Labels: from the training data, or from the fine-tuned model when only evaluating / predicting.
    if "train" in splits:
        labels, scheme = label_list(splits["train"].tags, data_args.tag_scheme), data_args.tag_scheme
        alignment = data_args.label_alignment
    else:
        trained = load_pretrained(AutoConfig, model_args)
        labels = [trained.id2label[i] for i in range(trained.num_labels)]
        scheme = "BIOES" if any(lab[:2] in ("E-", "S-") for lab in labels) else "IOB2"
        # predict with the alignment the model was trained with (the CRF depends on it)
        alignment = getattr(trained, "label_alignment", data_args.label_alignment)
    label2id = {lab: i for i, lab in enumerate(labels)}
    known_types = {split_tag(lab)[1] for lab in labels if lab != "O"}
    for name, split in splits.items():
        for tags, (path, line) in zip(split.tags or [], split.where):
            for tag in tags:
                if tag != "O" and split_tag(tag)[1] not in known_types:
                    raise DataError(f"entity type '{split_tag(tag)[1]}' does not occur in the training data "
                                    f"(known: {', '.join(sorted(known_types))})", path, line)
    word_label_ids = {name: [[label2id[t] for t in to_scheme(tags, scheme)] for tags in split.tags]
                      for name, split in splits.items() if split.tags is not None}
    logger.info("%d labels (%s): %s", len(labels), scheme, ", ".join(labels))

    # 6. Model and tokenizer (fast only: alignment needs word_ids): a fresh head over the labels (training), or the
    # fine-tuned folder as saved; the CRF layer on top with --use_crf (or when the folder has one).
    tokenizer = load_tokenizer(model_args)
    config = load_pretrained(AutoConfig, model_args, num_labels=len(labels), id2label=dict(enumerate(labels)),
                             label2id=label2id)
    use_crf = model_args.use_crf or (not training_args.do_train and has_crf(model_args.model_name_or_path))
    if use_crf and (model_args.class_weighting != "none" or model_args.focal_gamma > 0
                    or training_args.label_smoothing_factor > 0):
        raise DataError("--use_crf trains on the CRF likelihood; it cannot be combined with --class_weighting, "
                        "--focal_gamma or --label_smoothing_factor")
    if model_args.use_crf and not training_args.do_train and not has_crf(model_args.model_name_or_path):
        raise DataError("--use_crf without --do_train needs a model trained with --use_crf (no crf.safetensors)",
                        model_args.model_name_or_path)
    model, frozen_layers = model_for_run(AutoModelForTokenClassification, model_args, config, training_args)
    if use_crf:
        model = CrfTokenClassifier(model, labels)
        if not training_args.do_train:
            model.load_crf(model_args.model_name_or_path)
        logger.info("CRF output layer (%s, constrained Viterbi decoding)", scheme)
    trainable, total = count_parameters(model)
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)

    # 7. Preprocessing: labels on subwords ('first' or 'all'), long examples split into windows that overlap by
    # --stride subwords.
    max_length = max_sequence_length(requested_max_length(data_args, config, training_args.do_train), tokenizer, config)
    saved_stride = None if training_args.do_train else getattr(config, "stride", None)
    stride = next(s for s in (data_args.stride, saved_stride, default_stride(max_length)) if s is not None)
    b_to_i = subword_maps(labels)  # every subword labelled so that the subword sequence is valid IOB2/BIOES
    windows = {}
    for name, split in splits.items():
        windows[name], unmapped = make_windows(tokenizer, split.words, max_length, stride,
                                               word_label_ids.get(name), alignment, b_to_i)
        if len(windows[name]) > len(split):
            logger.info("%s: %d extra windows for examples longer than %d subwords", name,
                        len(windows[name]) - len(split), max_length)
        if n_unmapped := sum(len(u) for u in unmapped):
            logger.warning("%s: %d words produce no subword token (predicted O)", name, n_unmapped)

    def to_dataset(name: str) -> datasets.Dataset:
        wins = windows[name]
        columns = {"input_ids": [w.input_ids for w in wins], "length": [len(w.input_ids) for w in wins]}
        if name in word_label_ids:
            columns["labels"] = [w.labels for w in wins]
        return datasets.Dataset.from_dict(columns)

    # 8. Trainer: the batch size and epochs the training data calls for where the user set none
    # (shared/training/adaptive.py); class weights for the rare entity labels (O dominates) and/or focal loss; the best
    # epoch on validation kept.
    loss_func, derived = None, Derived()
    if training_args.do_train:
        derived = adapt_to_training_data(training_args, model_args, len(windows["train"]),
                                         RECIPE_DEFAULTS["num_train_epochs"])
        flat = np.asarray([lab for w in windows["train"] for lab in w.labels if lab != IGNORE_INDEX], dtype=np.int64)
        # Some labels may never occur in training (e.g. I-X when every X is one word): they keep weight 1.
        # (the CRF head computes its own likelihood, divided as Trainer expects: shared/ner/crf.py)
        loss_func = None if use_crf else training_loss(flat, len(labels), model_args.class_weighting,
                                                       model_args.focal_gamma, allow_absent=True,
                                                       label_smoothing=training_args.label_smoothing_factor)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=to_dataset("train") if "train" in windows else None,
        eval_dataset=to_dataset("validation") if "validation" in windows else None,
        processing_class=tokenizer,
        data_collator=DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8),
        compute_loss_func=loss_func,
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(model, training_args, model_args.layerwise_lr_decay),
        callbacks=[EpochSeededSampling()],  # a resumed run trains in the same order (shared/core/resume.py)
    )
    output_dir, is_main = training_args.output_dir, trainer.is_world_process_zero()
    if is_main:
        remove_earlier_results(output_dir, run.earlier_results)

    def predict_tags(name: str, agreement: bool = True) -> tuple[list[list[str]], dict[str, float]]:
        """IOB2 tags for every word of every example of a split (windows merged, nothing dropped), and (with
        ``agreement``) how often pipeline(aggregation_strategy="simple") on the saved folder gives the same
        entities."""
        split = splits[name]
        decode = trainer.model.decode if use_crf else None
        preds = predict_windows(trainer.model, windows[name], tokenizer.pad_token_id,
                                training_args.per_device_eval_batch_size, decode=decode)
        word_ids = words_from_windows(windows[name], preds, [len(w) for w in split.words], default=label2id["O"])
        tags = [from_scheme([labels[i] for i in ids], scheme) for ids in word_ids]
        extra = {}
        if agreement and not use_crf and scheme == "IOB2":  # the pipeline reads neither a CRF nor BIOES tags
            agree, checked = pipeline_agreement(windows[name], preds, labels, tags)
            if checked:
                extra = {"pipeline_agreement": agree / checked, "pipeline_checked": checked}
        return tags, extra

    best_epoch = keep_best_epoch(trainer, "validation" in splits, "f1", lambda model: entity_metrics(
        splits["validation"].tags, predict_tags("validation", agreement=False)[0])["f1"], run.checkpoint)

    # 9. Train.
    results: dict[str, float] = {}
    if training_args.do_train:
        results.update(train_with_resume(trainer, run.checkpoint).metrics)
        results.update(train_samples=len(splits["train"]), train_windows=len(windows["train"]),
                       train_repaired_tags=repaired.get("train", 0),
                       train_batch_size=training_args.per_device_train_batch_size,
                       **(best_epoch.results() if best_epoch else {}))

    # 10. Evaluate on validation.
    if "validation" in splits:
        validation = splits["validation"]
        pred, extra = predict_tags("validation")
        results.update(prefixed({**entity_metrics(validation.tags, pred), **extra, "samples": len(pred),
                                 "predicted_entities": entity_collapse_check("eval", validation.tags, pred)}, "eval"))
        if is_main:
            atomic_write_json(os.path.join(output_dir, "eval_report.json"), entity_report(validation.tags, pred))

    # 11. Predict on test: predictions in the input's own format; metrics with bootstrap CIs when labelled.
    written = []
    if "test" in splits:
        test = splits["test"]
        pred, extra = predict_tags("test")
        if is_main:
            written = test.write_predictions(pred, os.path.join(output_dir, "test_predictions"))
        if is_main and data_args.num_folds and test.tags is not None:  # for the label audit of cross_validate.py
            write_tag_probabilities(output_dir, test, word_probabilities(
                trainer.model, windows["test"], tokenizer.pad_token_id, [len(w) for w in test.words],
                training_args.per_device_eval_batch_size), pred, labels)
        if is_main and data_args.explain:  # word attributions per predicted entity: holds note words
            explain_entities(output_dir, "test", trainer.model.model if use_crf else trainer.model, tokenizer,
                             windows["test"], test.words, pred, label2id, scheme, data_args.explain)
        if test.tags is not None:
            test_metrics = {**entity_metrics(test.tags, pred), **extra}
            if data_args.bootstrap_resamples:
                intervals = entity_metrics_ci(test.tags, pred, groups=test.groups,
                                              resamples=data_args.bootstrap_resamples, seed=training_args.seed,
                                              names=CI_METRICS)
                test_metrics = add_ci(test_metrics, intervals)
            test_metrics.update(samples=len(pred), repaired_tags=repaired.get("test", 0),
                                predicted_entities=entity_collapse_check("test", test.tags, pred))
            results.update(prefixed(test_metrics, "test"))
            if is_main:
                atomic_write_json(os.path.join(output_dir, "test_report.json"), entity_report(test.tags, pred))

    # 12. Save: the model (plain, merged LoRA, or adapter + head; the CRF beside it), results and the model card.
    # Every process takes part in gathering FSDP-sharded weights (None otherwise); only the main one writes.
    if training_args.do_train:  # the alignment, windows and CRF go into config.json: prediction depends on them
        save_trained(trainer, output_dir, model_args, tokenizer, inner="model" if use_crf else None,
                     config_updates={**task_record("ner", data_format=splits["train"].format.replace("hub", "json"),
                                                   tokens_column=data_args.tokens_column,
                                                   tags_column=data_args.tags_column,
                                                   conll_tag_column=data_args.conll_tag_column,
                                                   overlapping_entities=data_args.overlapping_entities),
                                     "label_alignment": alignment, "use_crf": use_crf, "max_seq_length": max_length,
                                     "stride": stride})
        if use_crf and is_main:
            trainer.model.save_crf(output_dir)
    if is_main:
        save_all_results(output_dir, results)
        data_summary = {}
        for name, split in splits.items():
            summary = {"examples": len(split)}
            if split.tags is not None:
                counts: dict[str, int] = {}
                for tags in split.tags:
                    for tag in tags:
                        if tag.startswith("B-"):
                            counts[tag[2:]] = counts.get(tag[2:], 0) + 1
                summary["labels"] = dict(sorted(counts.items()))
            data_summary[name] = summary
        types = sorted(known_types)
        write_model_card(
            output_dir,
            title="Clinical named-entity recognizer",
            base_model=model_args.model_name_or_path,
            pipeline_tag="token-classification",
            task_description=(f"Token classification of {len(types)} entity types ({', '.join(types)}) with "
                              f"{scheme} tags; scores are strict entity-level (seqeval, IOB2) unless marked "
                              "lenient (any overlap of the same type counts). Data counts are entities."),
            data_summary=data_summary,
            metrics=results,
            headline_metrics=HEADLINE + [f"f1_{t}" for t in types],
            training=training_card(training_args, model_args, frozen_layers, trainable, total, derived, best_epoch,
                                   calibration=False,  # token tags: no temperature scaling
                                   **{"max_seq_length (window)": max_length, "stride": stride,
                                      "label_alignment": alignment,
                                      "overlapping_entities": data_args.overlapping_entities,
                                      "output layer": "CRF (constrained Viterbi)" if use_crf else "softmax",
                                      "tag_scheme": scheme}),
            limitations=[
                f"Examples longer than {max_length} subword tokens are read in overlapping windows (stride "
                f"{stride}); each word is predicted in the window where it has the most context.",
                "Entities are flat and contiguous: nested, overlapping or discontinuous annotations are not "
                f"represented (this run read them with --overlapping_entities {data_args.overlapping_entities}).",
                "Load with `pipeline(\"token-classification\", model=<this folder>, aggregation_strategy=\"simple\")`"
                " on whitespace-joined words; it gives the recipe's entities on the share of examples reported as "
                "`pipeline_agreement` (elsewhere a word's subwords disagree); long texts need the pipeline's "
                "`stride` argument" + (", and it reads the emissions without the CRF." if use_crf else "."),
                "`test_predictions/` holds the test notes written back with the predicted entities: it contains "
                "the note text.",
            ],
        )
        logger.info("results, %d prediction file(s) and model written to %s", len(written), output_dir)
    return results


if __name__ == "__main__":
    main()
