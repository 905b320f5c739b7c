"""Results files, plots, prediction tables and the model card of a run, written atomically
(``shared.core.files``)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence

import numpy as np

from shared.core.files import atomic_write_json, atomic_write_text, save_figure
from shared.core.outputs import CARD_MARKER
from shared.data.labels import decisions, format_label_cell, predict_classes
from shared.evaluation.calibration import plot_reliability
from shared.evaluation.conformal import score_sets, sets_cells
from shared.evaluation.metrics import classification_report_dict, classifier_metrics, multilabel_report_dict
from shared.evaluation.subgroups import DEFAULT_MIN_SIZE, WORST_BY, card_lines, plot_subgroups, subgroup_report

logger = logging.getLogger(__name__)


def save_results(output_dir: str, split: str, metrics: dict[str, float]) -> None:
    """Write ``<split>_results.json`` and merge the metrics into ``all_results.json`` (as Trainer.save_metrics)."""
    atomic_write_json(os.path.join(output_dir, f"{split}_results.json"), metrics)
    all_path = os.path.join(output_dir, "all_results.json")
    combined = {}
    if os.path.exists(all_path):
        with open(all_path, encoding="utf-8") as f:
            combined = json.load(f)
    combined.update(metrics)
    atomic_write_json(all_path, combined)


def save_all_results(output_dir: str, results: dict[str, float], thresholds: dict[str, float] | None = None) -> None:
    """``train_/eval_/test_results.json`` for the metrics of each prefix present, and ``all_results.json``; a
    multi-label classifier's per-label decision ``thresholds`` in ``thresholds.json``."""
    if thresholds is not None:
        atomic_write_json(os.path.join(output_dir, "thresholds.json"), thresholds)
    for prefix in ("train", "eval", "test"):
        part = {k: v for k, v in results.items() if k.startswith(f"{prefix}_")}
        if part:
            save_results(output_dir, prefix, part)


def decision_thresholds(label_names: list[str], thresholds) -> dict[str, float]:
    """``{label: threshold}`` as saved in a multi-label model's ``config.json`` (``decision_thresholds``)."""
    cut = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(label_names),))  # one --decision_threshold
    return {name: float(t) for name, t in zip(label_names, cut)}


def saved_thresholds(config, label_names: list[str]) -> np.ndarray:
    """The per-label thresholds a fine-tuned multi-label model saved (``decision_thresholds``), 0.5 where none."""
    saved = getattr(config, "decision_thresholds", None) or {}
    return np.array([saved.get(name, 0.5) for name in label_names])


def prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k if k.startswith(f"{prefix}_") else f"{prefix}_{k}": v for k, v in metrics.items()}


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], label_names: list[str], path: str, title: str = "Confusion matrix"):
    """Counts per (true, predicted) cell, saved as PNG; returns the matplotlib figure (closed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.6 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=label_names).plot(
        ax=ax, colorbar=False, xticks_rotation=45, values_format="d"
    )
    ax.set_title(title)
    save_figure(fig, path)
    plt.close(fig)
    return fig


def plot_roc_curves(y_true: Sequence[int], probs: np.ndarray, label_names: list[str], path: str, title: str = "ROC"):
    """One-vs-rest ROC curve per class (binary: the positive class only), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn.metrics import RocCurveDisplay

    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    classes = [1] if probs.shape[1] == 2 else range(probs.shape[1])
    for c in classes:
        positives = y_true == c if y_true.ndim == 1 else y_true[:, c] == 1
        if 0 < positives.sum() < len(positives):
            RocCurveDisplay.from_predictions(positives, probs[:, c], name=label_names[c], ax=ax)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_title(title)
    save_figure(fig, path)
    plt.close(fig)
    return fig


def format_metric(metrics: dict, name: str, digits: int = 3) -> str:
    """``0.912 (0.884-0.936)`` when a bootstrap interval exists, else the value alone."""
    value = metrics.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.{digits}f}"
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
        text += f" ({low:.{digits}f}–{high:.{digits}f})"
    return text


LOWER_IS_BETTER = {"ece", "mce", "brier", "nll"}  # calibration metrics (shared/evaluation/calibration.py)


def training_card(training_args, model_args, frozen_layers, trainable: int, total: int, derived, best_epoch,
                  calibration=None, **task_settings) -> dict[str, object]:
    """The model card's training section, from what the run recorded: the schedule, ``task_settings`` (the task's
    own, e.g. windows or image size, in the order given), precision, imbalance handling (the options the model
    arguments have), LoRA, freezing, the defaults derived from the data, the epoch kept and the calibration (left
    out when ``calibration`` is False: a task without it)."""
    section: dict[str, object] = {
        "epochs": training_args.num_train_epochs,
        "learning_rate": training_args.learning_rate,
        "batch_size": training_args.per_device_train_batch_size * training_args.world_size,
        **task_settings,
        "bf16": training_args.bf16,
    }
    for option in ("class_weighting", "focal_gamma", "oversample"):
        if hasattr(model_args, option):
            section[option] = getattr(model_args, option)
    section["lora"] = f"r={model_args.lora_r}, alpha={model_args.lora_alpha}" if model_args.use_lora else "no"
    section.update(frozen_encoder_layers=frozen_layers, trainable_parameters=f"{trainable:,} of {total:,}",
                   seed=training_args.seed, **derived.card(best_epoch))
    if calibration is not False:
        # (a rejected calibration is false but describes what was tried: shared/evaluation/calibration.py)
        section["calibration"] = calibration.describe() if calibration is not None else "none (raw probabilities)"
    return section


def write_model_card(
    output_dir: str,
    *,
    title: str,
    base_model: str,
    pipeline_tag: str,
    task_description: str,
    data_summary: dict[str, dict],
    metrics: dict[str, float],
    headline_metrics: list[str],
    training: dict[str, object],
    limitations: list[str],
    sections: dict[str, list[str]] | None = None,
) -> str:
    """Write ``README.md`` in ``output_dir``: data, metrics with 95% CIs, ``sections`` (title -> Markdown lines,
    after the results: e.g. :func:`subgroup_section`), training setup, intended use and limits.

    ``data_summary`` maps split -> {"examples": n, "labels": {label: count}}. No example text goes in the card.
    """

    lines = [
        "---",
        "library_name: transformers",
        f"pipeline_tag: {pipeline_tag}",
        f"base_model: {base_model}" if not os.path.isabs(base_model) else "base_model: local",
        "tags: [medical, fine-tuned]",
        "---",
        CARD_MARKER,
        "",
        f"# {title}",
        "",
        f"{task_description} Fine-tuned from `{os.path.basename(base_model.rstrip('/'))}`.",
        "",
        "## Data",
        "",
        "| split | examples | label distribution |",
        "|---|---|---|",
    ]
    for split, summary in data_summary.items():
        dist = ", ".join(f"{k}: {v}" for k, v in summary.get("labels", {}).items()) or "unlabelled"
        lines.append(f"| {split} | {summary['examples']} | {dist} |")
    split_names = sorted({k.split("_", 1)[0] for k in metrics if k.split("_", 1)[0] in ("eval", "test")})
    lines += ["", "## Results", ""]
    if split_names:
        lines += ["Point estimate with bootstrap 95% confidence interval where computed.", ""]
        lines.append("| metric | " + " | ".join(split_names) + " |")
        lines.append("|---|" + "---|" * len(split_names))
        for name in headline_metrics:
            for key, shown in ((name, name), (f"{name}_uncalibrated", f"{name} before calibration")):
                cells = [format_metric(metrics, f"{split}_{key}") for split in split_names]
                if any(c != "n/a" for c in cells):
                    lines.append(f"| {shown}{' (lower is better)' if name in LOWER_IS_BETTER else ''} | "
                                 + " | ".join(cells) + " |")
    else:
        lines.append("No labelled evaluation was run.")
    for heading, body in (sections or {}).items():
        lines += ["", f"## {heading}", "", *body]
    lines += ["", "## Training", ""]
    lines += [f"- {k}: `{v}`" for k, v in training.items()]
    lines += [
        "",
        "## Intended use and limitations",
        "",
        "- Research and decision *support* only: not a medical device, not validated for clinical use.",
        "- Scores come from the evaluation data above; performance on other hospitals, populations, scanners or "
        "writing styles is unknown until measured there.",
        *[f"- {item}" for item in limitations],
        "- Prediction files written next to this card (`test_predictions*`) and explanations (`test_explanations*`, "
        "written with `--explain`: note words or image overlays) contain (or point to) the input records: treat "
        "them as sensitive data, like the inputs.",
        "",
    ]
    text = "\n".join(lines)
    atomic_write_text(os.path.join(output_dir, "README.md"), text)
    return text


def write_classification_outputs(output_dir: str, prefix: str, gold: np.ndarray, probs: np.ndarray,
                                 label_names: list[str], multi_label: bool, thresholds=None,
                                 uncalibrated: np.ndarray | None = None, sections: dict | None = None) -> dict:
    """``{prefix}_report.json`` (per class, confusion matrix, and ``sections``: e.g. the prediction sets'),
    ``{prefix}_confusion_matrix.png`` (single-label), ``{prefix}_roc.png`` and ``{prefix}_reliability.png`` (before
    and after calibration when ``uncalibrated`` is given) for one labelled split of a classifier; returns the
    report."""

    split = {"eval": "validation", "test": "test"}.get(prefix, prefix)
    if multi_label:
        report = multilabel_report_dict(gold, probs, 0.5 if thresholds is None else thresholds, label_names)
    else:
        report = classification_report_dict(gold, probs, label_names, thresholds)
        plot_confusion_matrix(report["confusion_matrix"], label_names,
                              os.path.join(output_dir, f"{prefix}_confusion_matrix.png"), title=f"Confusion matrix ({split})")
    plot_roc_curves(gold, probs, label_names, os.path.join(output_dir, f"{prefix}_roc.png"), title=f"ROC ({split})")
    plot_reliability(gold, probs, multi_label, os.path.join(output_dir, f"{prefix}_reliability.png"),
                     f"Reliability ({split})", uncalibrated)
    report.update(sections or {})
    atomic_write_json(os.path.join(output_dir, f"{prefix}_report.json"), report)
    return report


def score_and_report(output_dir: str | None, prefix: str, gold: np.ndarray, probs: np.ndarray, label_names: list[str],
                     multi_label: bool, thresholds=None, resamples: int = 0, seed: int = 0, groups=None,
                     uncalibrated: np.ndarray | None = None, conformal=None, set_rows=None,
                     subgroups: dict[str, Sequence] | None = None, subgroup_min_size: int = DEFAULT_MIN_SIZE) -> dict:
    """The metrics of one labelled split of a classifier (bootstrap CIs with ``resamples``; calibration metrics,
    before and after when ``uncalibrated`` is given), and its report and plots (:func:`write_classification_outputs`)
    in ``output_dir`` (None: the metrics only, e.g. on a non-main process). ``conformal``: prediction sets
    (``shared.evaluation.conformal``) scored on ``set_rows`` (default all: the validation split passes the rows
    that did not calibrate them), as ``coverage``, ``mean_set_size``, ... and the report's ``prediction_sets``.
    ``subgroups``: ``{column: each row's value}`` (single-label): the report's ``subgroups`` table
    (``shared.evaluation.subgroups``), ``{prefix}_subgroups.png``, and per column the worst group's value and the
    largest gap to overall in the metrics (``subgroup_<column>_worst_macro_f1``, ``..._largest_gap_macro_f1``)."""

    if not multi_label and len(gold) and len(present := np.unique(gold)) == 1:
        logger.warning("%s split: every example's gold label is '%s' (one class): AUROC and AUPRC are undefined "
                       "(NaN), and the classes without examples count as 0 in the macro averages",
                       {"eval": "validation"}.get(prefix, prefix), label_names[int(present[0])])
    metrics = classifier_metrics(gold, probs, multi_label, thresholds, resamples, seed, groups, uncalibrated)
    metrics["predicted_classes"] = collapse_check(prefix, gold, probs, label_names, multi_label, thresholds)
    sections = {}
    if conformal is not None:
        rows = np.arange(len(gold)) if set_rows is None else np.asarray(set_rows, dtype=int)
        set_scores, sections["prediction_sets"] = score_sets(
            conformal, np.asarray(gold)[rows], np.asarray(probs)[rows], label_names, resamples, seed,
            None if groups is None else [groups[i] for i in rows])
        metrics.update(set_scores)
    if subgroups and not multi_label:
        table = subgroup_report(gold, probs, predict_classes(probs, thresholds), subgroups, subgroup_min_size,
                                resamples, seed, groups)
        sections["subgroups"] = table
        for column, entry in table["columns"].items():
            if "worst_group" in entry:
                metrics[f"subgroup_{column}_worst_{WORST_BY}"] = entry["worst_group"]["value"]
                metrics[f"subgroup_{column}_largest_gap_{WORST_BY}"] = entry["largest_gap"]["gap"]
        if output_dir is not None:
            split = {"eval": "validation"}.get(prefix, prefix)
            plot_subgroups(table, os.path.join(output_dir, f"{prefix}_subgroups.png"), f"Subgroups ({split})")
    if output_dir is not None:
        write_classification_outputs(output_dir, prefix, gold, probs, label_names, multi_label, thresholds,
                                     uncalibrated, sections)
    return metrics


def subgroup_section(output_dir: str, prefix: str = "test") -> dict[str, list[str]]:
    """The model card's "Subgroups" section from ``{prefix}_report.json`` (empty when it has no subgroup table)."""
    path = os.path.join(output_dir, f"{prefix}_report.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        table = json.load(f).get("subgroups")
    split = {"eval": "validation"}.get(prefix, prefix)
    return {f"Subgroups ({split})": card_lines(table)} if table else {}


def collapse_check(split: str, gold: np.ndarray, probs: np.ndarray, label_names: list[str], multi_label: bool,
                   thresholds=None) -> int:
    """How many different answers a classifier gave on a labelled split (classes; multi-label: label sets), with a
    warning when it gave every example the same one although the gold labels differ: a model collapsed to the
    majority class can still show a fair accuracy on imbalanced data. Counts only, never an example."""

    def answers(rows) -> set:
        return {tuple(row) if isinstance(row, list) else row for row in rows}

    predicted = answers(decisions(probs, label_names, multi_label, thresholds))
    truth = answers([[label_names[j] for j in np.flatnonzero(row)] for row in gold] if multi_label
                    else [label_names[int(i)] for i in gold])
    if len(predicted) == 1 and len(truth) > 1:
        (answer,) = predicted
        shown = (", ".join(answer) or "no label") if isinstance(answer, tuple) else answer
        logger.warning("%s: every one of the %d examples is predicted '%s' although the gold labels hold %d different "
                       "answers: the model has collapsed to one answer", split, len(gold), shown, len(truth))
    return len(predicted)


def predictions_csv(rows: Sequence[int], predicted: Sequence[str], probs: np.ndarray, label_names: list[str],
                    gold: Sequence[str] | None = None, extra: dict[str, Sequence] | None = None,
                    prediction_sets: Sequence[str] | None = None) -> str:
    """A prediction table: ``row`` (0-based row of the input; of the training file for a carved split), ``extra``
    columns, ``label`` (when labelled), ``prediction``, ``prediction_set`` (a model with conformal sets: a JSON list
    of names) and ``prob_<class>``. Never the input text."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extra = extra or {}
    writer.writerow(["row", *extra, *(["label"] if gold is not None else []), "prediction",
                     *(["prediction_set"] if prediction_sets is not None else []),
                     *[f"prob_{name}" for name in label_names]])
    for k, row in enumerate(rows):
        cells = [int(row), *[values[k] for values in extra.values()]]
        if gold is not None:
            cells.append(gold[k])
        cells.append(predicted[k])
        if prediction_sets is not None:
            cells.append(prediction_sets[k])
        cells += [repr(float(p)) for p in probs[k]]  # full precision: the decisions can be recomputed exactly
        writer.writerow(cells)
    return buffer.getvalue()


def write_predictions(output_dir: str, rows: Sequence[int], probs: np.ndarray, label_names: list[str],
                      multi_label: bool, thresholds=None, separator: str | None = None, gold: Sequence | None = None,
                      extra: dict[str, Sequence] | None = None, name: str = "test_predictions.csv",
                      prediction_sets: Sequence[Sequence[str]] | None = None) -> str:
    """``test_predictions.csv`` (or ``name``: predict.py's ``predictions.csv``) of a classifier (:func:`predictions_csv`): the decided label of every row
    (:func:`shared.data.labels.decisions`), the gold label when known, label lists written as the input writes them,
    each row's conformal prediction set (label names) when given."""

    def cell(label):
        return format_label_cell(label, separator)

    predicted = [cell(p) for p in decisions(probs, label_names, multi_label, thresholds)]
    table = predictions_csv(rows, predicted, probs, label_names, None if gold is None else [cell(g) for g in gold],
                            extra, None if prediction_sets is None else sets_cells(prediction_sets))
    path = os.path.join(output_dir, name)
    atomic_write_text(path, table)
    return path
