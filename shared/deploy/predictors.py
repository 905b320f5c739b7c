"""Prediction from a trained output folder, or from its ONNX export, without the training stack.

One predictor per task reads a model folder the way the recipe's ``--do_predict`` does: the same tokenizer windows
(long notes are never truncated silently), the same batches, float32 outputs, the decision thresholds saved in
``config.json`` and the calibration already folded into the head. ``predict.py``, ``export_onnx.py``,
``verify_onnx.py``, ``serve.py`` and ``benchmarks/bench_inference.py`` all predict through these classes.

- :class:`TextClassifier`: notes (and note pairs) -> probabilities and decided labels.
- :class:`EntityTagger`: words -> IOB2 tags; raw text -> entities with character offsets.
- :class:`ImageClassifier`: images -> probabilities and decided labels.

``backend="onnx"`` runs ``model.onnx`` of an export folder (``recipes/export_onnx.py``) with ONNX Runtime (the CUDA
execution provider when installed and a GPU is present, else the CPU); everything around the graph (windows,
aggregation, thresholds, a CRF's Viterbi decoding) is the same code as for PyTorch.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from shared.core.args import ModelArguments, parse_args, read_config
from shared.core.errors import DataError
from shared.core.files import atomic_write_json, atomic_write_text
from shared.core.outputs import PREDICT_RESULTS
from shared.data.labels import decisions, encode_labels
from shared.data.long_text import default_stride, long_text_settings, notes_from_windows
from shared.data.tables import TableFormatArguments, read_table
from shared.evaluation.conformal import saved_conformal
from shared.evaluation.forward import predict_in_order
from shared.evaluation.metrics import classifier_metrics, sigmoid, softmax
from shared.evaluation.reports import saved_thresholds, write_predictions
from shared.formats.brat import BratDoc
from shared.formats.tags import from_scheme, spans_from_tags, split_tag, validate_tags
from shared.images.augment import AugmentConfig, PixelDataset, tta_views
from shared.images.backbone import normalization, processor_size, reload_at_trained_size, set_image_size
from shared.images.decode import decode_images
from shared.images.pixels import PixelMapping
from shared.images.readers import IMAGE_SUFFIXES, ImageSet, encode_image_labels, is_image_file, read_images
from shared.ner.crf import CrfTokenClassifier, has_crf
from shared.ner.data import load_split
from shared.ner.metrics import entity_metrics
from shared.ner.windows import _collate, load_tokenizer, make_windows, predict_windows, subword_maps, words_from_windows
from shared.tasks import folder_task, require_task
from shared.text.data import NoteEncoder, read_text_columns, require_pair_shape
from shared.training.models import load_pretrained, load_trained, max_sequence_length, require_fast, trained_labels

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
EXPORT_INFO = "export.json"  # labels, thresholds, windows and the parity check of an export (export_onnx.py)
BACKENDS = ("pytorch", "onnx")
DEFAULT_MAX_LENGTH = 128  # the text and NER recipes' --max_seq_length default, for folders that saved none
PROGRESS_FROM = 20  # batches: shorter inputs predict without a progress bar
# the tasks whose prediction files hold input content (predict_results.json and the model cards say so)
SENSITIVE_PREDICTIONS = {
    "ner": "the prediction files hold input content (CoNLL/JSON/.con/.ann hold the note words)",
    "assertion_status": "the prediction files hold input content (each note's .txt is written back)",
    "relation_extraction": "the prediction files hold input content (each note's .txt is written back)",
}


# ------------------------------------------------------------------------------------------------ input options
@dataclass
class TextInputArguments(TableFormatArguments):
    _argument_group_name = "input"

    text_column: str | None = field(default=None, metadata={"help": "Column holding the text (default: the column "
                                                                    "the model was trained on)."})
    text_pair_column: str | None = field(default=None, metadata={"help": "Column holding the second text of a model "
                                                                         "trained on pairs (default: the trained "
                                                                         "one)."})
    label_column: str | None = field(default=None, metadata={"help": "Column of gold labels, if the input has one "
                                                                     "(then macro-F1 is reported; default: the "
                                                                     "trained one)."})
    label_separator: str | None = field(default=None, metadata={"help": "Multi-label cells are split on this string, "
                                                                        "and predictions written with it (default: "
                                                                        "the trained one, else JSON lists)."})


@dataclass
class NerInputArguments:
    _argument_group_name = "input"

    data_format: str = field(default="auto", metadata={
        "help": "Input format; auto guesses from the path (.con -> i2b2, .ann -> BRAT, .json/.jsonl -> JSON, anything "
                "else -> CoNLL; a folder of raw .txt notes -> the format the model was trained on). Annotations are "
                "optional.", "choices": ["auto", "i2b2", "brat", "conll", "json"]})
    tokens_column: str | None = field(default=None, metadata={"help": "JSON field holding the word list (default: "
                                                                      "the trained one)."})
    tags_column: str | None = field(default=None, metadata={"help": "JSON field holding gold tags, if any, and where "
                                                                    "predicted tags are written (default: the trained "
                                                                    "one)."})
    conll_tag_column: int | None = field(default=None, metadata={"help": "CoNLL column (0-based, negative from the "
                                                                         "end) holding gold tags, if any (default: "
                                                                         "the trained one)."})
    overlapping_entities: str | None = field(default=None, metadata={
        "help": "Gold i2b2 / BRAT entities that flat tags cannot hold (overlapping, discontinuous): 'error', "
                "'first_fragment' or 'drop', as train.py's option (default: the trained one). Predictions are written "
                "over the input's own .ann lines either way.", "choices": ["error", "first_fragment", "drop"]})


@dataclass
class ImageInputArguments(TableFormatArguments):
    _argument_group_name = "input"

    image_column: str | None = field(default=None, metadata={"help": "Table column with the image path (relative "
                                                                     "to the table; default: the trained one)."})
    label_column: str | None = field(default=None, metadata={"help": "Table column of gold labels, if any (then "
                                                                     "macro-F1 is reported; default: the trained "
                                                                     "one)."})
    label_separator: str | None = field(default=None, metadata={"help": "Multi-label cells are split on this string, "
                                                                        "and predictions written with it (default: "
                                                                        "the trained one)."})
    skip_bad_images: bool = field(default=False, metadata={"help": "Skip unreadable images (counted) instead of "
                                                                   "stopping with an error."})
    write_image_paths: bool = field(default=False, metadata={"help": "Put image paths in predictions.csv (off: "
                                                                     "paths may identify patients)."})
    tta: int = field(default=1, metadata={"help": "Test-time augmentation: average the probabilities of the image "
                                                  "and N-1 augmentations of it, drawn with the training run's own "
                                                  "settings (so no flip training did not use). 1: off."})

    def __post_init__(self):
        super().__post_init__()
        if self.tta < 1:
            raise DataError(f"--tta must be at least 1 (1: off), got {self.tta}")


def model_arguments(model_dir: str):
    """The loading options of a model folder: safetensors only, no remote code
    (``shared.training.models.load_pretrained``)."""

    return ModelArguments(model_name_or_path=model_dir)


def is_export(model_dir: str) -> bool:
    return os.path.isfile(os.path.join(model_dir, ONNX_FILE))


def _check_backend(model_dir: str, backend: str) -> None:
    if backend not in BACKENDS:
        raise DataError(f"--backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    has_weights = any(name.endswith(".safetensors") and name != "crf.safetensors" for name in os.listdir(model_dir))
    if backend == "onnx" and not is_export(model_dir):
        raise DataError(f"no {ONNX_FILE} here: export the folder first (recipes/export_onnx.py --model_dir "
                        f"{model_dir} --output_dir <export folder>) and pass that folder", path=model_dir)
    if backend == "pytorch" and is_export(model_dir) and not has_weights:
        raise DataError("an ONNX export holds no PyTorch weights: pass --backend onnx (or the trained folder)",
                        path=model_dir)


class OnnxModel:
    """``model.onnx`` run by ONNX Runtime, called like a model in :func:`shared.evaluation.forward.predict_in_order`:
    the batch's tensors in, float32 logits out (inputs the graph does not take are ignored)."""

    def __init__(self, path: str, providers: Sequence[str] | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise DataError("--backend onnx needs ONNX Runtime: pip install onnxruntime (onnxruntime-gpu for CUDA)") \
                from None
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # ONNX Runtime's own warnings carry no input, but are noise here
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, options, providers=list(providers))
        except Exception as e:  # a corrupt or foreign file: InvalidGraph, Fail, ...
            raise DataError(f"ONNX Runtime cannot load the model: {str(e).splitlines()[0][:300]}", path=path) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.providers = self.session.get_providers()

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise DataError(f"the exported graph needs input(s) {', '.join(missing)} that this model's inputs lack")
        feed = {name: inputs[name].cpu().numpy() for name in self.input_names}
        return torch.from_numpy(self.session.run(None, feed)[0]).float()


@dataclass
class Outputs:
    """What one pass over an input gave: ``logits`` (per example; NER: per window, its own positions), the decided
    ``labels`` (classifiers: a name or a list of names; NER: IOB2 tags per example) and ``probs`` (classifiers)."""

    logits: list[np.ndarray]
    labels: list[Any]
    probs: np.ndarray | None = None
    sets: list[list[str]] | None = None  # conformal prediction sets (label names), when the folder saved them


class _Predictor:
    task: str
    batch_size: int

    def __init__(self, model_dir: str, backend: str = "pytorch", batch_size: int = 64, threads: int | None = None,
                 model=None):
        self.record = require_task(model_dir, self.task)  # before anything else: a folder of another task
        _check_backend(model_dir, backend)
        if batch_size < 1:
            raise DataError(f"--batch_size must be at least 1, got {batch_size}")
        self.model_dir, self.backend, self.batch_size = model_dir, backend, batch_size
        self.model_args = model_arguments(model_dir)
        self.threads = threads
        self._model = model  # a model already in memory (benchmarks); loaded lazily otherwise

    @property
    def model(self):
        if self._model is None:
            self._model = (OnnxModel(os.path.join(self.model_dir, ONNX_FILE), threads=self.threads)
                           if self.backend == "onnx" else self._load_torch())
        return self._model

    def _load_torch(self):
        raise NotImplementedError

    def progress(self, n_examples: int) -> bool:
        return n_examples > PROGRESS_FROM * self.batch_size

    def examples(self, path: str, input_args, limit: int | None = None) -> tuple[tuple, list | None]:
        """The first ``limit`` examples of an input as :meth:`predict` takes them, and their gold labels (or None):
        what the parity check and the benchmarks run."""
        raise NotImplementedError


class _Classifier(_Predictor):
    """Text and image classifiers: labels, optional multi-label sigmoid, the decision thresholds saved with them."""

    labels: list[str]
    multi_label: bool
    thresholds: Any
    config: Any

    @functools.cached_property
    def conformal(self):
        """The conformal prediction sets saved with the folder (``--conformal_alpha``), or None."""
        return saved_conformal(self.config)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(logits) if self.multi_label else softmax(logits)

    def outputs(self, logits: np.ndarray) -> Outputs:

        probs = self.probabilities(logits)
        return Outputs(list(logits), decisions(probs, self.labels, self.multi_label, self.thresholds), probs,
                       self.conformal.named(probs, self.labels) if self.conformal else None)

    def score(self, gold: Sequence, outputs: Outputs) -> float:
        """The recipe's headline selection metric: macro-F1 at the saved thresholds."""

        ids = encode_labels(gold, {n: i for i, n in enumerate(self.labels)}, self.multi_label, lambda i: ("", i))
        return classifier_metrics(ids, outputs.probs, self.multi_label, self.thresholds)["macro_f1"]


# ---------------------------------------------------------------------------------------------------------- text
@dataclass
class TextInput:
    """A table to classify: its texts (and pairs), gold labels when it has a label column, and where rows are."""

    table: Any  # shared.data.tables.Table
    texts: list[str]
    pairs: list[str] | None
    gold: list | None  # label names (lists of names for multi-label) or None


class TextClassifier(_Classifier):
    """A text classifier folder: notes in overlapping windows (``chunk``) or truncated, as the folder was trained."""

    task = "text_classification"

    def __init__(self, model_dir: str, backend: str = "pytorch", batch_size: int = 64, threads: int | None = None,
                 model=None):
        super().__init__(model_dir, backend, batch_size, threads, model)
        from transformers import AutoConfig, AutoTokenizer


        self.config = load_pretrained(AutoConfig, self.model_args)
        self.labels, self.multi_label = trained_labels(self.config)
        self.tokenizer = load_pretrained(AutoTokenizer, self.model_args)
        self.max_length = max_sequence_length(getattr(self.config, "max_seq_length", None) or DEFAULT_MAX_LENGTH,
                                              self.tokenizer, self.config)
        self.long_text = long_text_settings(None, None, None, None, self.max_length, self.config)
        if self.long_text.mode == "chunk":
            require_fast(self.tokenizer, "long notes are read in overlapping windows")
        self.encoder = NoteEncoder(self.tokenizer, self.max_length, self.long_text)
        self.thresholds = saved_thresholds(self.config, self.labels) if self.multi_label else None

    def _load_torch(self):
        from transformers import AutoModelForSequenceClassification


        return load_trained(AutoModelForSequenceClassification, self.model_args)

    def read(self, path: str, text_column: str | None = None, text_pair_column: str | None = None,
             label_column: str | None = None, label_separator: str | None = None, delimiter: str | None = None,
             encoding: str | None = None) -> TextInput:
        """Read and validate a table (CSV/TSV/JSON/JSONL/parquet) as the recipe does (``shared.text.data``); gold
        labels when present. Columns left None are the ones the model was trained on (its task record); a model
        trained on pairs reads pairs, and one trained on single texts refuses a pair column."""

        if text_pair_column is not None and self.record.inputs["text_pair_column"] is None:
            raise DataError(f"--text_pair_column {text_pair_column}: this model was trained on single texts, not "
                            "pairs", path=self.model_dir)
        text_column = self.record.input("text_column", text_column)
        text_pair_column = self.record.input("text_pair_column", text_pair_column)
        label_column = self.record.input("label_column", label_column)
        table = read_table(path, delimiter, encoding)  # --delimiter / --encoding: the input file's own
        gold = read_text_columns(table, text_column, text_pair_column, label_column,
                                 self.record.input("label_separator", label_separator), require_labels=False)
        if gold is not None:
            if bool(gold) and isinstance(gold[0], list) != self.multi_label:
                raise DataError(f"the '{label_column}' column is {'multi' if isinstance(gold[0], list) else 'single'}"
                                f"-label but the model is {'multi' if self.multi_label else 'single'}-label", path)
            encode_labels(gold, {name: i for i, name in enumerate(self.labels)}, self.multi_label, table.where,
                          "the model's labels")  # an unknown label: one line naming its row
        return TextInput(table, list(table[text_column]),
                         list(table[text_pair_column]) if text_pair_column else None, gold)

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
               where=None) -> tuple[list[dict], list[int], int]:
        """(model inputs of every window, the note of every window, how many notes were truncated): the recipe's
        own encoder (``shared.text.data.NoteEncoder``)."""

        require_pair_shape(pairs, self.record.inputs["text_pair_column"], self.record.inputs["text_column"])
        truncated = self.encoder.check(texts, pairs, where or (lambda i: ("<input>", i + 1)), "text")
        encoded = self.encoder(texts, pairs)
        notes = encoded.pop("note")
        names = list(encoded)
        windows = [{name: encoded[name][k] for name in names} for k in range(len(notes))]
        return windows, notes, truncated

    def collate(self, windows: list[dict]) -> dict:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=8)(windows)

    def window_logits(self, windows: list[dict]) -> list[np.ndarray]:

        return predict_in_order(self.model, windows, self.collate, self.batch_size,
                                [len(w["input_ids"]) for w in windows], progress=self.progress(len(windows)))

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None, where=None) -> Outputs:
        """Logits per note (windows aggregated), probabilities and decided labels."""

        windows, notes, truncated = self.encode(texts, pairs, where)
        if truncated:
            logger.warning("%d of %d notes are longer than %d tokens and were truncated (the folder was trained "
                           "with --long_text truncate)", truncated, len(texts), self.max_length)
        logits = notes_from_windows(np.stack(self.window_logits(windows)), notes, len(texts), self.long_text.aggregation)
        return self.outputs(logits)

    def write(self, output_dir: str, inp: TextInput, outputs: Outputs, label_separator: str | None = None,
              jsonl: bool = False) -> list[str]:
        """``predictions.csv`` (the columns of the recipe's ``test_predictions.csv``) or ``predictions.jsonl``."""
        return write_classifier_predictions(output_dir, range(len(inp.texts)), outputs, self.labels, self.multi_label,
                                            self.thresholds, self.record.input("label_separator", label_separator),
                                            inp.gold, jsonl)

    def examples(self, path: str, input_args: TextInputArguments, limit: int | None = None):
        inp = self.read(path, input_args.text_column, input_args.text_pair_column, input_args.label_column,
                        input_args.label_separator, input_args.delimiter, input_args.encoding)
        n = len(inp.texts) if limit is None else min(limit, len(inp.texts))
        return ((inp.texts[:n], None if inp.pairs is None else inp.pairs[:n]),
                None if inp.gold is None else inp.gold[:n])

    def example_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> dict:
        """A collated batch of real windows (the export's example inputs)."""
        windows, _, _ = self.encode(texts, pairs)
        return {k: v for k, v in self.collate(windows[:4]).items() if k != "length"}


def write_classifier_predictions(output_dir: str, rows: Sequence[int], outputs: Outputs, label_names: list[str],
                                 multi_label: bool, thresholds, separator: str | None, gold: Sequence | None,
                                 jsonl: bool, extra: dict[str, Sequence] | None = None) -> list[str]:
    """The prediction table of a classifier: ``predictions.csv`` as the recipes' ``test_predictions.csv`` (``rows``:
    the input row of each prediction, extra columns, label when known, prediction, the conformal prediction set when
    the folder has one, prob_<class>), or the same fields as ``predictions.jsonl``."""

    if jsonl:  # labels stay lists / names, probabilities numbers
        lines = []
        for k, row in enumerate(rows):
            record = {"row": int(row), **{name: values[k] for name, values in (extra or {}).items()}}
            if gold is not None:
                record["label"] = gold[k]
            record["prediction"] = outputs.labels[k]
            if outputs.sets is not None:
                record["prediction_set"] = outputs.sets[k]
            record.update({f"prob_{name}": float(p) for name, p in zip(label_names, outputs.probs[k])})
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        path = os.path.join(output_dir, "predictions.jsonl")
        atomic_write_text(path, "".join(lines))
        return [path]

    return [write_predictions(output_dir, rows, outputs.probs, label_names, multi_label, thresholds, separator, gold,
                              extra, name="predictions.csv", prediction_sets=outputs.sets)]


# ----------------------------------------------------------------------------------------------------------- NER
class EntityTagger(_Predictor):
    """A clinical NER folder (softmax or CRF): words -> IOB2 tags in sliding windows over subwords."""

    task = "ner"

    def __init__(self, model_dir: str, backend: str = "pytorch", batch_size: int = 64, threads: int | None = None,
                 model=None):
        super().__init__(model_dir, backend, batch_size, threads, model)
        from transformers import AutoConfig


        self.config = load_pretrained(AutoConfig, self.model_args)
        self.labels = [self.config.id2label[i] for i in range(self.config.num_labels)]
        self.label2id = {lab: i for i, lab in enumerate(self.labels)}
        self.scheme = "BIOES" if any(lab[:2] in ("E-", "S-") for lab in self.labels) else "IOB2"
        self.alignment = getattr(self.config, "label_alignment", "all")
        self.use_crf = has_crf(model_dir)
        self.tokenizer = load_tokenizer(self.model_args)
        self.max_length = max_sequence_length(getattr(self.config, "max_seq_length", None) or DEFAULT_MAX_LENGTH,
                                              self.tokenizer, self.config)
        saved_stride = getattr(self.config, "stride", None)
        self.stride = saved_stride if saved_stride is not None else default_stride(self.max_length)
        self.b_to_i = subword_maps(self.labels)
        self._crf = None

    def _load_torch(self):
        from transformers import AutoModelForTokenClassification


        model = load_trained(AutoModelForTokenClassification, self.model_args)
        if self.use_crf:
            model = CrfTokenClassifier(model, self.labels)
            model.load_crf(self.model_dir)
        return model

    @property
    def emissions_model(self):
        """The model whose logits are exported: the transformer under the CRF, if any."""
        return self.model.model if self.use_crf and self.backend == "pytorch" else self.model

    @property
    def crf_decode(self):
        """Constrained Viterbi of the folder's CRF (run outside an exported graph), or None (argmax)."""
        if not self.use_crf:
            return None
        if self.backend == "pytorch":
            return self.model.decode
        if self._crf is None:

            self._crf = CrfTokenClassifier(torch.nn.Module(), self.labels)
            self._crf.load_crf(self.model_dir)
        return self._crf.decode

    def read(self, path: str, data_format: str = "auto", tokens_column: str | None = None,
             tags_column: str | None = None, conll_tag_column: int | None = None,
             overlapping_entities: str | None = None):
        """Read an i2b2 folder, BRAT folder, CoNLL or JSON file as the recipe does (tags optional). Settings left
        None are the trained ones (the task record); a folder of raw notes is read in the trained notes format."""

        split = load_split(path, data_format, None, self.record.input("tokens_column", tokens_column),
                           self.record.input("tags_column", tags_column),
                           self.record.input("conll_tag_column", conll_tag_column), require_tags=False,
                           notes_format=self.record.inputs["data_format"],
                           overlapping_entities=self.record.input("overlapping_entities", overlapping_entities))
        if not len(split):
            raise DataError("no examples to predict", split.source)
        if split.tags is not None:
            split.tags, _ = validate_tags(split.tags, split.where)
            known = {split_tag(lab)[1] for lab in self.labels if lab != "O"}
            for tags, (file, line) in zip(split.tags, split.where):
                for tag in tags:
                    if tag != "O" and split_tag(tag)[1] not in known:
                        raise DataError(f"entity type '{split_tag(tag)[1]}' is not one the model predicts (known: "
                                        f"{', '.join(sorted(known))})", file, line)
        return split

    def windows(self, words: list[list[str]]):

        windows, unmapped = make_windows(self.tokenizer, words, self.max_length, self.stride, None, self.alignment,
                                         self.b_to_i)
        if n_unmapped := sum(len(u) for u in unmapped):
            logger.warning("%d words produce no subword token (predicted O)", n_unmapped)
        return windows

    def predict(self, words: list[list[str]], with_logits: bool = False, windows=None) -> Outputs:
        """IOB2 tags for every word of every example (windows merged, nothing dropped); with ``with_logits`` also
        every window's logits over its own positions (the parity check). ``windows``: those :meth:`windows` made
        of ``words`` already (the chain counts them first)."""

        windows = self.windows(words) if windows is None else windows
        preds = predict_windows(self.model, windows, self.tokenizer.pad_token_id, self.batch_size,
                                decode=self.crf_decode, progress=self.progress(len(windows)))
        ids = words_from_windows(windows, preds, [len(w) for w in words], default=self.label2id["O"])
        tags = [from_scheme([self.labels[i] for i in row], self.scheme) for row in ids]
        logits = []
        if with_logits:

            raw = predict_in_order(self.emissions_model, windows, _collate(self.tokenizer.pad_token_id),
                                   self.batch_size, [len(w.input_ids) for w in windows])
            logits = [r[: len(w.input_ids)] for r, w in zip(raw, windows)]
        return Outputs(logits, tags)

    def score(self, gold: list[list[str]], outputs: Outputs) -> float:
        """Strict entity-level F1 (seqeval, IOB2), the recipe's headline."""

        return entity_metrics(gold, outputs.labels)["f1"]

    def write(self, output_dir: str, split, outputs: Outputs) -> list[str]:
        """The input written back in its own format with the predicted entities (``.con``, ``.ann``, CoNLL, JSON)."""
        return split.write_predictions(outputs.labels, output_dir)

    def examples(self, path: str, input_args: NerInputArguments, limit: int | None = None):
        split = self.read(path, input_args.data_format, input_args.tokens_column, input_args.tags_column,
                          input_args.conll_tag_column, input_args.overlapping_entities)
        n = len(split) if limit is None else min(limit, len(split))
        return (split.words[:n],), (None if split.tags is None else split.tags[:n])

    def entities(self, text: str) -> list[dict]:
        """Entities of a raw note with character offsets: lines are sentences, words as BRAT input is cut."""

        sentences = BratDoc("request", "<request>", None, text).sentences()
        tags = self.predict([[w for w, _, _ in s] for s in sentences]).labels
        found = []
        for words, sentence_tags in zip(sentences, tags):
            for etype, first, last in spans_from_tags(sentence_tags):
                start, end = words[first][1], words[last - 1][2]
                found.append({"type": etype, "start": start, "end": end, "text": text[start:end]})
        return found

    def example_batch(self, words: list[list[str]]) -> dict:

        windows = self.windows(words)[:4]
        return _collate(self.tokenizer.pad_token_id)(windows)


# -------------------------------------------------------------------------------------------------------- images
class ImageClassifier(_Classifier):
    """An image classifier folder: images decoded, converted to RGB and resized as in training, then normalised."""

    task = "image_classification"

    def __init__(self, model_dir: str, backend: str = "pytorch", batch_size: int = 64, threads: int | None = None,
                 model=None):
        super().__init__(model_dir, backend, batch_size, threads, model)
        from transformers import AutoConfig, AutoImageProcessor


        self.config = load_pretrained(AutoConfig, self.model_args)
        self.labels, self.multi_label = trained_labels(self.config)
        self.processor = load_pretrained(AutoImageProcessor, self.model_args)
        self.image_size = processor_size(self.processor)
        self.resample = int(getattr(self.processor, "resample", 2) or 2)
        self.mean, self.std = normalization(self.processor)
        self.thresholds = (saved_thresholds(self.config, self.labels) if self.multi_label
                           else getattr(self.config, "decision_threshold", None))
        self.mapping = PixelMapping.load(model_dir)  # DICOM / 16-bit values -> 8 bits as in training
        saved = getattr(self.config, "augmentation", None)
        self.augmentation = AugmentConfig.from_saved(saved) if saved else None  # what --tta repeats

    def _load_torch(self):
        from transformers import AutoModelForImageClassification


        model = load_trained(AutoModelForImageClassification, self.model_args, prepare_base=reload_at_trained_size)
        set_image_size(model, self.image_size)
        return model

    def read(self, path: str, image_column: str | None = None, label_column: str | None = None,
             label_separator: str | None = None, delimiter: str | None = None, encoding: str | None = None):
        """Class folders, a folder of images (unlabelled), an ``.npz`` (its test arrays) or a table of paths;
        columns left None are the trained ones (the task record)."""
        image_column = self.record.input("image_column", image_column)
        label_column = self.record.input("label_column", label_column)
        label_separator = self.record.input("label_separator", label_separator)
        if os.path.isdir(path) and not any(os.path.isdir(os.path.join(path, d)) and not d.startswith(".")
                                           for d in os.listdir(path)):
            found = sorted(p for p in (os.path.join(path, f) for f in os.listdir(path)) if is_image_file(p))
            if not found:
                raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) and no class subfolders", path=path)
            images = ImageSet(found, [None] * len(found), [(p, None) for p in found], path, self.multi_label)
        else:
            images = read_images(path, "test", image_column=image_column, label_column=label_column,
                                 label_separator=label_separator, delimiter=delimiter, encoding=encoding)
        if images.labeled:
            if images.multi_label != self.multi_label:
                raise DataError(f"the labels are {'multi' if images.multi_label else 'single'}-label but the model is "
                                f"{'multi' if self.multi_label else 'single'}-label", path=path)
            encode_image_labels(images, {name: i for i, name in enumerate(self.labels)})  # unknown classes: one line
        return images

    def decode(self, images, skip_bad: bool = False, cache_dir: str | None = None):

        return decode_images(images, self.image_size, skip_bad, self.resample, self.mapping, cache_dir)

    def pixels(self, decoded):

        return PixelDataset(decoded.pixels, None, self.mean, self.std)

    @staticmethod
    def collate(items):
        return {"pixel_values": torch.stack([item["pixel_values"] for item in items])}

    def predict(self, decoded, tta: int = 1) -> Outputs:
        """Logits, probabilities and decided labels of decoded images (``shared.images.decode.DecodedImages``);
        with ``tta`` > 1 the probabilities are the mean over the image and ``tta - 1`` augmentations of it."""

        if tta == 1:
            dataset = self.pixels(decoded)
            logits = np.stack(predict_in_order(self.model, dataset, self.collate, self.batch_size,
                                               progress=self.progress(len(dataset))))
            return self.outputs(logits)
        if self.augmentation is None:
            raise DataError(f"--tta {tta}: this folder records no training augmentation to repeat (trained with "
                            "--augment false, or before folders saved it)", path=self.model_dir)
        if self.conformal:
            logger.warning("--tta: the prediction sets were calibrated on single views; their coverage guarantee "
                           "does not carry over to averaged views")
        probs = np.mean([self.probabilities(np.stack(predict_in_order(
            self.model, view, self.collate, self.batch_size, progress=self.progress(tta * len(view)))))
            for view in tta_views(decoded.pixels, self.mean, self.std, self.augmentation, tta)], axis=0)
        clipped = np.clip(probs, 1e-12, 1 - 1e-12)  # the logits whose probabilities are the mean
        return self.outputs(np.log(clipped / (1 - clipped)) if self.multi_label else np.log(clipped))

    def write(self, output_dir: str, images, decoded, outputs: Outputs, label_separator: str | None = None,
              jsonl: bool = False, write_image_paths: bool = False) -> list[str]:
        """``predictions.csv`` as the recipe's ``test_predictions.csv`` (rows of the input; paths only if asked)."""
        kept = decoded.kept
        gold = [images.labels[i] for i in kept] if images.labeled else None
        extra = None
        if write_image_paths:
            extra = {"image": [images.sources[i] if isinstance(images.sources[i], str) else images.refs[i][0]
                               for i in kept]}
        return write_classifier_predictions(output_dir, kept, outputs, self.labels, self.multi_label,
                                            self.thresholds, self.record.input("label_separator", label_separator),
                                            gold, jsonl, extra)

    def examples(self, path: str, input_args: ImageInputArguments, limit: int | None = None):
        images = self.read(path, input_args.image_column, input_args.label_column, input_args.label_separator,
                           input_args.delimiter, input_args.encoding)
        chosen = images if limit is None else images.select(range(min(limit, len(images))))
        decoded = self.decode(chosen, input_args.skip_bad_images)
        return (decoded,), ([chosen.labels[i] for i in decoded.kept] if chosen.labeled else None)

    def example_batch(self, decoded) -> dict:
        dataset = self.pixels(decoded)
        return self.collate([dataset[i] for i in range(min(4, len(dataset)))])


def prediction_results(predictor: _Predictor, examples: int, seconds: float, files: list[str],
                       metric: tuple[str, float] | None = None, **counts) -> dict:
    """``predict_results.json`` of a predict.py run: counts, speed, backend, the files written (names only) and, on
    labelled input, the recipe's headline metric."""
    return {
        "examples": examples, **counts, "backend": predictor.backend,
        **({"providers": predictor.model.providers} if predictor.backend == "onnx" else {}),
        "predict_runtime": round(seconds, 3), "examples_per_second": round(examples / seconds, 3) if seconds else None,
        **({metric[0]: metric[1]} if metric else {}),
        "files": sorted(os.path.relpath(f, os.path.dirname(f)) for f in files),
        "sensitive": SENSITIVE_PREDICTIONS.get(predictor.task, "the prediction files hold no input text"),
    }


def write_prediction_results(folder: str, results: dict) -> None:

    atomic_write_json(os.path.join(folder, PREDICT_RESULTS), results)


def parse_task_arguments(arguments_cls, args: list[str] | None, description: str, usage: str,
                         folder_flag: str = "model_dir"):
    """``(arguments, input arguments, task)`` for a command that serves any task (export, verify, serve): the
    folder named by ``--<folder_flag>`` records which task it holds (:class:`shared.tasks.Task`), and so which input
    options exist."""
    import argparse
    import sys


    argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument(f"--{folder_flag}")
    peek.add_argument("--config")
    known, _ = peek.parse_known_args(argv)
    folder = getattr(known, folder_flag)
    if folder is None and known.config:
        folder = read_config(known.config)[0].get(folder_flag)
    if folder is None:  # --help, or the missing required flag, reported by the full parser
        description = (description.strip().splitlines()[0] + " Input options (columns, formats) depend on the task: "
                       "give --model_dir to list them.")
        return (*parse_args(arguments_cls, args=argv, description=description, usage=usage), None, None)
    task = folder_task(str(folder))
    arguments, input_arguments = parse_args(arguments_cls, task.input_arguments_class(), args=argv,
                                            description=description, usage=usage)
    return arguments, input_arguments, task
