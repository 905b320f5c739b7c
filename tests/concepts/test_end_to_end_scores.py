"""End-to-end scoring of the chain (shared.concepts.brat.end_to_end_scores): an entity counts only with its exact
span and type, a relation only with both entities and its type, in either argument order; a gold mention flat tags
cannot hold (discontinuous) is a miss; whitespace between fragments does not split a mention."""

from __future__ import annotations

import pytest

from shared.concepts.brat import end_to_end_scores
from shared.core.errors import DataError
from shared.formats.brat import read_brat

TEXT = "Aspirin increases the effect of warfarin and of aluminum and magnesium hydroxide .\n"
GOLD = (
    "T1\tdrug 0 7\tAspirin\n"
    "T2\tdrug 32 40\twarfarin\n"
    "T3\tdrug 48 56;71 80\taluminum hydroxide\n"
    "T4\tdrug 61 80\tmagnesium hydroxide\n"
    "R1\teffect Arg1:T1 Arg2:T2\n"
    "R2\tmechanism Arg1:T1 Arg2:T3\n"
)


def docs(tmp_path, name, ann, text=TEXT):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "d1.txt").write_text(text, encoding="utf-8")
    (folder / "d1.ann").write_text(ann, encoding="utf-8")
    return read_brat(folder, allow_overlaps=True)


def test_exact_spans_types_and_relation_types_count_and_nothing_else(tmp_path):
    gold = docs(tmp_path, "gold", GOLD)
    predicted = docs(tmp_path, "predicted", (
        "T1\tdrug 32 40\twarfarin\n"  # ids differ from gold's: spans decide
        "T2\tdrug 0 7\tAspirin\n"
        "T3\tdrug 48 56\taluminum\n"  # the first fragment only: a miss and a false positive
        "T4\tbrand 61 80\tmagnesium hydroxide\n"  # the wrong type
        "R1\teffect Arg1:T1 Arg2:T2\n"  # the reverse order of gold's R1: counts
        "R2\tmechanism Arg1:T2 Arg2:T3\n"  # joins the wrong span
    ))
    scores = end_to_end_scores(gold, predicted, resamples=0)
    assert (scores["entity_precision"], scores["entity_recall"]) == (0.5, 0.5)
    assert (scores["relation_precision"], scores["relation_recall"]) == (0.5, 0.5)
    assert scores["gold_entities"] == 4 and scores["gold_relations"] == 2


def test_a_mention_split_only_by_whitespace_is_one_span(tmp_path):
    text = "Give aluminum  hydroxide now .\n"
    gold = docs(tmp_path, "gold", "T1\tdrug 5 13;15 24\taluminum hydroxide\n", text)
    predicted = docs(tmp_path, "predicted", "T1\tdrug 5 24\taluminum  hydroxide\n", text)
    assert end_to_end_scores(gold, predicted, resamples=0)["entity_f1"] == 1.0


def test_intervals_come_from_documents_and_other_notes_are_refused(tmp_path):
    gold = docs(tmp_path, "gold", GOLD)
    scores = end_to_end_scores(gold, gold, resamples=20)
    assert scores["relation_f1"] == 1.0 and scores["relation_f1_ci_low"] == 1.0
    other = docs(tmp_path, "other", GOLD)
    other[0].doc_id = "d2"
    with pytest.raises(DataError, match="not the gold notes"):
        end_to_end_scores(gold, other, resamples=0)
