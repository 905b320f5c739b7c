"""The model and inputs of the concept tasks, one path for the assertion and relation recipes: the entity marker
tokens added to the tokenizer and the embeddings resized (step 6), then each marked sentence tokenized, a long one
keeping the words nearest its concepts (step 7)."""

from __future__ import annotations

import logging
from typing import Sequence

import datasets
import numpy as np
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from shared.concepts.markers import add_marker_tokens, fit_around
from shared.training.models import classification_config, load_pretrained, model_for_run

logger = logging.getLogger(__name__)


def marked_classifier(model_args, training_args, label_names: list[str]):
    """(tokenizer, config, model, frozen layers): a sequence classifier over ``label_names`` whose tokenizer knows
    the marker tokens (a fine-tuned folder has them already) and whose embeddings were resized to match."""
    tokenizer = load_pretrained(AutoTokenizer, model_args)
    if add_marker_tokens(tokenizer):
        logger.info("added the entity marker tokens to the tokenizer")
    config = classification_config(model_args, label_names, False)
    model, frozen_layers = model_for_run(AutoModelForSequenceClassification, model_args, config, training_args,
                                         resize=lambda m: m.resize_token_embeddings(len(tokenizer)))
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
