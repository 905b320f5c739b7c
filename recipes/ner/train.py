#!/usr/bin/env python
"""Fine-tune a pretrained encoder for clinical named-entity recognition (i2b2 2010, BRAT, CoNLL, JSON, hub).

    python recipes/ner/train.py --config recipes/ner/configs/demo.yaml
    python recipes/ner/train.py --model_name_or_path <folder> --train_file notes/train --validation_file notes/dev \
        --test_file notes/test --output_dir out --do_train --do_eval --do_predict

Steps, in order: arguments -> logging -> seed -> data (read + validate every split) -> labels -> model ->
subword alignment + sliding windows -> Trainer -> train / evaluate / predict -> predictions written back in the
input's format -> results -> model card. Bad input fails before the model is loaded, with one line naming the file
and line. Long examples are cut into overlapping windows over subwords; every word gets a prediction.
"""

from __future__ import annotations

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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # ner_data.py beside this script

import datasets
from transformers import (
    AutoConfig,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    Trainer,
    TrainingArguments,
    set_seed,
)

from crf import CrfTokenClassifier, has_crf
from ner_data import FORMATS, NerSplit, load_hub_split, load_split
from shared.args import (DataArguments, ModelArguments, load_for_training, load_pretrained, main_guard, parse_args,
                         recipe_defaults, setup_logging)
from shared.entity_metrics import entity_metrics, entity_metrics_ci, entity_report
from shared.errors import DataError
from shared.distributed import full_state_dict
from shared.imbalance import class_weights, make_loss_func
from shared.lora import apply_lora, count_parameters, save_model
from shared.metrics import add_ci
from shared.optim import freeze_encoder_layers, freeze_input_embeddings, layers_to_freeze, optimizer_cls_and_kwargs
from shared.resume import EpochSeededSampling, resolve_checkpoint, train_with_resume
from shared.reporting import atomic_write_json, prefixed, save_results, write_model_card
from shared.splits import carve_splits, splits_to_carve
from shared.tagging import (
    IGNORE_INDEX, SCHEMES, from_scheme, label_list, make_windows, needs_prefix_space, pipeline_agreement,
    predict_windows, require_fast_tokenizer, split_tag, subword_maps, to_scheme, validate_tags, words_from_windows,
)

logger = logging.getLogger(__name__)

HEADLINE = ["f1", "precision", "recall", "macro_f1", "lenient_f1", "token_accuracy", "pipeline_agreement"]
CI_METRICS = ("f1", "precision", "recall", "macro_f1", "lenient_f1")


@dataclass
class NerDataArguments(DataArguments):
    data_format: str = field(
        default="auto",
        metadata={"help": "Input format; auto guesses from the path (.con -> i2b2, .ann -> BRAT, .json/.jsonl -> "
                          "JSON, anything else -> CoNLL).", "choices": list(FORMATS)},
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
        default=128, metadata={"help": "Subword tokens per window, special tokens included. Longer examples are "
                                       "split into overlapping windows, never truncated."})
    stride: int = field(
        default=32, metadata={"help": "Subword tokens shared by consecutive windows of a long example; each word "
                                      "is predicted from the window where it has the most context."})

    def __post_init__(self):
        super().__post_init__()
        if self.max_seq_length < 8:
            raise DataError(f"--max_seq_length must be at least 8, got {self.max_seq_length}")
        if not 0 <= self.stride < self.max_seq_length // 2:
            raise DataError(f"--stride must be in [0, max_seq_length/2), got {self.stride}")


@dataclass
class NerModelArguments(ModelArguments):
    dropout: float | None = field(
        default=0.0,
        metadata={"help": "Set every dropout probability of the model (hidden, attention, classifier); 0.1 is BERT's "
                          "own. 0 measured faster and no worse on NCBI-disease with MiniLM, 3 epochs on the 2-core "
                          "CPU: 166 vs 114 training samples/s, strict test F1 0.825 vs 0.819 (recipe README)."})
    use_crf: bool = field(
        default=False, metadata={"help": "Add a CRF output layer trained jointly; Viterbi decoding that never "
                                         "emits an invalid tag transition (e.g. I-X after O)."})


# Defaults that make the recipe fast on CPU and GPU alike; every one can be overridden on the command line.
RECIPE_DEFAULTS = {
    **recipe_defaults(),
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "learning_rate": 3e-4,  # measured on NCBI-disease (benchmarks/bench_ner.py): F1 0.768 vs 0.709 at 1e-4, 1 epoch
    "num_train_epochs": 3.0,
    "warmup_steps": 0.1,  # a float below 1 is a fraction of the training steps
    "weight_decay": 0.01,
    "train_sampling_strategy": "group_by_length",  # similar lengths per batch: little compute spent on padding
    "optim": "adamw_torch_fused",
}


def read_splits(data_args: NerDataArguments, training_args) -> dict[str, NerSplit]:
    """Read and validate every split that the run needs (train/validation labelled, test optionally)."""
    wanted = {}
    if training_args.do_train:
        wanted["train"] = (data_args.train_file, data_args.max_train_samples)
    if training_args.do_eval:
        wanted["validation"] = (data_args.validation_file, data_args.max_eval_samples)
    if training_args.do_predict:
        wanted["test"] = (data_args.test_file, data_args.max_predict_samples)
    hub = None
    if data_args.dataset_name:
        hub = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name)
    splits = {}
    flag = {"train": "do_train", "validation": "do_eval", "test": "do_predict"}
    for split, (path, limit) in wanted.items():
        if path:
            splits[split] = load_split(path, data_args.data_format, limit, data_args.tokens_column,
                                       data_args.tags_column, data_args.conll_tag_column,
                                       require_tags=split != "test",
                                       group_column=data_args.group_column if split == "train" else None)
        elif hub is not None and split in hub:
            if split == "train" and data_args.group_column:
                raise DataError("--group_column works with JSON training files (hub examples are not grouped)")
            splits[split] = load_hub_split(hub, split, data_args.tokens_column, data_args.tags_column, limit)
        else:
            continue
        if not len(splits[split]):
            raise DataError(f"{split} split has no examples", splits[split].source)
    # Validation / a cross-validation test fold cut from the training data, whole documents per split.
    carve = splits_to_carve(data_args, training_args, splits)
    for split in wanted:
        if split not in splits and split not in carve:
            raise DataError(f"--{flag[split]} needs --{split}_file (or a --dataset_name with a '{split}' split)")
    if carve:
        train = splits["train"]
        documents = len(set(train.groups))
        # one document (CoNLL without -DOCSTART-) or one per example: nothing to keep together
        groups = train.groups if data_args.group_column or 1 < documents < len(train) else None
        for split, idx in carve_splits(len(train), data_args, carve, training_args.seed, None, groups).items():
            splits[split] = train.select(idx)
    return splits


@main_guard
def main(args: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_args(
        NerModelArguments, NerDataArguments, TrainingArguments, defaults=RECIPE_DEFAULTS, args=args
    )
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise DataError("nothing to do: pass at least one of --do_train, --do_eval, --do_predict")

    # 1. Logging: counts and metadata only; note text never reaches the logs.
    setup_logging(training_args)
    # --resume_from_checkpoint as a folder (true: the newest complete one); a bad one fails before any work
    checkpoint = resolve_checkpoint(training_args) if training_args.do_train else None
    logger.info("device %s, bf16 %s", training_args.device, training_args.bf16)

    # 2. Seed before anything random (head initialisation, LoRA init, shuffling).
    set_seed(training_args.seed)

    # 3. Data: read + validate every split (offsets, concept text, overlaps, tag sequences) before the model.
    splits = read_splits(data_args, training_args)
    repaired = {}
    for name, split in splits.items():
        if split.tags is not None:
            split.tags, repaired[name] = validate_tags(split.tags, split.where, repair=data_args.repair_tags)
            if repaired[name]:
                logger.warning("%s: repaired %d invalid IOB2 tags (--repair_tags)", name, repaired[name])
        logger.info("%s: %d examples from %s (%s)", name, len(split), split.source, split.format)

    # 4. Labels: from the training data, or from the fine-tuned model when only evaluating / predicting.
    if "train" in splits:
        labels = label_list(splits["train"].tags, data_args.tag_scheme)
        scheme = data_args.tag_scheme
    else:
        config = load_pretrained(AutoConfig, model_args)
        labels = [config.id2label[i] for i in range(config.num_labels)]
        scheme = "BIOES" if any(lab[:2] in ("E-", "S-") for lab in labels) else "IOB2"
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

    # 5. Tokenizer (fast only: alignment needs word_ids) and model.
    tokenizer = load_pretrained(AutoTokenizer, model_args)
    require_fast_tokenizer(tokenizer)
    if needs_prefix_space(tokenizer):  # RoBERTa-style byte-level BPE and pre-split words
        tokenizer = load_pretrained(AutoTokenizer, model_args, add_prefix_space=True)
    max_length = min(data_args.max_seq_length, tokenizer.model_max_length)
    config = load_pretrained(AutoConfig, model_args, num_labels=len(labels), id2label=dict(enumerate(labels)),
                             label2id=label2id)
    if training_args.do_train:
        model = load_for_training(AutoModelForTokenClassification, model_args, config, training_args.device)
    else:
        from shared.lora import load_model

        model = load_model(AutoModelForTokenClassification, model_args.model_name_or_path)
    frozen_layers = layers_to_freeze(model, model_args.freeze_layers)
    frozen = freeze_encoder_layers(model, frozen_layers)
    if model_args.freeze_embeddings:
        frozen += freeze_input_embeddings(model)
    if frozen:
        logger.info("froze %d parameters (embeddings + %d encoder layers)", frozen, frozen_layers)
    use_crf = model_args.use_crf or (not training_args.do_train and has_crf(model_args.model_name_or_path))
    if use_crf and (model_args.class_weighting != "none" or model_args.focal_gamma > 0):
        raise DataError("--use_crf trains on the CRF likelihood; it cannot be combined with --class_weighting or "
                        "--focal_gamma")
    if model_args.use_crf and not training_args.do_train and not has_crf(model_args.model_name_or_path):
        raise DataError("--use_crf without --do_train needs a model trained with --use_crf (no crf.safetensors)",
                        model_args.model_name_or_path)
    if not training_args.do_train:  # predict with the alignment the model was trained with (the CRF depends on it)
        data_args.label_alignment = getattr(config, "label_alignment", data_args.label_alignment)
    if model_args.use_lora:
        model = apply_lora(model, model_args)
    if use_crf:
        model = CrfTokenClassifier(model, labels)
        if not training_args.do_train:
            model.load_crf(model_args.model_name_or_path)
        logger.info("CRF output layer (%s, constrained Viterbi decoding)", scheme)
    trainable, total = count_parameters(model)

    # 6. Alignment + windows: labels on subwords ('first' or 'all'), long examples split with --stride.
    b_to_i = subword_maps(labels)  # every subword labelled so that the subword sequence is valid IOB2/BIOES
    windows, unmapped = {}, {}
    for name, split in splits.items():
        windows[name], unmapped[name] = make_windows(
            tokenizer, split.words, max_length, data_args.stride, word_label_ids.get(name),
            data_args.label_alignment, b_to_i)
        n_long = len(windows[name]) - len(split)
        if n_long:
            logger.info("%s: %d extra windows for examples longer than %d subwords", name, n_long, max_length)
        n_unmapped = sum(len(u) for u in unmapped[name])
        if n_unmapped:
            logger.warning("%s: %d words produce no subword token (predicted O)", name, n_unmapped)

    def to_dataset(wins, with_labels: bool) -> datasets.Dataset:
        columns = {"input_ids": [w.input_ids for w in wins], "length": [len(w.input_ids) for w in wins]}
        if with_labels:
            columns["labels"] = [w.labels for w in wins]
        return datasets.Dataset.from_dict(columns)

    # 7. Loss: class weights for the rare entity labels (O dominates) and/or focal loss.
    loss_func = None
    if training_args.do_train:
        flat = [lab for w in windows["train"] for lab in w.labels if lab != IGNORE_INDEX]
        # Some labels may never occur in training (e.g. I-X when every X is one word): they keep weight 1.
        weights = class_weights(np.asarray(flat, dtype=np.int64), len(labels), model_args.class_weighting,
                                allow_absent=True)
        if weights is not None:
            logger.info("class weights (%s): %s", model_args.class_weighting, np.round(weights, 3).tolist())
        if weights is not None or model_args.focal_gamma > 0:
            loss_func = make_loss_func(weights, model_args.focal_gamma)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=to_dataset(windows["train"], True) if "train" in windows else None,
        processing_class=tokenizer,
        data_collator=DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8),
        compute_loss_func=loss_func,
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(model, training_args, model_args.layerwise_lr_decay),
        callbacks=[EpochSeededSampling()],  # a resumed run trains in the same order (shared/resume.py)
    )

    # 8. Train.
    results: dict[str, float] = {}
    if training_args.do_train:
        train_output = train_with_resume(trainer, checkpoint)
        results.update(train_output.metrics)
        results["train_samples"] = len(splits["train"])
        results["train_windows"] = len(windows["train"])
        results["train_repaired_tags"] = repaired.get("train", 0)

    def predict_tags(name: str) -> tuple[list[list[str]], dict[str, float]]:
        """IOB2 tags for every word of every example of a split (windows merged, nothing dropped), and how often
        pipeline(aggregation_strategy="simple") on the saved folder gives the same entities."""
        split = splits[name]
        # float32, as pipeline() computes: the entities written here are the ones users get from the saved model
        decode = trainer.model.decode if use_crf else None
        preds = predict_windows(trainer.model, windows[name], tokenizer.pad_token_id,
                                training_args.per_device_eval_batch_size, bf16=False, decode=decode)
        word_ids = words_from_windows(windows[name], preds, [len(w) for w in split.words], default=label2id["O"])
        tags = [from_scheme([labels[i] for i in ids], scheme) for ids in word_ids]
        extra = {}
        if not use_crf and scheme == "IOB2":  # the pipeline reads neither a CRF nor BIOES tags
            agree, checked = pipeline_agreement(windows[name], preds, labels, tags)
            if checked:
                extra = {"pipeline_agreement": agree / checked, "pipeline_checked": checked}
        return tags, extra

    # 9. Evaluate on validation.
    if training_args.do_eval:
        pred, extra = predict_tags("validation")
        eval_metrics = {**entity_metrics(splits["validation"].tags, pred), **extra}
        eval_metrics["samples"] = len(pred)
        results.update(prefixed(eval_metrics, "eval"))

    # 10. Predict on test: predictions in the input's own format; metrics with bootstrap CIs when labelled.
    output_dir = training_args.output_dir
    is_main = trainer.is_world_process_zero()
    written = []
    if training_args.do_predict:
        test = splits["test"]
        pred, extra = predict_tags("test")
        if is_main:
            written = test.write_predictions(pred, os.path.join(output_dir, "predictions"))
        if test.tags is not None:
            test_metrics = {**entity_metrics(test.tags, pred), **extra}
            if data_args.bootstrap_resamples:
                intervals = entity_metrics_ci(test.tags, pred, groups=test.groups,
                                              resamples=data_args.bootstrap_resamples, seed=training_args.seed,
                                              names=CI_METRICS)
                test_metrics = add_ci(test_metrics, intervals)
            test_metrics["samples"] = len(pred)
            test_metrics["repaired_tags"] = repaired.get("test", 0)
            results.update(prefixed(test_metrics, "test"))
            if is_main:
                atomic_write_json(os.path.join(output_dir, "test_report.json"), entity_report(test.tags, pred))

    # 11. Save the model, results and the model card.
    # Every process takes part in gathering FSDP-sharded weights (None otherwise); only the main one writes.
    state_dict = full_state_dict(trainer) if training_args.do_train else None
    if state_dict is not None and use_crf:  # the encoder's own weights, without the CRF wrapper's "model." prefix
        state_dict = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
    if is_main:
        os.makedirs(output_dir, exist_ok=True)
        if training_args.do_train:
            encoder = trainer.model.model if use_crf else trainer.model
            base = encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder
            base.config.label_alignment = data_args.label_alignment
            base.config.use_crf = use_crf
            save_model(encoder, output_dir, merge=model_args.merge_lora, state_dict=state_dict)
            if use_crf:
                trainer.model.save_crf(output_dir)
            tokenizer.save_pretrained(output_dir)
        for prefix in ("train", "eval", "test"):
            part = {k: v for k, v in results.items() if k.startswith(f"{prefix}_")}
            if part:
                save_results(output_dir, prefix, part)
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
            training={
                "epochs": training_args.num_train_epochs,
                "learning_rate": training_args.learning_rate,
                "batch_size": training_args.per_device_train_batch_size * training_args.world_size,
                "max_seq_length (window)": max_length,
                "stride": data_args.stride,
                "label_alignment": data_args.label_alignment,
                "output layer": "CRF (constrained Viterbi)" if use_crf else "softmax",
                "tag_scheme": scheme,
                "bf16": training_args.bf16,
                "class_weighting": model_args.class_weighting,
                "lora": f"r={model_args.lora_r}, alpha={model_args.lora_alpha}" if model_args.use_lora else "no",
                "trainable_parameters": f"{trainable:,} of {total:,}",
                "seed": training_args.seed,
            },
            limitations=[
                f"Examples longer than {max_length} subword tokens are read in overlapping windows (stride "
                f"{data_args.stride}); each word is predicted in the window where it has the most context.",
                "Entities are flat and contiguous: nested, overlapping or discontinuous annotations are not "
                "represented.",
                "Load with `pipeline(\"token-classification\", model=<this folder>, aggregation_strategy=\"simple\")`"
                " on whitespace-joined words; it gives the recipe's entities on the share of examples reported as "
                "`pipeline_agreement` (elsewhere a word's subwords disagree); long texts need the pipeline's "
                "`stride` argument" + (", and it reads the emissions without the CRF." if use_crf else "."),
            ],
        )
        logger.info("results, %d prediction file(s) and model written to %s", len(written), output_dir)
    return results


if __name__ == "__main__":
    main()
