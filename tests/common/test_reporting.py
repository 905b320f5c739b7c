"""shared/evaluation/reports.py: atomic result files and formatted metrics."""

from __future__ import annotations

import json
import os

import pytest

from shared.core.files import atomic_write_json
from shared.evaluation.reports import format_metric, save_results


def test_results_are_merged_and_written_atomically(tmp_path):
    save_results(str(tmp_path), "eval", {"eval_accuracy": 0.5})
    save_results(str(tmp_path), "test", {"test_accuracy": 0.75, "test_auroc": float("nan")})
    combined = json.loads((tmp_path / "all_results.json").read_text())
    assert combined == {"eval_accuracy": 0.5, "test_accuracy": 0.75, "test_auroc": None}
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_format_metric_with_interval():
    assert format_metric({"x": 0.9, "x_ci_low": 0.85, "x_ci_high": 0.95}, "x") == "0.900 (0.850–0.950)"
    assert format_metric({}, "x") == "n/a"


def test_a_classifier_that_gives_every_example_one_answer_is_flagged(caplog):
    import logging

    import numpy as np

    from shared.evaluation.reports import collapse_check, score_and_report

    gold = np.array([0, 0, 0, 1, 2])
    majority = np.tile([0.8, 0.1, 0.1], (5, 1))
    with caplog.at_level(logging.WARNING, logger="shared.evaluation.reports"):
        metrics = score_and_report(None, "test", gold, majority, ["a", "b", "c"], multi_label=False)
    assert metrics["predicted_classes"] == 1
    assert "test: every one of the 5 examples is predicted 'a' although the gold labels hold 3" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shared.evaluation.reports"):
        assert collapse_check("eval", gold, np.eye(3)[[0, 0, 1, 1, 2]], ["a", "b", "c"], False) == 3
        assert collapse_check("eval", np.array([1, 1]), np.tile([0.2, 0.8], (2, 1)), ["a", "b"], False) == 1
    assert caplog.text == ""  # several answers, or one class in the gold labels too: nothing to say
    multi_gold = np.array([[1, 0], [0, 1], [0, 0]])
    with caplog.at_level(logging.WARNING, logger="shared.evaluation.reports"):
        assert collapse_check("eval", multi_gold, np.full((3, 2), 0.1), ["x", "y"], True) == 1
    assert "predicted 'no label'" in caplog.text

