#!/usr/bin/env python
"""Fine-tune a pretrained encoder for medical text classification (single- or multi-label).

    python recipes/text_classification/train.py --config recipes/text_classification/configs/demo.yaml
    accelerate launch recipes/text_classification/train.py --model_name_or_path <folder> \
        --train_file train.csv --validation_file dev.csv --test_file test.csv --output_dir out --do_train --do_eval --do_predict

Steps, in order: arguments -> logging -> seed -> data -> labels -> model -> tokenization -> Trainer ->
train / evaluate / predict -> results, predictions, plots -> model card. Every check on the input runs before
the model is loaded, so bad data fails in seconds with one line naming the file and row.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    import shared  # noqa: F401  (installed with `pip install -e .`)
except ImportError:  # running from a clone without installing: use the repository's shared/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

from shared.args import (DataArguments, ModelArguments, classification_config, load_for_training, load_pretrained,
                         main_guard, parse_args, recipe_defaults, setup_logging)
from shared.errors import DataError
from shared.formats.tables import load_splits, require_columns, require_text, row_location
from shared.distributed import full_state_dict
from shared.imbalance import class_weights, make_loss_func, oversample, positive_weights
from shared.lora import apply_lora, count_parameters, save_model
from shared.metrics import (
    add_ci,
    bootstrap_ci,
    classification_metrics,
    classification_report_dict,
    multilabel_metrics,
    multilabel_report_dict,
    sigmoid,
    softmax,
    tune_thresholds,
)
from shared.predict import predict_in_order
from shared.optim import freeze_encoder_layers, freeze_input_embeddings, layers_to_freeze, optimizer_cls_and_kwargs
from shared.resume import EpochSeededSampling, resolve_checkpoint, train_with_resume
from shared.reporting import (
    atomic_write_json,
    atomic_write_text,
    plot_confusion_matrix,
    plot_roc_curves,
    prefixed,
    save_results,
    write_model_card,
)
from shared.splits import carve_splits, splits_to_carve, table_groups, warn_shared_groups

logger = logging.getLogger(__name__)

# Metrics shown in the model card and given bootstrap confidence intervals.
SINGLE_LABEL_HEADLINE = ["accuracy", "balanced_accuracy", "macro_f1", "micro_f1", "weighted_f1", "auroc", "auprc"]
MULTI_LABEL_HEADLINE = ["micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "auroc", "auprc"]


@dataclass
class TextDataArguments(DataArguments):
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    text_pair_column: str | None = field(
        default=None, metadata={"help": "Optional second text column (e.g. question + context), encoded as a pair."}
    )
    label_column: str = field(
        default="label",
        metadata={"help": "Column holding the label; a list of labels per row (JSON list) makes the task multi-label."},
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "Tokens per example after tokenization; longer inputs are truncated (and counted)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.max_seq_length < 8:
            raise DataError(f"--max_seq_length must be at least 8, got {self.max_seq_length}")


# Defaults that make the recipe fast on CPU and GPU alike; every one can be overridden on the command line.
RECIPE_DEFAULTS = {
    **recipe_defaults(),
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "learning_rate": 2e-4,  # with batch 32 and frozen embeddings; MiniLM-size encoders train well at 1e-4 to 3e-4
    "num_train_epochs": 3.0,
    "warmup_steps": 0.06,  # a float below 1 is a fraction of the training steps
    "weight_decay": 0.01,
    "train_sampling_strategy": "group_by_length",  # batches of similar length waste little compute on padding
    "optim": "adamw_torch_fused",
    # The token-embedding matrix is ~half of a small BERT's weights; updating it on a few thousand examples costs
    # about a third of each training step and mostly overfits rare tokens. --freeze_embeddings false to train it.
    "freeze_embeddings": True,
    # The bottom third of the encoder stays fixed: those layers need no backward pass (2 of MiniLM's 6: ~1.3x faster
    # steps) and on Medical Abstracts macro-F1 is unchanged (0.639 vs 0.620 at seed 42, within the CI). 0 to train all.
    "freeze_layers": 1 / 3,
}


def parse_label(value, source: str, index: int):
    """A label cell: a scalar (single-label) or a list (multi-label); CSV cells may hold a JSON list."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError("label cell starts with '[' but is not a JSON list", path=source, line=row_location(source, index)) from None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        raise DataError("missing label", path=source, line=row_location(source, index))
    return str(value)


def sort_labels(labels) -> list[str]:
    """Numeric labels in numeric order ("2" before "10"), others alphabetically."""
    labels = list(labels)
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def count_truncated(tokenizer, texts, pairs, max_length: int) -> int:
    lengths = tokenizer(list(texts), None if pairs is None else list(pairs), truncation=False, verbose=False)["input_ids"]
    return sum(len(ids) > max_length for ids in lengths)


@main_guard
def main(args: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_args(
        ModelArguments, TextDataArguments, TrainingArguments, defaults=RECIPE_DEFAULTS, args=args
    )
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise DataError("nothing to do: pass at least one of --do_train, --do_eval, --do_predict")

    # 1. Logging: metadata only; example text never reaches the logs.
    setup_logging(training_args)
    # --resume_from_checkpoint as a folder (true: the newest complete one); a bad one fails before any work
    checkpoint = resolve_checkpoint(training_args) if training_args.do_train else None
    logger.info("device %s, bf16 %s, %d process(es)", training_args.device, training_args.bf16, training_args.world_size)

    # 2. Seed before anything random (head initialisation, LoRA init, shuffling).
    set_seed(training_args.seed)

    # 3. Data: read and validate every split before loading the model.
    # split -> (the --do_* flag that asks for it, its file argument, its --max_*_samples limit)
    split_args = {
        "train": ("train", data_args.train_file, data_args.max_train_samples),
        "validation": ("eval", data_args.validation_file, data_args.max_eval_samples),
        "test": ("predict", data_args.test_file, data_args.max_predict_samples),
    }
    wanted = {split: path for split, (flag, path, _) in split_args.items() if getattr(training_args, f"do_{flag}")}
    splits = load_splits(data_args, wanted)
    carve = splits_to_carve(data_args, training_args, splits)  # validation / test cut from the training data (4b)
    for split in wanted:
        if split not in splits and split not in carve:
            raise DataError(f"--do_{split_args[split][0]} needs --{split}_file")
    text_columns = [data_args.text_column] + ([data_args.text_pair_column] if data_args.text_pair_column else [])
    labelled = {}
    for split, (dataset, source) in list(splits.items()):
        limit = split_args[split][2]
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
            splits[split] = (dataset, source)
        require_columns(dataset, text_columns, source)
        for column in text_columns:
            require_text(dataset, column, source)
        labelled[split] = data_args.label_column in dataset.column_names
        if split != "test":
            require_columns(dataset, [data_args.label_column], source)

    # 4. Labels: the label set comes from training data (or from the model folder when only evaluating).
    parsed = {
        split: [parse_label(v, source, i) for i, v in enumerate(dataset[data_args.label_column])]
        for split, (dataset, source) in splits.items()
        if labelled[split]
    }
    if "train" in parsed:
        multi_label = isinstance(parsed["train"][0], list)
        seen = {l for labels in parsed["train"] for l in (labels if multi_label else [labels])}
        label_names = sort_labels(seen)
    else:
        config = load_pretrained(AutoConfig, model_args)
        label_names = [config.id2label[i] for i in range(config.num_labels)]
        multi_label = config.problem_type == "multi_label_classification"
    label2id = {name: i for i, name in enumerate(label_names)}
    for split, labels in parsed.items():
        source = splits[split][1]
        for i, label in enumerate(labels):
            if isinstance(label, list) != multi_label:
                raise DataError(
                    "mixes single labels and label lists; use one kind in every row", path=source, line=row_location(source, i)
                )
            for name in label if multi_label else [label]:
                if name not in label2id:
                    raise DataError(
                        f"label '{name}' does not occur in the training data (known: {', '.join(label_names)})",
                        path=source,
                        line=row_location(source, i),
                    )
    if not multi_label and len(label_names) < 2:
        raise DataError("training data has a single class; classification needs at least two", path=splits["train"][1])

    # 4b. Splits cut from the training data (shared/splits.py): fold --fold of --num_folds as the test split and/or
    # --validation_split_percentage as validation; stratified by label, --group_column keeps each patient in one split.
    split_groups, split_rows = {}, {}
    if carve:
        train, source = splits["train"]
        train_labels = parsed["train"]
        groups = table_groups(train, data_args.group_column, source) if data_args.group_column else None
        for split, idx in carve_splits(len(train), data_args, carve, training_args.seed, train_labels, groups).items():
            splits[split] = (train.select(idx), source)
            parsed[split], labelled[split], split_rows[split] = [train_labels[i] for i in idx], True, idx
            if groups is not None:
                split_groups[split] = [groups[i] for i in idx]  # test CIs resample whole groups
    if data_args.group_column:  # supplied validation/test files with the column: same patients as training?
        for split, (table, source) in splits.items():
            if split not in split_groups and (split == "train" or data_args.group_column in table.column_names):
                split_groups[split] = table_groups(table, data_args.group_column, source)
        warn_shared_groups(split_groups, data_args.group_column)

    def encode_labels(labels):
        if multi_label:
            hot = np.zeros((len(labels), len(label_names)), dtype=np.float32)
            for row, names in enumerate(labels):
                hot[row, [label2id[n] for n in names]] = 1.0
            return hot
        return np.array([label2id[l] for l in labels], dtype=np.int64)

    label_ids = {split: encode_labels(labels) for split, labels in parsed.items()}
    logger.info("%s task with %d labels", "multi-label" if multi_label else "single-label", len(label_names))

    # 5. Model and tokenizer (local folder or hub id; safetensors only unless --allow_pickle_weights).
    tokenizer = load_pretrained(AutoTokenizer, model_args)
    config = classification_config(model_args, label_names, multi_label)
    if training_args.do_train:
        model = load_for_training(AutoModelForSequenceClassification, model_args, config, training_args.device)
    else:  # evaluating a fine-tuned model: its head already matches the labels
        from shared.lora import load_model

        model = load_model(AutoModelForSequenceClassification, model_args.model_name_or_path)
    frozen_layers = layers_to_freeze(model, model_args.freeze_layers)
    frozen = freeze_encoder_layers(model, frozen_layers)
    if model_args.freeze_embeddings:
        frozen += freeze_input_embeddings(model)
    if frozen:
        logger.info("froze %d parameters (embeddings + %d encoder layers)", frozen, frozen_layers)
    if model_args.use_lora:
        model = apply_lora(model, model_args)
    trainable, total = count_parameters(model)
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)

    # 6. Tokenization; truncation is counted and reported, never silent.
    max_length = min(data_args.max_seq_length, tokenizer.model_max_length)
    truncated = {}

    def tokenize(batch):
        pairs = batch[data_args.text_pair_column] if data_args.text_pair_column else None
        encoded = tokenizer(batch[data_args.text_column], pairs, truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    tokenized = {}
    for split, (dataset, source) in splits.items():
        pairs = dataset[data_args.text_pair_column] if data_args.text_pair_column else None
        truncated[split] = count_truncated(tokenizer, dataset[data_args.text_column], pairs, max_length)
        if truncated[split]:
            logger.warning(
                "%s: %d of %d examples (%.1f%%) are longer than %d tokens and were truncated",
                split, truncated[split], len(dataset), 100 * truncated[split] / len(dataset), max_length,
            )
        encoded = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names)
        if split in label_ids:
            encoded = encoded.add_column("labels", list(label_ids[split]))
        tokenized[split] = encoded

    # 7. Class imbalance: weighted / focal loss through compute_loss_func, oversampling on the dataset.
    loss_func = None
    if training_args.do_train:
        if multi_label:
            weights = positive_weights(label_ids["train"], model_args.class_weighting)
        else:
            weights = class_weights(label_ids["train"], len(label_names), model_args.class_weighting)
        if weights is not None or model_args.focal_gamma > 0:
            loss_func = make_loss_func(weights, model_args.focal_gamma, multi_label=multi_label)
            if weights is not None:
                logger.info("class weights (%s): %s", model_args.class_weighting, np.round(weights, 3).tolist())
        if model_args.oversample:
            if multi_label:
                raise DataError("--oversample supports single-label data only; use --class_weighting for multi-label")
            tokenized["train"] = oversample(tokenized["train"], label_ids["train"], seed=training_args.seed)
            logger.info("oversampled training set: %d examples", len(tokenized["train"]))

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized.get("train"),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8),
        compute_loss_func=loss_func,
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(model, training_args, model_args.layerwise_lr_decay),
        callbacks=[EpochSeededSampling()],  # a resumed run trains in the same order (shared/resume.py)
    )

    # 8. Train.
    results: dict[str, float] = {}
    if training_args.do_train:
        train_output = train_with_resume(trainer, checkpoint)
        results.update({k: v for k, v in train_output.metrics.items()})
        results["train_samples"] = len(tokenized["train"])
        results["train_truncated_examples"] = truncated["train"]
        results["train_trainable_parameters"] = trainable

    def predict_probs(split: str) -> np.ndarray:
        dataset = tokenized[split]
        if "labels" in dataset.column_names:  # metrics are computed here, from probabilities, not by Trainer
            dataset = dataset.remove_columns(["labels"])
        logits = predict_in_order(trainer, dataset, lengths=dataset["length"]).predictions
        return sigmoid(logits) if multi_label else softmax(logits)

    # 9. Evaluate on validation; tune multi-label decision thresholds there (never on test).
    thresholds = np.full(len(label_names), 0.5)
    if multi_label and getattr(model.config, "decision_thresholds", None):
        thresholds = np.array([model.config.decision_thresholds[n] for n in label_names])
    if training_args.do_eval:
        probs = predict_probs("validation")
        if multi_label:
            if training_args.do_train:
                thresholds = tune_thresholds(label_ids["validation"], probs)
            eval_metrics = multilabel_metrics(label_ids["validation"], probs, thresholds)
        else:
            eval_metrics = classification_metrics(label_ids["validation"], probs)
        eval_metrics["samples"] = len(probs)
        eval_metrics["truncated_examples"] = truncated["validation"]
        results.update(prefixed(eval_metrics, "eval"))
    if multi_label:
        model.config.decision_thresholds = {n: float(t) for n, t in zip(label_names, thresholds)}

    # 10. Predict on test: metrics with bootstrap CIs when labelled, predictions file always.
    output_dir = training_args.output_dir
    is_main = trainer.is_world_process_zero()
    if is_main:
        os.makedirs(output_dir, exist_ok=True)
    if training_args.do_predict:
        probs = predict_probs("test")
        if multi_label:
            predicted = [[label_names[j] for j in np.flatnonzero(row >= thresholds)] for row in probs]
        else:
            predicted = [label_names[j] for j in probs.argmax(axis=1)]
        table = pd.DataFrame({"row": split_rows.get("test", np.arange(len(probs)))})  # a fold: rows of the train file
        if labelled["test"]:
            table["gold"] = ["|".join(g) if multi_label else g for g in parsed["test"]]
        table["predicted"] = ["|".join(p) if multi_label else p for p in predicted]
        for j, name in enumerate(label_names):
            table[f"prob_{name}"] = probs[:, j]
        if labelled["test"]:
            gold = label_ids["test"]
            if multi_label:
                test_metrics = multilabel_metrics(gold, probs, thresholds)
                report = multilabel_report_dict(gold, probs, thresholds, label_names)

                def score(idx):
                    return multilabel_metrics(gold[idx], probs[idx], thresholds)
            else:
                test_metrics = classification_metrics(gold, probs)
                report = classification_report_dict(gold, probs, label_names)

                def score(idx):
                    return classification_metrics(gold[idx], probs[idx])
            headline = MULTI_LABEL_HEADLINE if multi_label else SINGLE_LABEL_HEADLINE
            if data_args.bootstrap_resamples:
                intervals = bootstrap_ci(
                    lambda idx: {k: v for k, v in score(idx).items() if k in headline},
                    len(probs),
                    resamples=data_args.bootstrap_resamples,
                    groups=split_groups.get("test"),
                    seed=training_args.seed,
                )
                test_metrics = add_ci(test_metrics, intervals)
            test_metrics["samples"] = len(probs)
            test_metrics["truncated_examples"] = truncated["test"]
            results.update(prefixed(test_metrics, "test"))
            if is_main:
                atomic_write_json(os.path.join(output_dir, "test_report.json"), report)
                if not multi_label:
                    plot_confusion_matrix(report["confusion_matrix"], label_names, os.path.join(output_dir, "confusion_matrix.png"))
                plot_roc_curves(gold, probs, label_names, os.path.join(output_dir, "roc_curves.png"))
        if is_main:
            atomic_write_text(os.path.join(output_dir, "test_predictions.csv"), table.to_csv(index=False))

    # 11. Save the model (plain, merged LoRA, or adapter + head), results and the model card.
    # Every process takes part in gathering FSDP-sharded weights (None otherwise); only the main one writes.
    state_dict = full_state_dict(trainer) if training_args.do_train else None
    if is_main:
        if training_args.do_train:
            save_model(trainer.model, output_dir, merge=model_args.merge_lora, state_dict=state_dict)
            tokenizer.save_pretrained(output_dir)
        if multi_label:
            atomic_write_json(os.path.join(output_dir, "thresholds.json"), model.config.decision_thresholds)
        for split_prefix in ("train", "eval", "test"):
            part = {k: v for k, v in results.items() if k.startswith(f"{split_prefix}_")}
            if part:
                save_results(output_dir, split_prefix, part)
        data_summary = {}
        for split, (dataset, _) in splits.items():
            summary = {"examples": len(dataset)}
            if split in parsed:
                counts: dict[str, int] = {}
                for labels in parsed[split]:
                    for name in labels if multi_label else [labels]:
                        counts[name] = counts.get(name, 0) + 1
                summary["labels"] = {name: counts.get(name, 0) for name in label_names}
            data_summary[split] = summary
        write_model_card(
            output_dir,
            title="Medical text classifier",
            base_model=model_args.model_name_or_path,
            pipeline_tag="text-classification",
            task_description=(
                f"{'Multi-label' if multi_label else 'Single-label'} classification into {len(label_names)} classes: "
                f"{', '.join(label_names)}."
            ),
            data_summary=data_summary,
            metrics=results,
            headline_metrics=MULTI_LABEL_HEADLINE if multi_label else SINGLE_LABEL_HEADLINE,
            training={
                "epochs": training_args.num_train_epochs,
                "learning_rate": training_args.learning_rate,
                "batch_size": training_args.per_device_train_batch_size * training_args.world_size,
                "max_seq_length": max_length,
                "bf16": training_args.bf16,
                "class_weighting": model_args.class_weighting,
                "focal_gamma": model_args.focal_gamma,
                "oversample": model_args.oversample,
                "lora": f"r={model_args.lora_r}, alpha={model_args.lora_alpha}" if model_args.use_lora else "no",
                "frozen_encoder_layers": frozen_layers,
                "trainable_parameters": f"{trainable:,} of {total:,}",
                "seed": training_args.seed,
            },
            limitations=[
                f"Inputs longer than {max_length} tokens are truncated "
                f"({sum(truncated.values())} of {sum(len(d) for d, _ in splits.values())} examples here).",
                *(
                    ["Multi-label decisions use per-label thresholds tuned on the validation set (`thresholds.json`)."]
                    if multi_label
                    else []
                ),
            ],
        )
        logger.info("results, predictions and model written to %s", output_dir)
    return results


if __name__ == "__main__":
    main()
