"""The labels, model and inputs of the concept tasks, one path for the assertion and relation recipes: the classes
of the training data in the task's order (step 5), the entity marker tokens added to the tokenizer and the
embeddings resized (step 6), then each marked sentence tokenized, a long one keeping the words nearest its concepts
(step 7)."""

from __future__ import annotations

import logging
from typing import Sequence

import datasets
import numpy as np
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from shared.concepts.markers import MARKER_TOKENS, add_marker_tokens, fit_around
from shared.data.labels import encode_labels, names_in, require_classes, sort_label_names
from shared.training.models import classification_config, load_pretrained, model_for_run, trained_labels

logger = logging.getLogger(__name__)


def concept_labels(splits: dict, model_args, order: Sequence[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """(class names, label ids of every labelled split): the classes the training data holds, in ``order`` (a class
    without training examples can be neither learnt nor weighted), or the model folder's when only evaluating; a
    label outside them is one line naming its file and line."""
    if "train" in splits:
        names = names_in(splits["train"].labels)
        label_names = require_classes(sort_label_names(names, [n for n in order if n in names]), False,
                                      splits["train"].source)
    else:
        label_names, _ = trained_labels(load_pretrained(AutoConfig, model_args))
    known_as = "the training data" if "train" in splits else "the model's labels"
    label2id = {name: i for i, name in enumerate(label_names)}
    return label_names, {split: encode_labels(examples.labels, label2id, False, examples.where, known_as)
                         for split, examples in splits.items() if examples.labels is not None}


def marked_classifier(model_args, training_args, label_names: list[str], markers: Sequence[str] = MARKER_TOKENS):
    """(tokenizer, config, model, frozen layers): a sequence classifier over ``label_names`` whose tokenizer knows
    the marker tokens (a fine-tuned folder has them already) and whose embeddings were resized to match. Under
    ``--use_lora`` the embedding rows of the task's ``markers`` are trained and saved with the adapter: they are
    new, and LoRA alone would leave them at their random start."""
    tokenizer = load_pretrained(AutoTokenizer, model_args)
    if add_marker_tokens(tokenizer):
        logger.info("added the entity marker tokens to the tokenizer")
    config = classification_config(model_args, label_names, False)
    model, frozen_layers = model_for_run(AutoModelForSequenceClassification, model_args, config, training_args,
                                         resize=lambda m: add_marker_tokens(tokenizer, m),  # grows only if short
                                         trainable_tokens=tokenizer.convert_tokens_to_ids(list(markers)))
    return tokenizer, config, model, frozen_layers


def encode_marked(tokenizer, sentences: Sequence[Sequence[str]], max_length: int) -> tuple[dict[str, list], int]:
    """Model inputs of marked sentences (``input_ids``, ``attention_mask``, ``length``), and how many were cut to
    the words nearest their markers to fit ``max_length``."""
    fitted = [fit_around(tokenizer, words, max_length) for words in sentences]
    encoded = tokenizer([" ".join(words) for words, _ in fitted], truncation=True, max_length=max_length)
    columns = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
               "length": [len(ids) for ids in encoded["input_ids"]]}
    return columns, sum(was_cut for _, was_cut in fitted)


def marked_datasets(tokenizer, splits: dict, label_ids: dict[str, np.ndarray], max_length: int,
                    nearest: str) -> tuple[dict[str, datasets.Dataset], dict[str, int]]:
    """Every split's marked sentences (``splits[name].words``) as a dataset with its labels where known, and how
    many sentences of each were cut (logged: they keep the words nearest the ``nearest``)."""
    tokenized, cut = {}, {}
    for split, examples in splits.items():
        columns, cut[split] = encode_marked(tokenizer, examples.words, max_length)
        if cut[split]:
            logger.warning("%s: %d of %d sentences are longer than %d tokens and keep the words nearest the %s",
                           split, cut[split], len(examples), max_length, nearest)
        if split in label_ids:
            columns["labels"] = label_ids[split].tolist()
        tokenized[split] = datasets.Dataset.from_dict(columns)
    return tokenized, cut
