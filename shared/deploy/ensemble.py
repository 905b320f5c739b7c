"""Fold models that predict as one: the average of their calibrated probabilities.

``recipes/cross_validate.py --keep_fold_models`` trains K models of one configuration, each on K-1 folds. Averaging
their probabilities usually beats any one of them, and the pooled out-of-fold predictions that scored the folds are
a fair set on which to choose the ensemble's decision thresholds. The cross-validation folder then becomes a model
folder of its own: its ``config.json`` holds the task record (the members' input settings, which must agree) and an
``ensemble`` entry, its ``README.md`` is the ensemble's model card, and ``predict.py --model_dir <cv folder>``,
``serve.py`` and the chain (``pipeline.py``) read it as they read one model::

    "ensemble": {"members": ["fold_0", "fold_1", ...], "decision_thresholds": {"label": 0.41, ...},
                 "thresholds_from": "..."}

Each member reads its inputs as its recipe did (windows, image size and pixel mapping, the temperature folded into
its head); the ensemble checks at load that they read them alike, so one decoding or encoding serves all. Every task:

- text, image, assertion and relation classifiers average the members' probabilities;
- NER members see the same windows, so the ensemble averages their tag probabilities at every position and takes
  the most probable tag; CRF members instead average their emission and transition scores and decode them with
  the constrained Viterbi, which finds the tag path whose mean member score is highest.

Conformal prediction sets are not averaged: an ensemble has none, and no ONNX export.
"""

from __future__ import annotations

import functools
import os
from operator import attrgetter
from typing import Any

import numpy as np
import torch

from shared.core.errors import DataError
from shared.core.files import atomic_write_json, atomic_write_text
from shared.data.labels import decisions
from shared.deploy.predictors import SENSITIVE_PREDICTIONS, Outputs
from shared.evaluation.forward import plain_forward
from shared.evaluation.metrics import tune_thresholds
from shared.evaluation.reports import decision_thresholds
from shared.formats.tags import from_scheme
from shared.ner.crf import mean_crf
from shared.ner.windows import predict_windows, words_from_windows
from shared.tasks import folder_task, read_folder_config, record_of, require_task
from shared.training.models import ENSEMBLE_KEY, names_in_config

# What must be equal for the members to read an input alike. Each member still makes its own prediction: a fold
# that chose another reading of long notes (--chunk_aggregation auto) keeps it.
SAME_READING = {"text_classification": ("max_length", "long_text.mode", "long_text.stride"),
                "image_classification": ("image_size", "resample", "mean", "std", "mapping"),
                "ner": ("max_length", "stride", "alignment", "scheme", "use_crf"),
                "assertion_status": ("max_length",),
                "relation_extraction": ("max_length",)}


def is_ensemble(model_dir: str) -> bool:
    return ENSEMBLE_KEY in names_in_config(model_dir)  # a broken config.json: the task's own loader reports it


class Ensemble:
    """The predictor of an ensemble folder: the task's predictor over every member, probabilities averaged and
    decided at the ensemble's own thresholds. Reading inputs and writing predictions are the task predictor's own
    methods, run with the ensemble's labels and thresholds."""

    def __init__(self, model_dir: str, backend: str = "pytorch", batch_size: int = 64, threads: int | None = None):
        config = read_folder_config(model_dir)
        self.record = record_of(config, model_dir)
        entry = config[ENSEMBLE_KEY]
        self.task = self.record.task.name
        members = entry.get("members") or []
        if not members:
            raise DataError("config.json: the ensemble lists no members", path=model_dir)
        predictor_class = self.record.task.predictor_class()
        self.members = []
        for name in members:
            folder = os.path.join(model_dir, name)
            if not os.path.isdir(folder):
                raise DataError(f"ensemble member {name} is missing (keep the folder whole when copying it)",
                                path=model_dir)
            self.members.append(predictor_class(folder, backend, batch_size, threads))
        first = self.members[0]
        for name, member in zip(members[1:], self.members[1:]):
            if member.labels != first.labels or _multi_label(member) != _multi_label(first):
                raise DataError(f"ensemble member {name} predicts {member.labels}, {members[0]} {first.labels}",
                                path=model_dir)
            for setting in ("record", *SAME_READING[self.task]):
                read = attrgetter(setting)  # dotted: "long_text.mode"
                if _comparable(read(member)) != _comparable(read(first)):
                    raise DataError(f"ensemble member {name} reads its inputs differently from {members[0]} "
                                    f"({setting}): its members must come from one configuration", path=model_dir)
        self.model_dir, self.backend, self.batch_size = model_dir, backend, batch_size
        self.member_names = members
        self.labels, self.multi_label = first.labels, _multi_label(first)
        cuts = entry.get("decision_thresholds")
        self.thresholds = (np.array([cuts.get(n, 0.5) for n in self.labels]) if self.multi_label and cuts
                           else entry.get("decision_threshold"))
        self.conformal = None

    def __getattr__(self, name: str) -> Any:
        """Everything about reading inputs (tokenizer, windows, image size, pixel mapping) is the first member's:
        the members agree on it (checked at load). The task's methods run on the ensemble itself, so labels and
        thresholds are the ensemble's."""
        if name.startswith("__") or name == "members":
            raise AttributeError(name)
        first = self.members[0]
        method = getattr(type(first), name, None)
        if callable(method) and name in ("read", "write", "score", "examples", "decode", "pixels", "example_batch",
                                         "entities"):
            return method.__get__(self)
        return getattr(first, name)

    @property
    def model(self) -> list:
        """Every member's weights (or ONNX session), loaded."""
        return [member.model for member in self.members]

    def predict(self, *inputs, **options) -> Outputs:
        """Every member's prediction of the same inputs; their probabilities averaged."""
        if self.task == "ner":
            return self._predict_tags(*inputs, **options)
        probs = np.mean([member.predict(*inputs, **options).probs for member in self.members], axis=0)
        clipped = np.clip(probs, 1e-12, 1 - 1e-12)
        logits = np.log(clipped / (1 - clipped)) if self.multi_label else np.log(clipped)
        return Outputs(list(logits), decisions(probs, self.labels, self.multi_label, self.thresholds), probs)

    def _predict_tags(self, words: list[list[str]], with_logits: bool = False, windows=None) -> Outputs:
        """IOB2 tags for every word, from the members' scores averaged at every position of the shared windows."""
        if with_logits:
            raise DataError("an ensemble has no logits of its own to check against an export: export and verify its "
                            "members one by one", path=self.model_dir)
        first = self.members[0]
        windows = first.windows(words) if windows is None else windows
        decode = self._mean_crf.decode if first.use_crf else None
        preds = predict_windows(self._mean_emissions, windows, first.tokenizer.pad_token_id, self.batch_size, decode=decode,
                                progress=first.progress(len(windows)))
        ids = words_from_windows(windows, preds, [len(w) for w in words], default=first.label2id["O"])
        return Outputs([], [from_scheme([first.labels[i] for i in row], first.scheme) for row in ids])

    @functools.cached_property
    def _mean_emissions(self) -> MeanEmissions:
        return MeanEmissions([member.emissions_model for member in self.members], self.members[0].use_crf)

    @functools.cached_property
    def _mean_crf(self):
        """Read once, not per request: the members' CRF scores averaged."""
        return mean_crf([member.model_dir for member in self.members], self.labels)


class MeanEmissions:
    """Several token classifiers (modules or exported graphs) as one model for ``predict_windows``: at every
    position the log of the mean of their tag probabilities (its argmax: the tag most probable on average), or
    with ``crf`` the mean of their emission scores (to be decoded with their mean transitions)."""

    def __init__(self, models: list, crf: bool):
        self.models, self.crf = models, crf
        for model in models:
            if isinstance(model, torch.nn.Module):
                model.eval()

    @torch.no_grad()
    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        scores = []
        for model in self.models:
            if isinstance(model, torch.nn.Module):
                device = next(model.parameters()).device
                logits = plain_forward(model)(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu()
            else:
                logits = model(**inputs)
            scores.append(logits if self.crf else torch.softmax(logits, dim=-1))
        mean = torch.stack(scores).mean(0)
        return mean if self.crf else torch.log(mean.clamp_min(1e-12))


def _multi_label(predictor) -> bool:
    return getattr(predictor, "multi_label", False)  # a NER tagger has one tag per word


def _comparable(value):
    if hasattr(value, "__dict__"):
        return {k: _comparable(v) for k, v in vars(value).items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    return value


def load_folder_predictor(model_dir: str, backend: str = "pytorch", batch_size: int = 64,
                          threads: int | None = None, task: str | None = None):
    """The predictor of a model folder: its task's (``shared.tasks``), or an :class:`Ensemble` of fold models;
    with ``task``, a folder of another task is one line saying which command predicts with it."""
    if task is not None:
        require_task(model_dir, task)
    if is_ensemble(model_dir):
        return Ensemble(model_dir, backend, batch_size, threads)
    return folder_task(model_dir).predictor_class()(model_dir, backend, batch_size, threads)


def write_ensemble(output_dir: str, fold_dirs: list[str], pooled: dict, fixed_threshold: str | None,
                   pooled_metrics: dict[str, float], recipe: str) -> dict:
    """Make a cross-validation folder whose fold models were kept an ensemble folder: ``config.json`` (the task
    record of the folds, which must agree, and the ``ensemble`` entry) and ``README.md`` (the model card). Multi-label
    thresholds are tuned on the pooled out-of-fold probabilities (``pooled``, ``shared.trust.audit``; None for NER,
    which has no thresholds) unless the recipe was given ``--decision_threshold`` (``fixed_threshold``). Returns the
    ``ensemble`` entry."""
    configs = [read_folder_config(folder) for folder in fold_dirs]
    records = [record_of(config, folder) for config, folder in zip(configs, fold_dirs)]
    for folder, record in zip(fold_dirs[1:], records[1:]):
        if record != records[0]:
            raise DataError(f"its task record differs from {os.path.basename(fold_dirs[0])}'s", path=folder)
    names = [os.path.basename(folder) for folder in fold_dirs]
    entry: dict = {"members": names}
    task = records[0].task.name
    if task == "ner":
        pass  # tags are decided by argmax or the CRF's Viterbi: nothing to tune
    elif pooled["multi_label"]:
        labels = pooled["label_names"]
        if fixed_threshold is not None:
            cuts = np.full(len(labels), float(fixed_threshold))
            entry["thresholds_from"] = f"--decision_threshold {fixed_threshold}"
        else:
            gold = np.zeros_like(pooled["probs"], dtype=np.int64)
            for row, ids in enumerate(pooled["gold"]):
                gold[row, ids] = 1
            cuts = tune_thresholds(gold, pooled["probs"])
            entry["thresholds_from"] = (f"tuned for F1 per label on the pooled out-of-fold probabilities of "
                                        f"{len(gold)} rows")
        entry["decision_thresholds"] = decision_thresholds(labels, cuts)
    else:
        entry["decision_threshold"] = configs[0].get("decision_threshold")
    config = {key: configs[0][key] for key in ("recipe", "id2label", "label2id", "problem_type") if key in configs[0]}
    atomic_write_json(os.path.join(output_dir, "config.json"), {**config, ENSEMBLE_KEY: entry})
    atomic_write_text(os.path.join(output_dir, "README.md"), _model_card(recipe, task, names, entry, pooled_metrics))
    return entry


def _model_card(recipe: str, task: str, names: list[str], entry: dict, metrics: dict[str, float]) -> str:
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items()
                     if isinstance(v, float) and not k.endswith(("_low", "_high")))
    thresholds = entry.get("decision_thresholds")
    decided = (f"per-label thresholds ({entry['thresholds_from']}): "
               + ", ".join(f"{k} {v:.3f}" for k, v in thresholds.items()) if thresholds
               else f"threshold {entry['decision_threshold']} on the positive class" if entry.get("decision_threshold")
               else "the most probable class")
    averages = ("averages the members' tag probabilities at every subword position of the windows they share and "
                "takes the most probable tag (CRF members: their emission and transition scores, decoded by the "
                "constrained Viterbi)" if task == "ner" else
                "averages the members' calibrated probabilities (each member's temperature is folded into its head) "
                f"and decides by {decided}")
    sensitive = SENSITIVE_PREDICTIONS.get(task, "the prediction files hold no input text")
    return (
        f"# Ensemble of {len(names)} fold models ({task})\n\n"
        f"Made by `recipes/cross_validate.py --recipe {recipe} --keep_fold_models`: each member was trained on all "
        f"folds but one. The ensemble {averages}.\n\n"
        f"Members: {', '.join(f'`{n}/`' for n in names)} (each with its own model card).\n\n"
        "## What to expect\n\nThe pooled out-of-fold metrics below score each member on the fold it did not train "
        "on: a fair estimate for one member, and usually a slightly pessimistic one for the ensemble, which no held-out "
        "set here scored. Score the ensemble on a test set of your own: `predict.py --model_dir <this folder> "
        "--input <labelled test data>`.\n\n| pooled out-of-fold metric | value |\n|---|---|\n" + rows + "\n\n"
        "## Use\n\n`predict.py --model_dir <this folder>` and `serve.py --model_dir <this folder>` read it as one "
        f"model. {sensitive[0].upper() + sensitive[1:]}; an ensemble has no conformal prediction sets and no ONNX "
        "export (export its members one by one).\n"
    )
