"""Relation examples: every candidate pair of concepts of one sentence, marked ``[E1] ... [/E1]`` / ``[E2] ... [/E2]``.

A split is an i2b2 folder (``.txt`` + ``.con`` [+ ``.rel``], or ``txt/`` + ``concept/`` [+ ``rel/``] subfolders) or a
BRAT folder (``.txt`` + ``.ann`` with ``T`` and ``R`` lines). Candidates, as each corpus defines them:

- i2b2 2010: the type-compatible pairs of one line, (treatment, problem), (test, problem) and (problem, problem)
  (:func:`shared.concepts.i2b2.i2b2_candidate_pairs`); a pair may only take the relation types that join its two types
  (a (test, problem) pair is TeRP, TeCP or none), which :attr:`RelationSet.allowed` records.
- BRAT: every unordered pair of entities of one line, in text order (DDI 2013's convention, its negatives implicit),
  or only the pairs whose types ``type_pairs`` lists.

A pair without a relation is :data:`NO_RELATION`. An i2b2 split without ``.rel`` files is for prediction; so is any
split whose concepts come from ``concepts_dir`` (the NER recipe's ``test_predictions/``: predicted concepts have no
gold relations). A BRAT file without ``R`` lines has no relations, and is scored as such.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from shared.concepts import brat as brat_relations
from shared.concepts.data import read_notes_with_concepts
from shared.concepts.i2b2 import (
    NO_RELATION,
    RELATION_TYPES,
    Relation,
    i2b2_candidate_pairs,
    pair_key,
    parse_rel,
    write_rel,
)
from shared.concepts.markers import FIRST, SECOND, mark
from shared.core.errors import DataError
from shared.core.files import atomic_write_text
from shared.formats.brat import BratDoc, BratEntity, format_entity, parse_ann, read_brat
from shared.formats.detect import detect_format
from shared.formats.i2b2 import I2b2Note, write_con

RELATION_FORMATS = ("auto", "i2b2", "brat")


@dataclass
class RelationSet:
    """One split: the candidate pairs, their marked sentences, labels (or None), and where each pair is."""

    format: str  # "i2b2" or "brat"
    notes: list  # I2b2Note or BratDoc
    pairs: list[tuple[int, object, object]]  # (index of its note, first concept, second concept)
    words: list[list[str]]
    labels: list[str] | None
    allowed: list[tuple[str, ...] | None]  # the relation types a pair may take (None: any)
    refs: list[tuple[str, int | None]]  # (.rel/.ann or .con file, line), for messages
    source: str
    with_pairs: frozenset[int] = frozenset()  # the notes that held candidates as read (before any subset)

    def __len__(self) -> int:
        return len(self.pairs)

    def where(self, i: int) -> tuple[str, int | None]:
        return self.refs[i]

    @property
    def groups(self) -> list[int]:
        """The note of each pair: carved splits and test CIs keep a note's pairs together."""
        return [note for note, _, _ in self.pairs]

    def select(self, indices) -> RelationSet:
        indices = list(indices)
        return RelationSet(self.format, self.notes, [self.pairs[i] for i in indices], [self.words[i] for i in indices],
                           None if self.labels is None else [self.labels[i] for i in indices],
                           [self.allowed[i] for i in indices], [self.refs[i] for i in indices], self.source,
                           self.with_pairs)

    @property
    def entity_types(self) -> list[str]:
        """The concept types of the notes (what a model trained on them pairs; the chain checks its NER gives
        them)."""
        return sorted({c.type for note in self.notes
                       for c in (note.entities if self.format == "brat" else note.concepts)})

    def allowed_mask(self, label_names: Sequence[str]):
        """``(pairs, classes)`` booleans: which classes each pair may take ("none" always; i2b2: the types that join
        its two concept types; BRAT: every type)."""
        return np.array([[name == NO_RELATION or allowed is None or name in allowed for name in label_names]
                         for allowed in self.allowed], dtype=bool).reshape(len(self.allowed), len(label_names))

    def locations(self) -> dict[str, list[str]]:
        """Where each pair is, without its words: the note and each concept's line:first-last token (i2b2) or
        entity id (BRAT), for the prediction table."""
        def at(concept) -> str:
            return concept.id if self.format == "brat" else concept.location

        return {"note": [self.notes[n].doc_id for n, _, _ in self.pairs],
                "first": [at(a) for _, a, _ in self.pairs], "second": [at(b) for _, _, b in self.pairs]}


def rel_path(note: I2b2Note) -> str:
    """Where a note's ``.rel`` file is: beside its ``.con``, or in ``rel/`` beside a ``concept/`` folder."""
    folder, name = os.path.split(note.con_path)
    if os.path.basename(folder) == "concept":
        return os.path.join(os.path.dirname(folder), "rel", name[:-4] + ".rel")
    return note.con_path[:-4] + ".rel"


def parse_type_pairs(value: str | None) -> list[tuple[str, str]] | None:
    """``"drug:brand,drug:drug"`` -> ``[("drug", "brand"), ("drug", "drug")]`` (None stays None)."""
    if value is None:
        return None
    pairs = []
    for item in value.split(","):
        parts = [p.strip() for p in item.split(":")]
        if len(parts) != 2 or not all(parts):
            raise DataError(f"--candidate_types: '{item.strip()}' is not a type pair such as drug:brand")
        pairs.append((parts[0], parts[1]))
    return pairs


def read_relation_split(path: str, data_format: str = "auto", concepts_dir: str | None = None,
                        type_pairs: Sequence[tuple[str, str]] | None = None) -> RelationSet:
    """Every candidate pair under ``path``, labelled from ``.rel`` files (i2b2) or ``R`` lines (BRAT). With
    ``concepts_dir`` the concepts come from ``<concepts_dir>/<note>.con`` (or ``.ann``) and the split is unlabelled.
    ``type_pairs`` restricts the candidates to pairs of those types (either order)."""
    if data_format == "auto":  # notes without concepts of their own: the concepts folder tells the format
        fmt = detect_format(concepts_dir if concepts_dir is not None and os.path.isdir(concepts_dir) else path)
    else:
        fmt = data_format
    if fmt not in ("i2b2", "brat"):
        raise DataError("relation data is an i2b2 folder (.txt + .con + .rel) or a BRAT folder (.txt + .ann)", path)
    if concepts_dir is not None and not os.path.isdir(concepts_dir):
        raise DataError("the concepts folder does not exist", concepts_dir)
    out = _read_i2b2(path, concepts_dir, type_pairs) if fmt == "i2b2" else _read_brat(path, concepts_dir, type_pairs)
    if not out.pairs:
        raise DataError("no candidate pairs: no sentence holds two concepts of types that can be related", path)
    return out


def _read_i2b2(path, concepts_dir, type_pairs) -> RelationSet:
    notes = read_notes_with_concepts(path, concepts_dir, "relations are found")
    has_rel = [concepts_dir is None and os.path.isfile(rel_path(n)) for n in notes]
    if any(has_rel) and not all(has_rel):
        note = notes[has_rel.index(False)]
        raise DataError(f"note has no .rel file (expected {rel_path(note)}; a note without relations has an empty "
                        "one)", note.txt_path)
    return i2b2_pairs(notes, all(has_rel), type_pairs, path)


def i2b2_pairs(notes: list[I2b2Note], labelled: bool, type_pairs, source: str) -> RelationSet:
    """The candidate pairs of i2b2 notes, marked (labelled from each note's ``.rel`` file when ``labelled``): the
    one encoding of the recipe, ``predict.py`` and the chain (notes built in memory)."""
    wanted = brat_relations.allowed_type_pairs(type_pairs)
    pairs, words, labels, allowed, refs = [], [], [], [], []
    for index, note in enumerate(notes):
        gold = {pair_key(r.first, r.second): r for r in parse_rel(rel_path(note), note)} if labelled else {}
        candidates = [(a, b) for a, b in i2b2_candidate_pairs(note)
                      if wanted is None or frozenset((a.type, b.type)) in wanted]
        keys = {pair_key(a, b) for a, b in candidates}
        for relation in gold.values():
            if pair_key(relation.first, relation.second) not in keys:
                raise DataError(f"a {relation.type} relation between a {relation.first.type} and a "
                                f"{relation.second.type}, which --candidate_types leaves out", rel_path(note),
                                relation.source_line)
        for a, b in candidates:
            relation = gold.get(pair_key(a, b))
            pairs.append((index, a, b))
            words.append(mark(note.lines[a.line - 1], [(a.start, a.end), (b.start, b.end)], [FIRST, SECOND]))
            labels.append(relation.type if relation else NO_RELATION)
            allowed.append(tuple(t for t, types in RELATION_TYPES.items() if types == (a.type, b.type)))
            refs.append((rel_path(note), relation.source_line) if relation else (note.con_path, a.source_line))
    return RelationSet("i2b2", notes, pairs, words, labels if labelled else None, allowed, refs, source,
                       frozenset(n for n, _, _ in pairs))


def _word_span(entity: BratEntity, words: list[tuple[str, int, int]], doc: BratDoc) -> tuple[int, int]:
    hits = [j for j, (_, start, end) in enumerate(words) if start < entity.end and end > entity.start]
    if not hits:
        raise DataError(f"entity {entity.id} covers no word (only whitespace)", doc.ann_path, entity.source_line)
    return hits[0], hits[-1]


def _read_brat(path, concepts_dir, type_pairs) -> RelationSet:
    docs = read_brat(path, allow_overlaps=True)
    if concepts_dir is not None:
        for doc in docs:
            ann = os.path.join(concepts_dir, doc.doc_id + ".ann")
            if not os.path.isfile(ann):
                raise DataError(f"no .ann file for note {doc.doc_id} in the concepts folder", concepts_dir)
            doc.ann_path = ann
            doc.items, doc.ann_trailing_newline = parse_ann(ann, doc.text, allow_overlaps=True)
    missing = next((d for d in docs if d.ann_path is None), None)
    if missing is not None:
        raise DataError("note has no .ann file; relations are found between its entities", missing.txt_path)
    return brat_pairs(docs, concepts_dir is None, type_pairs, path)


def brat_pairs(docs: list[BratDoc], labelled: bool, type_pairs, source: str) -> RelationSet:
    """The candidate pairs of BRAT notes, marked (labelled from their ``R`` lines when ``labelled``): the one
    encoding of the recipe, ``predict.py`` and the chain (notes built in memory)."""
    pairs, words, labels, allowed, refs = [], [], [], [], []
    for index, doc in enumerate(docs):
        gold = {}
        for relation in brat_relations.relations(doc):
            if relation.type == NO_RELATION:
                raise DataError(f"relation type '{NO_RELATION}' is this recipe's name for no relation; rename it",
                                doc.ann_path, relation.source_line)
            gold[frozenset((relation.arg1.id, relation.arg2.id))] = relation
        candidates = brat_relations.brat_candidate_pairs(doc, type_pairs)
        keys = {frozenset((a.id, b.id)) for a, b in candidates}
        for relation in gold.values():
            if frozenset((relation.arg1.id, relation.arg2.id)) not in keys:
                raise DataError(f"relation {relation.id} joins a {relation.arg1.type} and a {relation.arg2.type}, "
                                "which --candidate_types leaves out", doc.ann_path, relation.source_line)
        lines, line_of = doc.line_words(), brat_relations.entity_lines(doc)
        for a, b in candidates:
            sentence = lines[line_of[a.id]]
            relation = gold.get(frozenset((a.id, b.id))) if labelled else None
            pairs.append((index, a, b))
            words.append(mark([w for w, _, _ in sentence], [_word_span(a, sentence, doc), _word_span(b, sentence, doc)],
                              [FIRST, SECOND]))
            labels.append(relation.type if relation else NO_RELATION)
            allowed.append(None)
            refs.append((doc.ann_path, relation.source_line if relation else a.source_line))
    return RelationSet("brat", docs, pairs, words, labels if labelled else None, allowed, refs, source,
                       frozenset(n for n, _, _ in pairs))


def write_relations(out_dir: str, pairs: RelationSet, predicted: list[str]) -> list[str]:
    """Each note written back with its predicted relations: i2b2 as ``.txt`` + ``.con`` + ``.rel``; BRAT as
    ``.txt`` + ``.ann`` (its ``T`` and other lines as read, the ``R`` lines the predicted ones, Arg1 the pair's first
    entity in text order). Returns the note names."""
    os.makedirs(out_dir, exist_ok=True)
    by_note: dict[int, list[tuple[object, str, object]]] = {}
    for (note, a, b), value in zip(pairs.pairs, predicted):
        found = by_note.setdefault(note, [])
        if value != NO_RELATION:
            found.append((a, value, b))
    written = []
    for index, note in enumerate(pairs.notes):
        if index not in by_note and index in pairs.with_pairs:
            continue  # a note whose pairs were left out (--max_predict_samples)
        atomic_write_text(os.path.join(out_dir, note.doc_id + ".txt"), note.text)
        found = by_note.get(index, [])
        if pairs.format == "i2b2":
            write_con(os.path.join(out_dir, note.doc_id + ".con"), note.concepts)
            write_rel(os.path.join(out_dir, note.doc_id + ".rel"), [Relation(a, t, b) for a, t, b in found])
        else:
            kept = [format_entity(x) if isinstance(x, BratEntity) else x for x in note.items
                    if isinstance(x, BratEntity) or not x.startswith("R")]
            kept += [f"R{k}\t{t} Arg1:{a.id} Arg2:{b.id}" for k, (a, t, b) in enumerate(found, start=1)]
            atomic_write_text(os.path.join(out_dir, note.doc_id + ".ann"), "".join(line + "\n" for line in kept))
        written.append(note.doc_id)
    return written

