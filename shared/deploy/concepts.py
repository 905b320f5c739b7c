"""Prediction for the two concept tasks from a trained folder or its ONNX export, without the training stack.

- :class:`AssertionClassifier`: problem concepts in their notes -> assertion status (present, absent, ...).
- :class:`RelationClassifier`: candidate pairs of concepts of a sentence -> relation type or "none".

Both read notes with their concepts exactly as the recipe's ``--do_predict`` reads ``--test_file`` (the same readers
and the same marked-sentence encoding, ``shared.concepts``), run the same batches and write the same files, so
``predict.py`` on a folder gives the bytes ``train.py --do_predict`` gave. The chain (``shared.deploy.chain``) calls
:meth:`ConceptClassifier.predict` on notes built in memory from the NER model's entities.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from shared.concepts.data import ASSERTED_TYPE, ConceptSet, read_assertion_split, write_assertions
from shared.concepts.encode import encode_marked
from shared.concepts.i2b2 import CANDIDATE_TYPES, NO_RELATION
from shared.concepts.markers import ENTITY, FIRST, SECOND
from shared.concepts.relations import (
    RELATION_FORMATS,
    RelationSet,
    parse_type_pairs,
    read_relation_split,
    write_relations,
)
from shared.core.errors import DataError
from shared.data.labels import encode_labels
from shared.deploy.predictors import DEFAULT_MAX_LENGTH, Outputs, _Classifier, write_classifier_predictions
from shared.evaluation.forward import predict_in_order
from shared.evaluation.metrics import classifier_metrics, positive_micro_metrics
from shared.training.models import load_pretrained, load_trained, max_sequence_length, trained_labels

logger = logging.getLogger(__name__)

MASKED_LOGIT = np.float32(-1e4)  # a class a pair's types cannot take (i2b2), as the relation recipe masks it


@dataclass
class AssertionInputArguments:
    _argument_group_name = "input"

    concepts_dir: str | None = field(default=None, metadata={
        "help": "Take the notes' concepts from the .con files in this folder (e.g. the NER predict.py output) "
                "instead of the notes' own .con files; the input is then predicted, not scored."})


@dataclass
class RelationInputArguments:
    _argument_group_name = "input"

    data_format: str | None = field(default=None, metadata={
        "help": "i2b2 (.txt + .con [+ .rel]) or brat (.txt + .ann); default: the format the model was trained on "
                "(auto tells them apart by the files).", "choices": list(RELATION_FORMATS)})
    concepts_dir: str | None = field(default=None, metadata={
        "help": "Take the notes' concepts from the .con / .ann files in this folder (e.g. the NER predict.py "
                "output); the input is then predicted, not scored."})
    candidate_types: str | None = field(default=None, metadata={
        "help": "Only pairs of these entity types are candidates (drug:drug,drug:brand; default: the trained "
                "ones)."})


class ConceptClassifier(_Classifier):
    """A folder of a concept recipe: marked sentences -> probabilities and decided labels (single-label, argmax)."""

    markers: tuple[tuple[str, str], ...]
    nearest: str

    def __init__(self, model_dir: str, backend: str = "pytorch", batch_size: int = 64, threads: int | None = None,
                 model=None):
        super().__init__(model_dir, backend, batch_size, threads, model)
        from transformers import AutoConfig, AutoTokenizer

        self.config = load_pretrained(AutoConfig, self.model_args)
        self.labels, self.multi_label = trained_labels(self.config)
        self.thresholds = None
        self.tokenizer = load_pretrained(AutoTokenizer, self.model_args)
        vocabulary = self.tokenizer.get_vocab()
        missing = [m for pair in self.markers for m in pair if m not in vocabulary]
        if missing:
            raise DataError(f"the folder's tokenizer lacks the marker token(s) {' '.join(missing)}: it was not saved "
                            "by this recipe", path=model_dir)
        self.max_length = max_sequence_length(getattr(self.config, "max_seq_length", None) or DEFAULT_MAX_LENGTH,
                                              self.tokenizer, self.config)

    def _load_torch(self):
        from transformers import AutoModelForSequenceClassification

        return load_trained(AutoModelForSequenceClassification, self.model_args)

    def encode(self, sentences: Sequence[Sequence[str]]) -> tuple[list[dict], int]:
        """(model inputs of every marked sentence, how many were cut to the words nearest their markers): the
        recipe's own encoding (``shared.concepts.encode.encode_marked``)."""
        columns, cut = encode_marked(self.tokenizer, sentences, self.max_length)
        rows = [{"input_ids": ids, "attention_mask": mask}
                for ids, mask in zip(columns["input_ids"], columns["attention_mask"])]
        return rows, cut

    def collate(self, rows: list[dict]) -> dict:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=8)(rows)

    def logits(self, sentences: Sequence[Sequence[str]], allowed: np.ndarray | None = None) -> np.ndarray:
        if not len(sentences):
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        rows, cut = self.encode(sentences)
        if cut:
            logger.warning("%d of %d sentences are longer than %d tokens and keep the words nearest the %s", cut,
                           len(rows), self.max_length, self.nearest)
        logits = np.stack(predict_in_order(self.model, rows, self.collate, self.batch_size,
                                           [len(r["input_ids"]) for r in rows], progress=self.progress(len(rows))))
        return logits if allowed is None else np.where(allowed, logits, MASKED_LOGIT)

    def predict(self, sentences: Sequence[Sequence[str]], allowed: np.ndarray | None = None) -> Outputs:
        """Logits, probabilities and the decided label of every marked sentence (``allowed``: the classes each may
        take, the others pushed out of reach)."""
        return self.outputs(self.logits(sentences, allowed))

    def example_batch(self, sentences: Sequence[Sequence[str]], allowed=None) -> dict:
        """A collated batch of real marked sentences (the export's example inputs)."""
        rows, _ = self.encode(sentences[:4])
        return dict(self.collate(rows))

    def gold_ids(self, gold: Sequence[str], where=lambda i: ("", i)) -> np.ndarray:
        """Label ids of gold labels; one the model does not know is one line naming its file and line (``where``)."""
        return encode_labels(gold, {n: i for i, n in enumerate(self.labels)}, False, where, "the model's labels")


class AssertionClassifier(ConceptClassifier):
    """An assertion status folder: each problem concept marked [E] ... [/E] in its sentence."""

    task = "assertion_status"
    markers = (ENTITY,)
    nearest = "concept"
    concept_types = (ASSERTED_TYPE,)  # the concept types it decides about (the chain checks the NER model has them)

    def read(self, path: str, concepts_dir: str | None = None) -> ConceptSet:
        """An i2b2 folder (.txt + .con [+ .ast]) read as the recipe reads --test_file (``--test_concepts_dir`` is
        ``concepts_dir``); an assertion the model does not know is one line naming its file and line."""
        concepts = read_assertion_split(path, concepts_dir)
        if concepts.labels is not None:
            self.gold_ids(concepts.labels, concepts.where)
        return concepts

    def score(self, gold: Sequence[str], outputs: Outputs) -> float:
        """Macro-F1, the recipe's selection metric."""
        return classifier_metrics(self.gold_ids(gold), outputs.probs, False)["macro_f1"]

    def write(self, output_dir: str, concepts: ConceptSet, outputs: Outputs) -> list[str]:
        """Each note as .txt + .con + .ast with the predicted assertions, and predictions.csv (the recipe's
        test_predictions/ and test_predictions.csv)."""
        notes = write_assertions(output_dir, concepts, list(outputs.labels))
        table = write_classifier_predictions(output_dir, range(len(concepts)), outputs, self.labels, False, None,
                                             None, concepts.labels, False, concepts.locations())
        return [os.path.join(output_dir, f"{n}{s}") for n in notes for s in (".txt", ".con", ".ast")] + table

    def examples(self, path: str, input_args: AssertionInputArguments, limit: int | None = None):
        concepts = self.read(path, input_args.concepts_dir)
        n = len(concepts) if limit is None else min(limit, len(concepts))
        return (concepts.words[:n],), (None if concepts.labels is None else concepts.labels[:n])


class RelationClassifier(ConceptClassifier):
    """A relation folder: each candidate pair marked [E1] ... [/E1], [E2] ... [/E2] in its sentence."""

    task = "relation_extraction"
    markers = (FIRST, SECOND)
    nearest = "pair"

    def __init__(self, model_dir: str, backend: str = "pytorch", batch_size: int = 64, threads: int | None = None,
                 model=None):
        super().__init__(model_dir, backend, batch_size, threads, model)
        if NO_RELATION not in self.labels:
            raise DataError(f"the model has no '{NO_RELATION}' class: it was not trained by this recipe",
                            path=model_dir)
        self.none_id = self.labels.index(NO_RELATION)
        self.data_format = self.record.inputs["data_format"] or "brat"
        self.type_pairs = parse_type_pairs(self.record.inputs["candidate_types"])

    @property
    def concept_types(self) -> tuple[str, ...] | None:
        """The entity types its candidate pairs are made of: --candidate_types', i2b2's, or those of its BRAT training
        notes (None: not recorded)."""
        if self.type_pairs is not None:
            return tuple(sorted({t for pair in self.type_pairs for t in pair}))
        if self.data_format == "i2b2":
            return tuple(sorted({t for pair in CANDIDATE_TYPES for t in pair}))
        trained = self.record.inputs["entity_types"]  # the types of its training notes (None: an older folder)
        return None if trained is None else tuple(trained)

    def read(self, path: str, data_format: str | None = None, concepts_dir: str | None = None,
             candidate_types: str | None = None) -> RelationSet:
        """An i2b2 or BRAT folder read as the recipe reads --test_file, in the trained format and candidate types
        unless told otherwise; a relation type the model does not know is one line naming its file and line."""
        fmt = data_format or self.record.inputs["data_format"] or "auto"
        type_pairs = parse_type_pairs(self.record.input("candidate_types", candidate_types))
        pairs = read_relation_split(path, fmt, concepts_dir, type_pairs)
        if pairs.labels is not None:
            self.gold_ids(pairs.labels, pairs.where)
        return pairs

    def score(self, gold: Sequence[str], outputs: Outputs) -> float:
        """Precision / recall / F1 micro-averaged over the relation types: the recipe's headline F1."""
        return positive_micro_metrics(self.gold_ids(gold), outputs.probs, self.none_id)["f1"]

    def write(self, output_dir: str, pairs: RelationSet, outputs: Outputs) -> list[str]:
        """Each note written back with its predicted relations (.txt + .con + .rel, or .txt + .ann) and
        predictions.csv (the recipe's test_predictions/ and test_predictions.csv)."""
        notes = write_relations(output_dir, pairs, list(outputs.labels))
        suffixes = (".txt", ".con", ".rel") if pairs.format == "i2b2" else (".txt", ".ann")
        table = write_classifier_predictions(output_dir, range(len(pairs)), outputs, self.labels, False, None, None,
                                             pairs.labels, False, pairs.locations())
        return [os.path.join(output_dir, f"{n}{s}") for n in notes for s in suffixes] + table

    def examples(self, path: str, input_args: RelationInputArguments, limit: int | None = None):
        pairs = self.read(path, input_args.data_format, input_args.concepts_dir, input_args.candidate_types)
        n = len(pairs) if limit is None else min(limit, len(pairs))
        return ((pairs.words[:n], pairs.allowed_mask(self.labels)[:n]),
                None if pairs.labels is None else pairs.labels[:n])
