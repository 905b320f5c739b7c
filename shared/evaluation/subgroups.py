"""Performance by subgroup (``--subgroup_columns``): for each column (sex, age band, site, scanner, note type) and
each of its groups, the headline metrics with bootstrap 95% confidence intervals, the calibration error, the worst
group and the largest gap to the overall value with its interval. A model with 0.90 overall can be 0.70 for one site.

The frames are fairlearn's ``MetricFrame`` (one per column: ``by_group``, ``overall``), on the decided classes with
the probabilities reached through the rows' indices (a ``MetricFrame`` takes one-dimensional sample parameters). The
intervals come from this project's bootstrap (``shared.evaluation.metrics.bootstrap_ci``: the same resamples as the
headline intervals, whole patients with ``--group_column``), with the same metric functions applied per group in
each resample: a ``MetricFrame`` costs ~50 ms to build, a thousand resamples a minute per column; fairlearn's own
``n_boot`` resamples rows only, not patients.

Privacy: groups smaller than ``--subgroup_min_size`` (default 10) are reported as too small, without metrics and
without their names (how many such groups and examples a column has), so that a report cannot single out a few
patients, nor name a rare value. Subgroup values reach only the report, the plot and the model card, as the names
of groups of at least that size; the log says how many groups a column has, never a value.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn import metrics as skm

from shared.core.errors import DataError
from shared.core.files import save_figure
from shared.data.tables import read_table, require_columns
from shared.evaluation.calibration import calibration_metrics
from shared.evaluation.metrics import bootstrap_ci

logger = logging.getLogger(__name__)

MISSING = "(missing)"  # the group of rows whose cell is empty
DEFAULT_MIN_SIZE = 10
WORST_BY = "macro_f1"  # the metric the worst group and the largest gap are judged by (the tasks' headline)


@dataclass
class SubgroupArguments:
    _argument_group_name = "subgroups"

    subgroup_columns: str | None = field(
        default=None,
        metadata={"help": "Comma-separated columns of the labelled tables (e.g. sex,site) whose groups get their own "
                          "metrics with 95% CIs in {split}_report.json, {split}_subgroups.png and the model card. "
                          "Read, never fed to the model."})
    subgroup_min_size: int = field(
        default=DEFAULT_MIN_SIZE,
        metadata={"help": "Groups with fewer examples are reported as too small, with no metrics (so that a report "
                          "cannot single out a few patients)."})

    def __post_init__(self):
        if self.subgroup_min_size < 1:
            raise DataError(f"--subgroup_min_size must be at least 1, got {self.subgroup_min_size}")
        if self.subgroup_columns is not None:
            names = [c.strip() for c in self.subgroup_columns.split(",")]
            if not all(names):
                raise DataError(f"--subgroup_columns: an empty column name in '{self.subgroup_columns}'")
            if len(set(names)) < len(names):
                raise DataError(f"--subgroup_columns names a column twice: '{self.subgroup_columns}'")

    @property
    def columns(self) -> list[str]:
        return [c.strip() for c in self.subgroup_columns.split(",")] if self.subgroup_columns else []


def require_subgroup_columns(tables: dict, columns: Sequence[str], read_by_model: Sequence[str | None],
                             multi_label: bool) -> None:
    """One line before the model loads when ``--subgroup_columns`` cannot be honoured: a multi-label task, a column
    the model reads (its text, or the label: a subgroup column is never an input), or one missing from a labelled
    split to score (``tables``: split -> ``shared.data.tables.Table``)."""
    if not columns:
        return
    if multi_label:
        raise DataError("--subgroup_columns: subgroup metrics are for single-label classification; this data is "
                        "multi-label")
    for column in columns:
        if column in read_by_model:
            raise DataError(f"--subgroup_columns: '{column}' is a column the model reads or predicts; name columns "
                            "it never sees (e.g. sex, site)")
    for split in ("validation", "test"):
        if split in tables:
            require_columns(tables[split], list(columns))


NOTE_COLUMN = "note"  # the column of a --subgroup_file naming each note (its file name, .txt optional)


def note_subgroups(path: str, columns: Sequence[str], notes: dict[str, Sequence[str]]) -> dict[str, dict[str, list]]:
    """The subgroup values of examples that live in notes (assertion status: concepts), from a table with one row per
    note: a ``note`` column naming it (its file name, with or without ``.txt``) and the ``columns``. ``notes``: split
    -> each example's note. Returns split -> ``{column: each example's value}``; a note without a row, or with two,
    is one line naming the table (and the line), before the model loads."""
    table = read_table(path)
    require_columns(table, [NOTE_COLUMN, *columns])
    row_of = {}
    for index, cell in enumerate(table[NOTE_COLUMN]):
        name = str(cell or "").strip().removesuffix(".txt")
        if name in row_of:
            raise DataError(f"note '{name}' has a second row (the first is row {row_of[name] + 1})",
                            *table.where(index))
        row_of[name] = index
    cells = {column: list(table[column]) for column in columns}
    values = {}
    for split, names in notes.items():
        missing = sorted(set(names) - set(row_of))
        if missing:
            raise DataError(f"{len(missing)} note(s) of the {split} split have no row (the first: '{missing[0]}'); "
                            f"--subgroup_file needs one row per note", path=path)
        values[split] = {column: [cells[column][row_of[name]] for name in names] for column in columns}
    return values


def group_cells(values: Sequence) -> list[str]:
    """A column's cells as group names: text as written (stripped), empty cells and None as :data:`MISSING`."""
    cells = []
    for value in values:
        text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()
        cells.append(text or MISSING)
    return cells


def group_metrics(num_classes: int, probs: np.ndarray) -> dict:
    """The per-group metric functions, ``f(y_true, y_pred, rows)``: accuracy, macro-F1 (over the classes in the
    group's labels or predictions), ECE of the rows' probabilities; binary: sensitivity and specificity."""

    def accuracy(y_true, y_pred, rows):
        return skm.accuracy_score(y_true, y_pred)

    def macro_f1(y_true, y_pred, rows):
        return skm.f1_score(y_true, y_pred, average="macro", zero_division=0)

    def ece(y_true, y_pred, rows):
        return calibration_metrics(np.asarray(y_true), probs[np.asarray(rows)], False)["ece"]

    functions = {"accuracy": accuracy, "macro_f1": macro_f1, "ece": ece}
    if num_classes == 2:
        def sensitivity(y_true, y_pred, rows):
            return skm.recall_score(y_true, y_pred, pos_label=1, zero_division=np.nan)

        def specificity(y_true, y_pred, rows):
            return skm.recall_score(y_true, y_pred, pos_label=0, zero_division=np.nan)

        functions.update(sensitivity=sensitivity, specificity=specificity)
    return functions


def metric_frame(gold: np.ndarray, predicted: np.ndarray, probs: np.ndarray, cells: Sequence[str], column: str):
    """fairlearn's ``MetricFrame`` of one column: every metric of :func:`group_metrics`, overall and by group."""
    from fairlearn.metrics import MetricFrame

    functions = group_metrics(probs.shape[1], probs)
    rows = np.arange(len(gold))
    return MetricFrame(metrics=functions, y_true=np.asarray(gold), y_pred=np.asarray(predicted),
                       sensitive_features={column: np.asarray(cells, dtype=object)},
                       sample_params={name: {"rows": rows} for name in functions})


def subgroup_report(gold: np.ndarray, probs: np.ndarray, predicted: np.ndarray, columns: dict[str, Sequence[str]],
                    min_size: int = DEFAULT_MIN_SIZE, resamples: int = 0, seed: int = 0,
                    groups: Sequence | None = None) -> dict:
    """The subgroup table of one labelled split: per column, ``overall`` metrics; per group of at least ``min_size``
    examples its ``examples``, metrics with ``_ci_low`` / ``_ci_high`` and ``gap_<metric>`` (group - overall) with
    its interval; ``too_small``: how many smaller groups (unnamed) and examples; the ``worst_group`` and the
    ``largest_gap`` (by :data:`WORST_BY`). ``groups``: the bootstrap's resampling units (patients)."""
    gold, probs, predicted = np.asarray(gold), np.asarray(probs, dtype=np.float64), np.asarray(predicted)
    functions = group_metrics(probs.shape[1], probs)
    report = {"min_size": int(min_size), "resamples": int(resamples), "columns": {}}
    for column, values in columns.items():
        cells = group_cells(values)
        sizes = Counter(cells)
        frame = metric_frame(gold, predicted, probs, cells, column)
        overall = {name: float(v) for name, v in frame.overall.items()}
        shown = sorted(g for g, n in sizes.items() if n >= min_size)
        table = {}
        for group in shown:
            row = frame.by_group.loc[group]
            table[group] = {"examples": sizes[group], **{name: float(row[name]) for name in functions}}
            table[group].update({f"gap_{name}": table[group][name] - overall[name] for name in functions})
        if resamples and shown:
            cell_array = np.asarray(cells, dtype=object)

            def resampled(idx, shown=shown, cell_array=cell_array):
                scores = {}
                total = {name: f(gold[idx], predicted[idx], idx) for name, f in functions.items()}
                for group in shown:
                    members = idx[cell_array[idx] == group]
                    for name, f in functions.items():
                        value = f(gold[members], predicted[members], members) if len(members) else float("nan")
                        scores[f"{group}\t{name}"] = value
                        scores[f"{group}\tgap_{name}"] = value - total[name]
                return scores

            for key, (low, high) in bootstrap_ci(resampled, len(gold), resamples, groups=groups, seed=seed).items():
                group, name = key.split("\t")
                table[group][f"{name}_ci_low"], table[group][f"{name}_ci_high"] = low, high
        entry = {"overall": overall, "examples": len(cells), "groups": table,
                 "too_small": {"groups": len(sizes) - len(shown),
                               "examples": sum(n for g, n in sizes.items() if n < min_size)}}
        scored = [g for g in shown if not math.isnan(table[g][WORST_BY])]
        if scored:
            worst = min(scored, key=lambda g: table[g][WORST_BY])
            widest = max(scored, key=lambda g: abs(table[g][f"gap_{WORST_BY}"]))
            entry["worst_group"] = {"group": worst, "metric": WORST_BY, "value": table[worst][WORST_BY]}
            entry["largest_gap"] = {"group": widest, "metric": WORST_BY, "gap": table[widest][f"gap_{WORST_BY}"],
                                    **{k: table[widest][f"gap_{WORST_BY}{s}"] for k, s in
                                       (("ci_low", "_ci_low"), ("ci_high", "_ci_high")) if
                                       f"gap_{WORST_BY}{s}" in table[widest]}}
        report["columns"][column] = entry
        logger.info("subgroups of '%s': %d groups, %d of them under %d examples (reported without metrics)", column,
                    len(sizes), len(sizes) - len(shown), min_size)
    return report


def plot_subgroups(report: dict, path: str, title: str, metric: str = WORST_BY) -> None:
    """A forest plot: per column, each reported group's ``metric`` with its 95% CI, the overall value as a line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels, y = [], 0  # rows from the top: a column's heading, then its groups; y counts down
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * sum(2 + len(e["groups"]) for e in report["columns"].values()) + 1.2))
    for column, entry in report["columns"].items():
        top = y
        labels.append((y, f"{column} (overall, n={entry['examples']})"))
        y -= 1
        for group, row in entry["groups"].items():
            low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
            if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
                ax.plot([low, high], [y, y], color="tab:blue")
            ax.plot([row[metric]], [y], marker="s", color="tab:blue")
            labels.append((y, f"  {group} (n={row['examples']})"))
            y -= 1
        if entry["too_small"]["groups"]:
            labels.append((y, f"  {entry['too_small']['groups']} group(s) too small (n={entry['too_small']['examples']})"))
            y -= 1
        overall = entry["overall"].get(metric)
        if overall is not None and not math.isnan(overall):
            ax.plot([overall, overall], [y + 0.6, top + 0.4], color="grey", linestyle=":")
        ax.plot([overall], [top], marker="D", color="grey")
    ax.set_yticks([position for position, _ in labels])
    ax.set_yticklabels([label for _, label in labels])
    ax.set_xlabel(f"{metric} (95% CI); dotted: overall")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def card_lines(report: dict, metric: str = WORST_BY) -> list[str]:
    """The model card's subgroup table (Markdown lines)."""
    lines = [(f"Per group: {metric} and ECE with bootstrap 95% CIs; groups under {report['min_size']} examples are "
              "counted as too small, without names or metrics."), "",
             f"| column | group | examples | {metric} | gap to overall | ece |", "|---|---|---|---|---|---|"]

    def shown(row, name):
        value = row.get(name)
        if value is None or math.isnan(value):
            return "n/a"
        low, high = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
        interval = f" ({low:.3f} to {high:.3f})" if low is not None and not math.isnan(low) else ""
        return f"{value:.3f}{interval}"

    for column, entry in report["columns"].items():
        lines.append(f"| {column} | overall | {entry['examples']} | {entry['overall'][metric]:.3f} | | "
                     f"{entry['overall']['ece']:.3f} |")
        for group, row in entry["groups"].items():
            lines.append(f"| {column} | {group} | {row['examples']} | {shown(row, metric)} | "
                         f"{shown(row, 'gap_' + metric)} | {shown(row, 'ece')} |")
        small = entry["too_small"]
        if small["groups"]:
            lines.append(f"| {column} | {small['groups']} group(s) under {report['min_size']} | {small['examples']} | "
                         "too small | | |")
    return lines
