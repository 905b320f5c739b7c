"""BRAT relations: ``R<n><TAB>Type Arg1:T<a> Arg2:T<b>`` lines between the entities of one sentence (line).

Read with :func:`shared.formats.brat.read_brat` (``allow_overlaps=True``: relation corpora such as DDI 2013 have
discontinuous mentions that share words); every ``R`` line must name two entities of its file that lie on one
line of the note. Negatives are implicit, as in DDI: every pair of entities of a sentence without an ``R`` line is a
"no relation" candidate (:func:`brat_candidate_pairs`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from shared.core.errors import DataError
from shared.evaluation.metrics import add_ci, bootstrap_ci
from shared.formats.brat import BratDoc, BratEntity, entity_key

_R_LINE = re.compile(r"^(R\d+)\t(\S+) Arg1:(\S+) Arg2:(\S+)\s*$")


@dataclass
class BratRelation:
    id: str
    type: str
    arg1: BratEntity
    arg2: BratEntity
    source_line: int | None = None


def entity_lines(doc: BratDoc) -> dict[str, int]:
    """Entity id -> the 0-based line of the note it starts on."""
    starts, pos = [], 0
    for line in doc.text.split("\n"):
        starts.append(pos)
        pos += len(line) + 1
    out = {}
    for entity in doc.entities:
        out[entity.id] = max(i for i, s in enumerate(starts) if s <= entity.start)
    return out


def relations(doc: BratDoc) -> list[BratRelation]:
    """The ``R`` lines of a document, checked against its entities (one line per mistake, naming the line)."""
    entities = {e.id: e for e in doc.entities}
    line_of = entity_lines(doc)
    out, seen = [], {}
    for k, item in enumerate(doc.items, start=1):  # items are the .ann lines, in order
        if isinstance(item, BratEntity) or not item.startswith("R"):
            continue
        m = _R_LINE.match(item)
        if not m:
            raise DataError("malformed relation line; expected 'R<n><TAB>Type Arg1:T<a> Arg2:T<b>'", doc.ann_path, k)
        rid, rtype, a1, a2 = m.groups()
        for arg in (a1, a2):
            if arg not in entities:
                raise DataError(f"relation {rid} names {arg}, which is not an entity of this file", doc.ann_path, k)
        if a1 == a2:
            raise DataError(f"relation {rid} joins {a1} to itself", doc.ann_path, k)
        if line_of[a1] != line_of[a2]:
            raise DataError(f"relation {rid} crosses sentences (lines {line_of[a1] + 1} and {line_of[a2] + 1} of the "
                            "note); relations join entities of one sentence", doc.ann_path, k)
        key = frozenset((a1, a2))
        if key in seen:
            raise DataError(f"a second relation between {a1} and {a2} (first on line {seen[key]})", doc.ann_path, k)
        seen[key] = k
        out.append(BratRelation(rid, rtype, entities[a1], entities[a2], k))
    return out


def allowed_type_pairs(type_pairs: Iterable[tuple[str, str]] | None) -> set[frozenset[str]] | None:
    """Type pairs as unordered sets, to test a pair of concepts by ``frozenset((a.type, b.type)) in allowed``
    (None: every pair)."""
    return None if type_pairs is None else {frozenset(p) for p in type_pairs}


def brat_candidate_pairs(doc: BratDoc, type_pairs: Iterable[tuple[str, str]] | None = None
                    ) -> list[tuple[BratEntity, BratEntity]]:
    """Every unordered pair of entities on one line, in text order (first by start offset); with ``type_pairs``
    only pairs whose types (in either order) are listed."""
    allowed = allowed_type_pairs(type_pairs)
    line_of = entity_lines(doc)
    ordered = sorted(doc.entities, key=lambda e: (e.start, e.end, e.id))
    pairs = []
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if line_of[a.id] != line_of[b.id]:
                continue
            if allowed is not None and frozenset((a.type, b.type)) not in allowed:
                continue
            pairs.append((a, b))
    return pairs


def _document_counts(gold: BratDoc, predicted: BratDoc) -> list[int]:
    """[entity tp, fp, fn, relation tp, fp, fn] of one document (sets of exact keys)."""
    counts = []
    keyed = []
    for doc in (gold, predicted):
        keys = {e.id: entity_key(doc, e) for e in doc.entities}
        found = {(r.type, frozenset((keys[r.arg1.id], keys[r.arg2.id]))) for r in relations(doc)}
        keyed.append((set(keys.values()), found))
    for g, p in zip(*keyed):
        counts += [len(g & p), len(p - g), len(g - p)]
    return counts


def end_to_end_scores(gold: Sequence[BratDoc], predicted: Sequence[BratDoc], resamples: int = 1000,
                      seed: int = 0) -> dict[str, float]:
    """Entity and relation precision / recall / F1 of predicted documents against gold ones (the same notes, in the
    same order), micro-averaged over every entity and relation, with bootstrap 95% CIs over documents.

    An entity counts when its type and span match exactly (a discontinuous gold mention needs the same fragments,
    so one that flat tags cannot hold is a miss); a relation when its type and both entities (type and span) match,
    in either argument order (DDI 2013's convention)."""
    if [d.doc_id for d in gold] != [d.doc_id for d in predicted]:
        raise DataError("the predicted notes are not the gold notes (names or order differ)")
    counts = np.array([_document_counts(g, p) for g, p in zip(gold, predicted)], dtype=np.int64).reshape(-1, 6)

    def scores(rows: np.ndarray) -> dict[str, float]:
        total = counts[rows].sum(axis=0)
        out = {}
        for name, (tp, fp, fn) in (("entity", total[:3]), ("relation", total[3:])):
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            out.update({f"{name}_precision": float(precision), f"{name}_recall": float(recall),
                        f"{name}_f1": float(2 * precision * recall / (precision + recall)) if tp else 0.0})
        return out

    result = scores(np.arange(len(counts)))
    result.update(gold_entities=int(counts[:, 0].sum() + counts[:, 2].sum()),
                  gold_relations=int(counts[:, 3].sum() + counts[:, 5].sum()))
    if resamples:
        intervals = bootstrap_ci(scores, len(counts), resamples, seed=seed)
        result = add_ci(result, {k: v for k, v in intervals.items() if k.endswith("_f1")})
    return result
