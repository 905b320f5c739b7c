"""Subgroup evaluation (shared/evaluation/subgroups.py): fairlearn's frames equal scikit-learn computed directly on
each group of fixed arrays, groups under the minimum size carry no metric and no name, the intervals hold the point values, the
worst group and the largest gap are the ones the numbers say, and the log names no group."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn import metrics as skm

from shared.core.errors import DataError
from shared.evaluation.calibration import calibration_metrics
from shared.evaluation.subgroups import MISSING, SubgroupArguments, card_lines, plot_subgroups, subgroup_report


def fixed_arrays():
    rng = np.random.default_rng(5)
    n = 120
    probs = rng.dirichlet([1, 1, 1], size=n)
    gold = rng.integers(0, 3, size=n)
    site = np.array(["north"] * 50 + ["south"] * 45 + ["tiny-canary"] * 4 + [""] * 21, dtype=object)
    # the south site's predictions are right far more often: a real difference between groups
    south = site == "south"
    probs[south] = 0.1 * probs[south] + 0.9 * np.eye(3)[gold[south]]
    return gold, probs, probs.argmax(axis=1), site


def test_group_metrics_equal_scikit_learn_and_small_groups_have_none():
    gold, probs, predicted, site = fixed_arrays()
    report = subgroup_report(gold, probs, predicted, {"site": site}, min_size=10)
    entry = report["columns"]["site"]
    for group, rows in (("north", site == "north"), ("south", site == "south"), (MISSING, site == "")):
        row = entry["groups"][group]
        assert row["examples"] == rows.sum()
        assert row["accuracy"] == pytest.approx(skm.accuracy_score(gold[rows], predicted[rows]))
        assert row["macro_f1"] == pytest.approx(skm.f1_score(gold[rows], predicted[rows], average="macro"))
        assert row["ece"] == pytest.approx(calibration_metrics(gold[rows], probs[rows], False)["ece"])
        assert row["gap_accuracy"] == pytest.approx(row["accuracy"] - skm.accuracy_score(gold, predicted))
    assert entry["overall"]["macro_f1"] == pytest.approx(skm.f1_score(gold, predicted, average="macro"))
    assert "tiny-canary" not in entry["groups"]  # a small group is neither scored nor named
    assert entry["too_small"] == {"groups": 1, "examples": 4}
    assert entry["worst_group"]["group"] == "north" and entry["largest_gap"]["group"] == "south"


def test_binary_groups_add_sensitivity_and_specificity():
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 2, 60)
    probs = rng.dirichlet([1, 1], 60)
    predicted = probs.argmax(axis=1)
    sex = np.array(["F", "M"] * 30, dtype=object)
    row = subgroup_report(gold, probs, predicted, {"sex": sex})["columns"]["sex"]["groups"]["F"]
    f = sex == "F"
    assert row["sensitivity"] == pytest.approx(skm.recall_score(gold[f], predicted[f]))
    assert row["specificity"] == pytest.approx(skm.recall_score(gold[f], predicted[f], pos_label=0))


def test_intervals_hold_the_point_values_and_the_plot_and_card_are_written(tmp_path, caplog):
    gold, probs, predicted, site = fixed_arrays()
    with caplog.at_level(logging.INFO):
        report = subgroup_report(gold, probs, predicted, {"site": site}, min_size=10, resamples=200, seed=1)
    for group in ("north", "south"):
        row = report["columns"]["site"]["groups"][group]
        for name in ("accuracy", "macro_f1", "ece", "gap_macro_f1"):
            assert row[f"{name}_ci_low"] <= row[name] <= row[f"{name}_ci_high"], (group, name)
    gap = report["columns"]["site"]["largest_gap"]
    assert gap["ci_low"] > 0  # the south site is really better
    assert "tiny-canary" not in caplog.text and "north" not in caplog.text  # no value of a row in the log
    plot_subgroups(report, str(tmp_path / "test_subgroups.png"), "Subgroups (test)")
    assert (tmp_path / "test_subgroups.png").stat().st_size > 1000
    card = "\n".join(card_lines(report))
    assert "| site | 1 group(s) under 10 | 4 | too small | | |" in card and "| site | south | 45 |" in card
    assert "tiny-canary" not in card


def test_arguments_are_checked():
    assert SubgroupArguments(subgroup_columns="sex, site").columns == ["sex", "site"]
    for bad, says in (({"subgroup_columns": "sex,,site"}, "empty column name"),
                      ({"subgroup_columns": "sex,sex"}, "twice"), ({"subgroup_min_size": 0}, "at least 1")):
        with pytest.raises(DataError, match=says):
            SubgroupArguments(**bad)
