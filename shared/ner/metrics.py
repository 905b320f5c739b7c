"""Entity-level NER scores: strict IOB2 (seqeval), lenient overlap matching, token accuracy, bootstrap CIs.

Strict: an entity counts only when type, first and last token all match (seqeval ``mode="strict"``,
``scheme=IOB2``; this is what ``test_f1`` reports). Lenient: a predicted entity is correct when it overlaps a gold
entity of the same type by at least one token (the i2b2 2010 "inexact" match); each gold entity can be matched once.
Inputs are IOB2 tag sequences; BIOES predictions are converted before scoring.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from shared.evaluation.metrics import bootstrap_ci
from shared.formats.tags import spans_from_tags

logger = logging.getLogger(__name__)


def strict_scores(y_true: Sequence[list[str]], y_pred: Sequence[list[str]]) -> dict:
    """seqeval strict report: ``{"micro avg": {...}, "macro avg": {...}, "<type>": {...}}``."""
    return classification_report(list(map(list, y_true)), list(map(list, y_pred)), mode="strict", scheme=IOB2,
                                  output_dict=True, zero_division=0)


def _prf(tp_pred: int, n_pred: int, tp_gold: int, n_gold: int) -> dict[str, float]:
    p = tp_pred / n_pred if n_pred else 0.0
    r = tp_gold / n_gold if n_gold else 0.0
    return {"precision": p, "recall": r, "f1-score": 2 * p * r / (p + r) if p + r else 0.0, "support": n_gold}


def lenient_scores(y_true: Sequence[list[str]], y_pred: Sequence[list[str]]) -> dict:
    """Overlap matching per type and micro/macro averaged, in the same layout as :func:`strict_scores`.

    Precision counts predicted entities overlapping a same-type gold entity; recall counts gold entities
    overlapped by a same-type prediction (matching is one-to-one, greedy left to right).
    """
    counts: dict[str, list[int]] = {}  # type -> [matched preds, n preds, matched golds, n golds]
    for gold_tags, pred_tags in zip(y_true, y_pred):
        gold, pred = spans_from_tags(gold_tags), spans_from_tags(pred_tags)
        used = set()
        for etype, s, e in pred:
            c = counts.setdefault(etype, [0, 0, 0, 0])
            c[1] += 1
            for k, (gtype, gs, ge) in enumerate(gold):
                if k not in used and gtype == etype and gs < e and s < ge:
                    used.add(k)
                    c[0] += 1
                    c[2] += 1
                    break
        for gtype, _, _ in gold:
            counts.setdefault(gtype, [0, 0, 0, 0])[3] += 1
    report = {t: _prf(*c) for t, c in sorted(counts.items())}
    totals = np.sum(list(counts.values()), axis=0) if counts else np.zeros(4, dtype=int)
    report["micro avg"] = _prf(*map(int, totals))
    per_type = [report[t] for t in counts]
    report["macro avg"] = {k: float(np.mean([r[k] for r in per_type])) if per_type else 0.0
                           for k in ("precision", "recall", "f1-score")}
    report["macro avg"]["support"] = int(totals[3])
    return report


def token_accuracy(y_true: Sequence[list[str]], y_pred: Sequence[list[str]]) -> float:
    total = sum(len(t) for t in y_true)
    return sum(a == b for t, p in zip(y_true, y_pred) for a, b in zip(t, p)) / total if total else float("nan")


def entity_metrics(y_true: Sequence[list[str]], y_pred: Sequence[list[str]]) -> dict[str, float]:
    """Flat metrics for ``all_results.json``: ``f1`` is strict micro F1.

    Keys: precision/recall/f1 (strict micro), macro_precision/macro_recall/macro_f1 (strict),
    lenient_precision/lenient_recall/lenient_f1 (micro), lenient_macro_f1, token_accuracy, and
    ``f1_<type>`` / ``lenient_f1_<type>`` per entity type.
    """
    strict, lenient = strict_scores(y_true, y_pred), lenient_scores(y_true, y_pred)
    out = {
        "precision": strict["micro avg"]["precision"],
        "recall": strict["micro avg"]["recall"],
        "f1": strict["micro avg"]["f1-score"],
        "macro_precision": strict["macro avg"]["precision"],
        "macro_recall": strict["macro avg"]["recall"],
        "macro_f1": strict["macro avg"]["f1-score"],
        "lenient_precision": lenient["micro avg"]["precision"],
        "lenient_recall": lenient["micro avg"]["recall"],
        "lenient_f1": lenient["micro avg"]["f1-score"],
        "lenient_macro_f1": lenient["macro avg"]["f1-score"],
        "token_accuracy": token_accuracy(y_true, y_pred),
    }
    for etype, scores in strict.items():
        if etype not in ("micro avg", "macro avg", "weighted avg"):
            out[f"f1_{etype}"] = scores["f1-score"]
    for etype, scores in lenient.items():
        if etype not in ("micro avg", "macro avg"):
            out[f"lenient_f1_{etype}"] = scores["f1-score"]
    return {k: float(v) for k, v in out.items()}


def entity_report(y_true: Sequence[list[str]], y_pred: Sequence[list[str]]) -> dict:
    """Per-type strict and lenient P/R/F1/support, JSON-serialisable (the recipe's per-type report)."""
    def clean(rep):
        return {k: {m: float(v) for m, v in d.items()} for k, d in rep.items()}
    return {"strict": clean(strict_scores(y_true, y_pred)), "lenient": clean(lenient_scores(y_true, y_pred))}


def entity_metrics_ci(y_true: Sequence[list[str]], y_pred: Sequence[list[str]], groups: Sequence | None = None,
                      resamples: int = 1000, seed: int = 0,
                      names: tuple[str, ...] = ("f1", "precision", "recall", "lenient_f1", "macro_f1")
                      ) -> dict[str, tuple[float, float]]:
    """Bootstrap 95% CIs of the headline entity metrics, resampling sentences (or whole ``groups``, e.g. the
    document each sentence comes from, so that sentences of one note stay together)."""
    y_true, y_pred = list(y_true), list(y_pred)

    def metric_fn(idx):
        m = _fast_scores([y_true[i] for i in idx], [y_pred[i] for i in idx])
        return {k: m[k] for k in names if k in m}

    return bootstrap_ci(metric_fn, len(y_true), resamples=resamples, groups=groups, seed=seed)


def _fast_scores(y_true, y_pred) -> dict[str, float]:
    """Strict micro/macro and lenient micro scores straight from spans (the bootstrap calls this a thousand
    times; on valid IOB2 sequences, which the recipe always scores, the strict part equals seqeval strict IOB2)."""
    per_type: dict[str, list[int]] = {}  # type -> [tp, n_pred, n_gold]
    for t, p in zip(y_true, y_pred):
        g, q = set(spans_from_tags(t)), set(spans_from_tags(p))
        for span in g | q:
            c = per_type.setdefault(span[0], [0, 0, 0])
            c[0] += span in g and span in q
            c[1] += span in q
            c[2] += span in g
    tp, n_pred, n_gold = (sum(c[i] for c in per_type.values()) for i in range(3))
    strict = _prf(tp, n_pred, tp, n_gold)
    # seqeval's macro average runs over the types present in the gold or predicted data, as here.
    macro = float(np.mean([_prf(c[0], c[1], c[0], c[2])["f1-score"] for c in per_type.values()])) if per_type else 0.0
    lenient = lenient_scores(y_true, y_pred)["micro avg"]
    return {"precision": strict["precision"], "recall": strict["recall"], "f1": strict["f1-score"],
            "macro_f1": macro, "lenient_f1": lenient["f1-score"]}


def entity_collapse_check(split: str, y_true: Sequence[list[str]], y_pred: Sequence[list[str]]) -> int:
    """How many entities a tagger predicted on a labelled split, with a warning when it predicted none although the
    gold tags hold some: a model collapsed to ``O`` (its token accuracy can still look high). Counts only."""
    predicted = sum(len(spans_from_tags(tags)) for tags in y_pred)
    gold = sum(len(spans_from_tags(tags)) for tags in y_true)
    if predicted == 0 and gold:
        logger.warning("%s: no entity predicted in %d examples although the gold tags hold %d: the model has collapsed "
                       "to 'O'", split, len(y_pred), gold)
    return predicted
