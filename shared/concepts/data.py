"""Assertion-status examples: every ``problem`` concept of an i2b2 folder, marked in its sentence.

A split is an i2b2 folder (``.txt`` + ``.con`` [+ ``.ast``] side by side, or ``txt/`` + ``concept/`` [+ ``ast/``]
subfolders, or one ``.txt`` with its ``.con``). With ``.ast`` files every problem concept must have an assertion
(labelled); without them the split is for prediction, e.g. the NER recipe's ``test_predictions/`` folder, whose
``.con`` files are its predicted concepts. The example text is the concept's sentence with ``[E]`` / ``[/E]`` around
the concept; long sentences keep the words nearest the concept (:func:`shared.concepts.markers.fit_around`), never cut it off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from shared.concepts.i2b2 import Assertion, parse_ast, write_ast
from shared.concepts.markers import ENTITY, mark
from shared.core.errors import DataError
from shared.core.files import atomic_write_text
from shared.formats.i2b2 import Concept, I2b2Note, parse_con, read_i2b2, write_con

ASSERTED_TYPE = "problem"  # i2b2 decides the assertion status of problem concepts only


@dataclass
class ConceptSet:
    """One split: the problem concepts to classify, their marked sentences, labels (or None) and where each is."""

    notes: list[I2b2Note]
    items: list[tuple[int, Concept]]  # (index of its note, the concept)
    words: list[list[str]]  # the marked sentence of each concept, as words
    labels: list[str] | None
    refs: list[tuple[str, int | None]]  # (.ast or .con file, line) of each concept, for messages
    source: str

    def __len__(self) -> int:
        return len(self.items)

    def where(self, i: int) -> tuple[str, int | None]:
        return self.refs[i]

    @property
    def groups(self) -> list[int]:
        """The note of each concept: carved splits and test CIs keep a note's concepts together."""
        return [note for note, _ in self.items]

    def locations(self) -> dict[str, list[str]]:
        """Where each concept is, without its words: the note and the concept's ``line:first-last`` token, for the
        prediction table."""
        return {"note": [self.notes[n].doc_id for n, _ in self.items],
                "concept": [c.location for _, c in self.items]}

    def select(self, indices) -> ConceptSet:
        indices = list(indices)
        return ConceptSet(self.notes, [self.items[i] for i in indices], [self.words[i] for i in indices],
                          None if self.labels is None else [self.labels[i] for i in indices],
                          [self.refs[i] for i in indices], self.source)


def ast_path(note: I2b2Note) -> str:
    """Where a note's ``.ast`` file is: beside its ``.con``, or in ``ast/`` beside a ``concept/`` folder."""
    folder, name = os.path.split(note.con_path)
    if os.path.basename(folder) == "concept":
        return os.path.join(os.path.dirname(folder), "ast", name[:-4] + ".ast")
    return note.con_path[:-4] + ".ast"


def read_notes_with_concepts(path: str, concepts_dir: str | None, what: str) -> list[I2b2Note]:
    """The i2b2 notes under ``path``, each with its concepts: from its own ``.con`` file, or with ``concepts_dir``
    from ``<concepts_dir>/<note>.con`` (the NER recipe's ``test_predictions/``). A note without concepts is an
    error saying ``what`` needs them."""
    notes = read_i2b2(path)
    if concepts_dir is not None:
        if not os.path.isdir(concepts_dir):
            raise DataError("the concepts folder does not exist", concepts_dir)
        for note in notes:
            con = os.path.join(concepts_dir, note.doc_id + ".con")
            if not os.path.isfile(con):
                raise DataError(f"no .con file for note {note.doc_id} in the concepts folder", concepts_dir)
            note.con_path, note.concepts = con, parse_con(con, note.lines)
    missing = next((n for n in notes if n.con_path is None), None)
    if missing is not None:
        raise DataError(f"note has no .con file; {what} for the concepts of a .con file (or give "
                        "--test_concepts_dir: the NER recipe's test_predictions/)", missing.txt_path)
    return notes


def read_assertion_split(path: str, concepts_dir: str | None = None) -> ConceptSet:
    """Every problem concept under ``path``, labelled from ``.ast`` files when the notes have them. With
    ``concepts_dir`` the concepts come from ``<concepts_dir>/<note>.con`` instead (e.g. the NER recipe's
    ``test_predictions/``) and the split is unlabelled: predicted concepts have no gold assertions."""
    notes = read_notes_with_concepts(path, concepts_dir, "assertion status is decided")
    has_ast = [concepts_dir is None and os.path.isfile(ast_path(n)) for n in notes]
    if any(has_ast) and not all(has_ast):
        note = notes[has_ast.index(False)]
        raise DataError(f"note has no .ast file (expected {ast_path(note)})", note.txt_path)
    concepts = assertion_examples(notes, all(has_ast), path)
    if not concepts.items:
        raise DataError("no problem concepts in the .con files (assertions are decided for problems)", path)
    return concepts


def assertion_examples(notes: list[I2b2Note], labelled: bool, source: str) -> ConceptSet:
    """The problem concepts of ``notes`` marked in their sentences (labelled from each note's ``.ast`` file when
    ``labelled``): the one encoding of the recipe, ``predict.py`` and the chain (notes built in memory)."""
    items, words, labels, refs = [], [], [], []
    for index, note in enumerate(notes):
        asserted = {}
        if labelled:
            asserted = {(a.concept.line, a.concept.start, a.concept.end): a for a in parse_ast(ast_path(note), note)}
        for concept in note.concepts:
            if concept.type != ASSERTED_TYPE:
                continue
            assertion = asserted.get((concept.line, concept.start, concept.end))
            if labelled and assertion is None:
                raise DataError(f"problem concept has no assertion in {ast_path(note)}", note.con_path,
                                concept.source_line)
            items.append((index, concept))
            words.append(mark(note.lines[concept.line - 1], [(concept.start, concept.end)], [ENTITY]))
            labels.append(assertion.value if assertion else None)
            refs.append((ast_path(note), assertion.source_line) if assertion else (note.con_path, concept.source_line))
    return ConceptSet(notes, items, words, labels if labelled else None, refs, source)


def write_assertions(out_dir: str, concepts: ConceptSet, predicted: list[str]) -> list[str]:
    """Each note written back as ``<doc>.txt`` + ``<doc>.con`` + ``<doc>.ast`` with the predicted assertions (the
    input of the relation recipe, or of the i2b2 scorer); returns the note names."""
    os.makedirs(out_dir, exist_ok=True)
    by_note: dict[int, list[Assertion]] = {}
    for (note, concept), value in zip(concepts.items, predicted):
        by_note.setdefault(note, []).append(Assertion(concept, value))
    written = []
    for index, note in enumerate(concepts.notes):
        if index not in by_note and any(c.type == "problem" for c in note.concepts):
            continue  # a note whose concepts were left out (--max_predict_samples)
        atomic_write_text(os.path.join(out_dir, note.doc_id + ".txt"), note.text)
        write_con(os.path.join(out_dir, note.doc_id + ".con"), note.concepts)
        write_ast(os.path.join(out_dir, note.doc_id + ".ast"), by_note.get(index, []))
        written.append(note.doc_id)
    return written
