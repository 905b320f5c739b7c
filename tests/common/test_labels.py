"""shared/data/labels.py: one label cell format (names, JSON lists, --label_separator), class order and encoding."""

from __future__ import annotations

import numpy as np
import pytest

from shared.core.errors import DataError
from shared.data.labels import decisions, encode_labels, format_label_cell, label_counts, parse_label_cell
from shared.data.labels import parse_label_column, sort_label_names


def where(i):
    return "t.csv", i + 2


@pytest.mark.parametrize("cell, separator, expected", [
    ("cardiac", None, "cardiac"),
    ("cardiac ", None, "cardiac"),  # surrounding whitespace is never a new class
    (" ", None, None),
    ('["cardiac", " renal "]', None, ["cardiac", "renal"]),
    ("[]", None, []),
    ("cardiac; renal", ";", ["cardiac", "renal"]),
    ("", ";", []),
    (["a", "b"], None, ["a", "b"]),
    (float("nan"), None, None),
    (3, None, "3"),
    # a whole number written as a decimal (through Excel or pandas) is the whole number: 1.0 and 1 are one class
    ("1.0", None, "1"), (0.0, None, "0"), ("-2.00", None, "-2"), ([1.0, 2], None, ["1", "2"]), ("[0.0]", None, ["0"]),
    ("1.5", None, "1.5"), ("2.10", None, "2.10"), ("01", None, "01"), ("1.0; 2", ";", ["1", "2"]),
])
def test_label_cells(cell, separator, expected):
    assert parse_label_cell(cell, separator) == expected


def test_label_column_errors_name_the_row():
    with pytest.raises(DataError, match=r"t\.csv:3: missing label \(column 'label'\)"):
        parse_label_column(["a", ""], where)
    with pytest.raises(DataError, match=r"t\.csv:2: label cell starts with '\[' but is not a JSON list"):
        parse_label_column(["[a, b"], where)
    with pytest.raises(DataError, match=r"t\.csv:3: mixes single labels and label lists"):
        parse_label_column(["a", '["a"]'], where)


def test_cells_round_trip_through_the_prediction_format():
    for label, separator in ((["a", "b"], None), (["a", "b"], ";"), ("a", None), ([], None)):
        assert parse_label_cell(format_label_cell(label, separator), separator) == label


def test_class_order_and_encoding():
    assert sort_label_names({"10", "2", "1"}) == ["1", "2", "10"]
    assert sort_label_names({"b", "a", "c"}, natural=["c"]) == ["c", "a", "b"]
    label2id = {"a": 0, "b": 1, "c": 2}
    assert encode_labels(["b", "a"], label2id, False, where).tolist() == [1, 0]
    hot = encode_labels([["a", "c"], []], label2id, True, where)
    assert hot.tolist() == [[1, 0, 1], [0, 0, 0]]
    assert label_counts(hot, ["a", "b", "c"]) == {"a": 1, "b": 0, "c": 1}
    with pytest.raises(DataError, match=r"t\.csv:3: label 'd' does not occur in the training data \(known: a, b, c\)"):
        encode_labels(["a", "d"], label2id, False, where)
    with pytest.raises(DataError, match="expected a list of labels"):
        encode_labels(["a"], label2id, True, where)


def test_decisions():
    probs = np.array([[0.7, 0.3], [0.4, 0.6]])
    assert decisions(probs, ["n", "p"], False) == ["n", "p"]
    assert decisions(probs, ["n", "p"], False, thresholds=0.2) == ["p", "p"]
    assert decisions(probs, ["x", "y"], True, thresholds=np.array([0.5, 0.5])) == [["x"], ["y"]]
