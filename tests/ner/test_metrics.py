"""Strict (seqeval IOB2) vs lenient (overlap) entity scores on hand-made cases, and their bootstrap CIs."""

import pytest

from shared.ner.metrics import _fast_scores, entity_metrics, entity_metrics_ci, lenient_scores, strict_scores

GOLD = [["B-p", "I-p", "O", "B-t", "O"], ["O", "B-r", "I-r", "I-r"]]


def test_exact_prediction_scores_one_everywhere():
    m = entity_metrics(GOLD, GOLD)
    assert m["f1"] == m["lenient_f1"] == m["macro_f1"] == m["token_accuracy"] == 1.0


def test_boundary_error_counts_as_wrong_strictly_but_right_leniently():
    pred = [["B-p", "O", "O", "B-t", "O"], ["O", "O", "B-r", "I-r"]]  # both p and r cut short
    m = entity_metrics(GOLD, pred)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 3)
    assert m["lenient_precision"] == 1.0 and m["lenient_recall"] == 1.0
    assert m["f1_p"] == 0.0 and m["lenient_f1_p"] == 1.0


def test_type_error_is_wrong_in_both():
    pred = [["B-t", "I-t", "O", "B-t", "O"], ["O", "B-r", "I-r", "I-r"]]
    m = entity_metrics(GOLD, pred)
    assert m["f1"] == pytest.approx(m["lenient_f1"])
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)


def test_one_gold_entity_is_matched_once_leniently():
    gold = [["B-p", "I-p", "I-p", "I-p"]]
    pred = [["B-p", "O", "B-p", "O"]]  # two predictions overlap the same gold entity
    rep = lenient_scores(gold, pred)["micro avg"]
    assert rep["precision"] == 0.5 and rep["recall"] == 1.0
    assert strict_scores(gold, pred)["micro avg"]["f1-score"] == 0.0


def test_strict_is_seqeval_strict_iob2():
    # seqeval strict mode does not accept an I- start as an entity (default mode would)
    gold = [["O", "B-p", "I-p"]]
    pred = [["O", "I-p", "I-p"]]
    assert entity_metrics(gold, pred)["f1"] == 0.0


def test_fast_bootstrap_scores_match_seqeval():
    pred = [["B-p", "O", "O", "B-t", "O"], ["B-p", "B-r", "I-r", "I-r"]]
    fast, full = _fast_scores(GOLD, pred), entity_metrics(GOLD, pred)
    for key in ("precision", "recall", "f1", "macro_f1", "lenient_f1"):
        assert fast[key] == pytest.approx(full[key]), key


def test_ci_brackets_the_estimate_and_groups_resample_documents():
    gold = GOLD * 10
    pred = [["B-p", "O", "O", "B-t", "O"], ["O", "B-r", "I-r", "I-r"]] * 10
    point = entity_metrics(gold, pred)["f1"]
    ci = entity_metrics_ci(gold, pred, resamples=200, seed=1)
    assert ci["f1"][0] <= point <= ci["f1"][1] and ci["f1"][0] < ci["f1"][1]
    # one document per pair of sentences: every resample has the same mix, so the interval collapses
    docs = [i // 2 for i in range(len(gold))]
    grouped = entity_metrics_ci(gold, pred, groups=docs, resamples=50, seed=1)
    assert grouped["f1"][0] == pytest.approx(point) and grouped["f1"][1] == pytest.approx(point)


def test_a_tagger_that_predicts_no_entity_is_flagged(caplog):
    import logging

    from shared.ner.metrics import entity_collapse_check

    gold = [["B-problem", "I-problem", "O"], ["O", "B-drug"]]
    with caplog.at_level(logging.WARNING, logger="shared.ner.metrics"):
        assert entity_collapse_check("test", gold, [["O"] * 3, ["O"] * 2]) == 0
        assert "test: no entity predicted in 2 examples although the gold tags hold 2" in caplog.text
        caplog.clear()
        assert entity_collapse_check("test", gold, [["B-problem", "O", "O"], ["O", "O"]]) == 1
    assert caplog.text == ""
