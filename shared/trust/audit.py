"""Out-of-fold predictions pooled over the folds of a cross-validation, and an audit of labels that look wrong.

Every row of the training data is scored once, by the fold model that did not train on it, so the pooled
out-of-fold probabilities are a fair judge of each given label. ``recipes/cross_validate.py`` pools them into
``oof_predictions.csv`` (classifiers: row, fold, label, prediction, probabilities; NER: ``oof_predictions.jsonl``,
tags and per-word probabilities, no words) and scores them as one test set with bootstrap CIs. With
``--audit_labels`` cleanlab's confident learning ranks the rows (NER: the words) whose given label is likely
wrong into ``label_issues.csv``: where they are, the given and the suggested label and cleanlab's label-quality
score (0..1, low = likely wrong). No text is written: these files hold row numbers, file names and labels only.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence

import numpy as np

from shared.concepts.i2b2 import NO_RELATION
from shared.core.errors import DataError
from shared.core.files import atomic_write_json, atomic_write_text
from shared.data.labels import parse_label_cell
from shared.evaluation.metrics import add_ci, classifier_metrics, positive_micro_metrics
from shared.evaluation.reports import predictions_csv
from shared.formats.tags import detect_scheme, to_scheme
from shared.ner.metrics import entity_metrics, entity_metrics_ci

logger = logging.getLogger(__name__)

TAG_PROBABILITIES = "test_tag_probabilities.json"  # written by a NER fold (shared.trust.audit.write_tag_probabilities)
# Where a row of the assertion (note, concept) and relation (note, first, second) tables is, kept in the pooled files.
LOCATION_COLUMNS = ("note", "concept", "first", "second")


# ----------------------------------------------------------------------------------------------- classifiers
def read_fold_predictions(fold_dirs: Sequence[str], separator: str | None = None) -> dict:
    """The ``test_predictions.csv`` of every fold of a text or image cross-validation, pooled.

    Returns row, fold, label and prediction cells (as written), the probabilities, the class names, whether the task
    is multi-label (from the fold's ``config.json``) and the gold labels as class indices (single-label) or lists of
    indices (multi-label; cells are JSON lists, or names joined with the recipe's ``--label_separator``). The
    assertion and relation recipes' tables also say where each row is (``where``: its ``note`` and ``concept``, or
    the ``first`` and ``second`` concept of its pair); ``groups`` is then the note (the pooled CIs resample whole
    notes, as each fold's did), and for relations ``negative`` is the index of "none" (the pooled scores include
    their positive-type micro P/R/F1)."""
    pooled = {"row": [], "fold": [], "label": [], "prediction": [], "probs": []}
    where = None
    label_names = multi_label = None
    for fold, folder in enumerate(fold_dirs):
        path = os.path.join(folder, "test_predictions.csv")
        if not os.path.isfile(path):
            raise DataError("the fold wrote no test_predictions.csv", path=folder)
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            names = [c.removeprefix("prob_") for c in reader.fieldnames or [] if c.startswith("prob_")]
            if "label" not in (reader.fieldnames or []):
                raise DataError("has no label column: the fold's test split was unlabelled", path=path)
            if label_names is None:
                label_names, multi_label = names, _is_multi_label(folder)
                where = {c: [] for c in LOCATION_COLUMNS if c in reader.fieldnames}
            elif names != label_names:
                raise DataError(f"classes {names} differ from fold 0's {label_names}", path=path)
            for record in reader:
                pooled["row"].append(int(record["row"]))
                pooled["fold"].append(fold)
                pooled["label"].append(record["label"])
                pooled["prediction"].append(record["prediction"])
                pooled["probs"].append([float(record[f"prob_{n}"]) for n in names])
                for column, values in where.items():
                    values.append(record.get(column, ""))

    index = {name: i for i, name in enumerate(label_names)}

    def ids(cell: str):  # the cell as shared.data.labels.format_label_cell wrote it
        if not multi_label:
            return index[cell]
        return sorted(index[n] for n in parse_label_cell(cell, separator) or [])

    pooled.update(probs=np.asarray(pooled["probs"], dtype=np.float64), label_names=label_names,
                  multi_label=multi_label, gold=[ids(cell) for cell in pooled["label"]], where=where,
                  groups=where.get("note"),
                  negative=label_names.index(NO_RELATION) if "first" in where and NO_RELATION in label_names else None)
    return pooled


def _is_multi_label(folder: str) -> bool:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("problem_type") == "multi_label_classification"


def write_oof_predictions(output_dir: str, pooled: dict) -> str:
    """``oof_predictions.csv``: one row per training row (ordered by row), the fold that scored it, its given label,
    the fold's decision and the probabilities as the fold wrote them."""

    order = np.argsort(pooled["row"], kind="stable")
    table = predictions_csv([pooled["row"][i] for i in order], [pooled["prediction"][i] for i in order],
                            pooled["probs"][order], pooled["label_names"], [pooled["label"][i] for i in order],
                            extra={"fold": [pooled["fold"][i] for i in order],
                                   **{c: [v[i] for i in order] for c, v in pooled["where"].items()}})
    path = os.path.join(output_dir, "oof_predictions.csv")
    atomic_write_text(path, table)
    return path


def pooled_classifier_metrics(pooled: dict, resamples: int, seed: int) -> dict[str, float]:
    """The test metrics of the pooled out-of-fold predictions with bootstrap 95% CIs (rows resampled; whole notes
    for the assertion and relation recipes), and for relations the positive-type micro P/R/F1 that is their
    ``test_f1``.

    Threshold metrics use the default decision (argmax; 0.5 per label): each fold tuned its own thresholds."""

    gold = pooled["gold"]
    if pooled["multi_label"]:
        gold = np.zeros_like(pooled["probs"], dtype=np.int64)
        for row, labels in enumerate(pooled["gold"]):
            gold[row, labels] = 1
    groups = pooled.get("groups")
    metrics = classifier_metrics(np.asarray(gold), pooled["probs"], pooled["multi_label"], resamples=resamples,
                                 seed=seed, groups=groups)
    if pooled.get("negative") is not None:
        metrics.update(positive_micro_metrics(np.asarray(gold), pooled["probs"], pooled["negative"], resamples, seed,
                                              groups))
    return {**metrics, "samples": len(pooled["row"])}


def classifier_label_issues(pooled: dict) -> list[dict]:
    """Rows whose given label cleanlab's confident learning flags as likely wrong, most suspicious first."""
    from cleanlab.filter import find_label_issues

    gold, probs = pooled["gold"], pooled["probs"]
    if pooled["multi_label"]:
        from cleanlab.multilabel_classification import get_label_quality_scores

        flagged = find_label_issues(gold, probs, multi_label=True, return_indices_ranked_by="self_confidence")
    else:
        from cleanlab.rank import get_label_quality_scores

        probs = probs / probs.sum(axis=1, keepdims=True)  # cleanlab checks rows sum to 1 (float noise)
        gold = np.asarray(gold)
        flagged = find_label_issues(gold, probs, return_indices_ranked_by="self_confidence")
    scores = get_label_quality_scores(gold, probs)
    return [{"rank": rank + 1, "row": pooled["row"][i], "fold": pooled["fold"][i],
             **{c: v[i] for c, v in pooled["where"].items()}, "given_label": pooled["label"][i],
             "suggested_label": pooled["prediction"][i], "label_quality": float(scores[i])}
            for rank, i in enumerate(flagged)]


# ----------------------------------------------------------------------------------------------------- NER
def write_tag_probabilities(output_dir: str, split, probabilities: Sequence[np.ndarray], predicted: list[list[str]],
                            labels: list[str]) -> None:
    """``test_tag_probabilities.json`` of a NER cross-validation fold: per test sentence its file, line and document,
    the given and predicted IOB2 tags and each word's probabilities over ``labels`` (the model's tags). No words."""
    examples = [{"file": where[0], "line": where[1], "document": group, "gold": gold, "predicted": pred,
                 "probabilities": np.round(p.astype(np.float64), 6).tolist()}
                for where, group, gold, pred, p in zip(split.where, split.groups, split.tags, predicted, probabilities)]
    atomic_write_json(os.path.join(output_dir, TAG_PROBABILITIES), {"labels": list(labels), "examples": examples})


def read_fold_tag_probabilities(fold_dirs: Sequence[str]) -> dict:
    """Every fold's ``test_tag_probabilities.json``, pooled: {"labels", "examples" (each with its "fold")}."""
    pooled = {"labels": None, "examples": []}
    for fold, folder in enumerate(fold_dirs):
        path = os.path.join(folder, TAG_PROBABILITIES)
        if not os.path.isfile(path):
            raise DataError(f"the fold wrote no {TAG_PROBABILITIES}", path=folder)
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        if pooled["labels"] is None:
            pooled["labels"] = saved["labels"]
        elif saved["labels"] != pooled["labels"]:
            raise DataError(f"tags {saved['labels']} differ from fold 0's {pooled['labels']}", path=path)
        pooled["examples"] += [{**example, "fold": fold} for example in saved["examples"]]
    return pooled


def write_oof_tags(output_dir: str, pooled: dict) -> str:
    """``oof_predictions.jsonl``: the first line names the tags the probabilities are over; then one line per
    sentence (fold, file, line, document, given and predicted tags, per-word probabilities)."""
    lines = [json.dumps({"labels": pooled["labels"]})]
    lines += [json.dumps({"fold": e["fold"], **{k: v for k, v in e.items() if k != "fold"}}) for e in pooled["examples"]]
    path = os.path.join(output_dir, "oof_predictions.jsonl")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def pooled_entity_metrics(pooled: dict, resamples: int, seed: int) -> dict[str, float]:
    """Strict and lenient entity metrics of the pooled out-of-fold tags, with bootstrap CIs over whole documents."""

    gold = [e["gold"] for e in pooled["examples"]]
    pred = [e["predicted"] for e in pooled["examples"]]
    metrics = entity_metrics(gold, pred)
    if resamples:
        groups = [e["document"] for e in pooled["examples"]]  # folds keep documents whole
        metrics = add_ci(metrics, entity_metrics_ci(gold, pred, groups=groups, resamples=resamples, seed=seed))
    return {**metrics, "samples": len(gold)}


def token_label_issues(pooled: dict) -> list[dict]:
    """Words whose given tag cleanlab's token-classification audit flags as likely wrong, most suspicious first."""
    from cleanlab.token_classification.filter import find_label_issues
    from cleanlab.token_classification.rank import get_label_quality_scores


    tags = pooled["labels"]
    scheme = detect_scheme([tags])
    index = {t: i for i, t in enumerate(tags)}
    kept = [e for e in pooled["examples"] if e["gold"]]  # cleanlab needs at least one word per sentence
    labels = [np.asarray([index[t] for t in to_scheme(e["gold"], scheme)]) for e in kept]
    probs = [np.asarray(e["probabilities"], dtype=np.float64) for e in kept]
    probs = [p / p.sum(axis=1, keepdims=True) for p in probs]
    flagged = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    _, word_scores = get_label_quality_scores(labels, probs)
    return [{"rank": rank + 1, "fold": kept[i]["fold"], "file": kept[i]["file"], "line": kept[i]["line"],
             "document": kept[i]["document"], "word": j, "given_label": tags[labels[i][j]],
             "suggested_label": tags[int(np.argmax(probs[i][j]))], "label_quality": float(word_scores[i][j])}
            for rank, (i, j) in enumerate(flagged)]


# ----------------------------------------------------------------------------------------------------- both
def write_label_issues(output_dir: str, issues: list[dict], token_level: bool, where: Sequence[str] = ()) -> str:
    """``label_issues.csv``, most suspicious first, with the ``where`` columns of a classifier's rows (the pooled
    ``where``). No text: positions and labels only."""
    import io

    columns = ["rank", "fold", "file", "line", "document", "word"] if token_level else ["rank", "row", "fold", *where]
    columns += ["given_label", "suggested_label", "label_quality"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({**issue, "label_quality": f"{issue['label_quality']:.6f}"} for issue in issues)
    path = os.path.join(output_dir, "label_issues.csv")
    atomic_write_text(path, buffer.getvalue())
    return path
