"""shared/reporting.py: atomic result files and formatted metrics."""

from __future__ import annotations

import json
import os

import pytest

from shared.reporting import atomic_write_json, format_metric, save_results


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
