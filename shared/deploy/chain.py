"""From a clinical note to structured facts: the NER -> assertion -> relation chain over raw text.

    chain = Chain.from_folders("ner_out", "assertion_out", "relation_out")
    facts = chain.annotate(["Denies chest pain. Started on aspirin for angina."])

Each note goes through the NER model in the windows it was trained with (a long note is never cut); every concept it
finds is then handed, in memory, to the assertion and relation models in the form their recipes read from files:
an i2b2 note (whitespace tokens per line, the concept as the tokens it covers) or a BRAT note (character offsets),
encoded by the same code as ``--do_predict`` (``shared.concepts``). So a concept reaches the later stages exactly as
it would through files (``recipes/pipeline.py --output_format i2b2`` then each recipe's ``predict.py``).

Before any model runs, :meth:`Chain.check_types` says in one line which entity types the later models need and the
NER model does not give (``type_map`` renames NER types where the names differ). :class:`Limits` caps the work one
call may cause (the service answers 413 past them). Nothing of a note's text is logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from shared.concepts.data import assertion_examples
from shared.concepts.i2b2 import NO_RELATION, Assertion, Relation, write_ast, write_rel
from shared.concepts.relations import brat_pairs, i2b2_pairs
from shared.core.errors import DataError
from shared.core.files import atomic_write_text
from shared.deploy.concepts import AssertionClassifier, RelationClassifier
from shared.deploy.ensemble import load_folder_predictor
from shared.deploy.predictors import EntityTagger
from shared.formats.brat import WORD_PATTERN, BratDoc, BratEntity, format_entity, line_words
from shared.formats.i2b2 import Concept, I2b2Note, write_con
from shared.formats.tags import spans_from_tags

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("jsonl", "i2b2", "brat")
WHITESPACE_WORD = re.compile(r"[^ \t\n\f\v]+")  # an i2b2 token (shared.formats.i2b2.i2b2_tokens: ASCII spaces only)


class LimitExceeded(DataError):
    """One call would cause more work than :class:`Limits` allows (the service's 413)."""


@dataclass
class Limits:
    """The most work one call may cause; None: no cap (the command line)."""

    max_words: int | None = None  # words of all notes together
    max_windows: int | None = None  # NER windows (forward-pass rows)
    max_pairs: int | None = None  # candidate pairs for the relation model

    def check(self, what: str, count: int, cap: int | None, flag: str) -> None:
        if cap is not None and count > cap:
            raise LimitExceeded(f"the note(s) would need {count} {what}; this service allows at most {cap} "
                                f"({flag})")


CHAIN_LIMITS = Limits(max_words=20_000, max_windows=1_000, max_pairs=5_000)  # the service's defaults


@dataclass
class Fact:
    """One concept of a note: character offsets (end exclusive), its type, and its assertion once decided."""

    id: str
    type: str
    start: int
    end: int
    assertion: str | None = None


@dataclass
class NoteFacts:
    """What the chain found in one note: concepts (text order, ids T1, T2, ...) and relations between them."""

    note: str
    text: str
    concepts: list[Fact] = field(default_factory=list)
    relations: list[tuple[str, str, str]] = field(default_factory=list)  # (type, first id, second id)

    def as_json(self) -> dict:
        """The JSON object of the jsonl output and of the service (holds the concepts' words: sensitive)."""
        return {"note": self.note,
                "concepts": [{"id": c.id, "type": c.type, "start": c.start, "end": c.end,
                              "text": self.text[c.start:c.end],
                              **({"assertion": c.assertion} if c.assertion is not None else {})}
                             for c in self.concepts],
                "relations": [{"id": f"R{k}", "type": t, "arg1": a, "arg2": b}
                              for k, (t, a, b) in enumerate(self.relations, start=1)]}


def _covering(words: list[tuple[str, int, int]], start: int, end: int) -> tuple[int, int]:
    hits = [j for j, (_, s, e) in enumerate(words) if s < end and e > start]
    return hits[0], hits[-1]


def i2b2_note(doc_id: str, text: str, facts: Sequence[Fact]) -> I2b2Note:
    """A note as the i2b2 readers give it: whitespace tokens per line, each concept the tokens it covers."""
    lines = line_words(text, WHITESPACE_WORD)
    line_starts = np.cumsum([0] + [len(line) + 1 for line in text.split("\n")])
    concepts = []
    for fact in facts:
        line = int(np.searchsorted(line_starts, fact.start, side="right")) - 1
        first, last = _covering(lines[line], fact.start, fact.end)
        words = [w for w, _, _ in lines[line][first:last + 1]]
        concepts.append(Concept(" ".join(words).lower(), line + 1, first, last, fact.type))
    if text.endswith("\n"):
        lines.pop()
    return I2b2Note(doc_id, f"<{doc_id}>", None, text, [[w for w, _, _ in line] for line in lines], concepts,
                    labelled=False)


def brat_doc(doc_id: str, text: str, facts: Sequence[Fact]) -> BratDoc:
    """A note as the BRAT reader gives it: one ``T`` entity per concept."""
    return BratDoc(doc_id, f"<{doc_id}>", None, text,
                   [BratEntity(f.id, f.type, [(f.start, f.end)], text[f.start:f.end]) for f in facts],
                   labelled=False)


class Chain:
    """An NER folder, and optionally an assertion and a relation folder, run one after the other on raw notes."""

    task = "pipeline"  # what the service's /health names

    def __init__(self, tagger: EntityTagger, asserter: AssertionClassifier | None = None,
                 relater: RelationClassifier | None = None, type_map: dict[str, str] | None = None):
        self.tagger, self.asserter, self.relater = tagger, asserter, relater
        self.type_map = dict(type_map or {})
        self.words_pattern = WHITESPACE_WORD if tagger.record.inputs["data_format"] == "i2b2" else WORD_PATTERN
        self.check_types()

    @classmethod
    def from_folders(cls, ner_model: str, assertion_model: str | None = None, relation_model: str | None = None,
                     backend: str = "pytorch", batch_size: int = 64, threads: int | None = None,
                     type_map: dict[str, str] | None = None) -> Chain:
        """The chain of three folders (each a trained folder, an ensemble of fold models, or an export with
        ``backend="onnx"``); every folder is checked to hold its task, and the types to fit, before any weights
        load."""
        def load(folder, task):
            return load_folder_predictor(folder, backend, batch_size, threads, task) if folder else None

        return cls(load(ner_model, "ner"), load(assertion_model, "assertion_status"),
                   load(relation_model, "relation_extraction"), type_map)

    @property
    def tagged_types(self) -> set[str]:
        """The entity types the NER model tags, as it names them."""
        return {label.split("-", 1)[1] for label in self.tagger.labels if label != "O"}

    @property
    def entity_types(self) -> list[str]:
        """The concept types the chain gives: the NER model's, renamed by ``type_map``."""
        return sorted({self.type_map.get(t, t) for t in self.tagged_types})

    def check_types(self) -> None:
        """One line naming the types the assertion / relation models need that the NER model does not give."""
        ner_types = set(self.entity_types)
        raw = self.tagged_types
        unknown = sorted(set(self.type_map) - raw)
        if unknown:
            raise DataError(f"--type_map renames {', '.join(unknown)}, which the NER model does not give (it gives "
                            f"{', '.join(sorted(raw))})")
        for name, model in (("assertion", self.asserter), ("relation", self.relater)):
            needed = None if model is None else model.concept_types
            if needed is None:
                continue
            missing = sorted(set(needed) - ner_types)
            if missing:
                raise DataError(f"the {name} model works on {', '.join(needed)} concepts, but the NER model gives no "
                                f"{', '.join(missing)} (it gives {', '.join(sorted(ner_types))}): rename its types "
                                "with --type_map NER_TYPE=MODEL_TYPE,...")

    @property
    def backend(self) -> str:
        return self.tagger.backend

    @property
    def labels(self) -> list[str]:
        """What the chain gives (the service's /health): the concept types."""
        return self.entity_types

    @property
    def model(self):
        """Load every model's weights (or ONNX session) now, as the service does before its first request."""
        return [m.model for m in self.models.values()]

    @property
    def models(self) -> dict[str, object]:
        return {name: model for name, model in (("ner", self.tagger), ("assertion", self.asserter),
                                                ("relation", self.relater)) if model is not None}

    # ------------------------------------------------------------------------------------------------ the stages
    def concepts(self, texts: Sequence[str], limits: Limits) -> list[list[Fact]]:
        """The NER stage: every note's concepts with character offsets, in text order."""
        lines = [line_words(text, self.words_pattern) for text in texts]
        sentences = [(n, line) for n, note in enumerate(lines) for line in note if line]
        limits.check("words", sum(len(s) for _, s in sentences), limits.max_words, "--max_words")
        words = [[w for w, _, _ in s] for _, s in sentences]
        windows = self.tagger.windows(words) if words else []
        limits.check("NER windows", len(windows), limits.max_windows, "--max_windows")
        tags = self.tagger.predict(words, windows=windows).labels if words else []
        found: list[list[Fact]] = [[] for _ in texts]
        for (n, sentence), sentence_tags in zip(sentences, tags):
            for etype, first, last in spans_from_tags(sentence_tags):
                found[n].append(Fact("", self.type_map.get(etype, etype), sentence[first][1], sentence[last - 1][2]))
        for facts in found:
            for k, fact in enumerate(facts, start=1):
                fact.id = f"T{k}"
        return found

    def annotate(self, texts: Sequence[str], names: Sequence[str] | None = None,
                 limits: Limits | None = None) -> list[NoteFacts]:
        """Concepts, their assertions and the relations between them for every note (``names``: the note ids)."""
        limits = limits or Limits()
        names = [str(k) for k in range(len(texts))] if names is None else list(names)
        facts = self.concepts(texts, limits)
        # relations before assertions: the pair cap is checked before a second model runs
        relations = relate_facts(self.relater, texts, facts, limits) if self.relater else [[] for _ in texts]
        if self.asserter:
            assert_facts(self.asserter, texts, facts)
        return [NoteFacts(name, text, f, r) for name, text, f, r in zip(names, texts, facts, relations)]


def assert_facts(model: AssertionClassifier, texts: Sequence[str], facts: list[list[Fact]]) -> list[list]:
    """The assertion stage: each concept of the type the model decides about gets its assertion status
    (``Fact.assertion``); returns the probabilities of each note's asserted concepts, (fact, probabilities) pairs."""
    notes = [i2b2_note(str(n), text, f) for n, (text, f) in enumerate(zip(texts, facts))]
    examples = assertion_examples(notes, False, "<notes>")
    outputs = model.predict(examples.words)
    by_concept = {id(concept): k for k, (_, concept) in enumerate(examples.items)}
    asserted: list[list] = [[] for _ in texts]
    for n, (note, note_facts) in enumerate(zip(notes, facts)):
        for concept, fact in zip(note.concepts, note_facts):
            k = by_concept.get(id(concept))
            if k is not None:
                fact.assertion = outputs.labels[k]
                asserted[n].append((fact, outputs.probs[k]))
    return asserted


def relate_facts(model: RelationClassifier, texts: Sequence[str], facts: list[list[Fact]],
                 limits: Limits | None = None) -> list[list[tuple[str, str, str]]]:
    """The relation stage: every candidate pair of a sentence as the relation model's recipe makes them (i2b2's
    type-compatible pairs, or BRAT's pairs of the trained candidate types); each note's relations as (type, first
    concept id, second concept id), the first in text order."""
    limits = limits or Limits()
    if model.data_format == "i2b2":
        notes = [i2b2_note(str(n), text, f) for n, (text, f) in enumerate(zip(texts, facts))]
        pairs = i2b2_pairs(notes, False, model.type_pairs, "<notes>")
        ids = [{id(c): f.id for c, f in zip(note.concepts, note_facts)} for note, note_facts in zip(notes, facts)]
    else:
        notes = [brat_doc(str(n), text, f) for n, (text, f) in enumerate(zip(texts, facts))]
        pairs = brat_pairs(notes, False, model.type_pairs, "<notes>")
        ids = [{id(e): e.id for e in note.entities} for note in notes]
    limits.check("candidate pairs", len(pairs), limits.max_pairs, "--max_pairs")
    found: list[list[tuple[str, str, str]]] = [[] for _ in texts]
    if not len(pairs):
        return found
    outputs = model.predict(pairs.words, pairs.allowed_mask(model.labels))
    for (n, a, b), label in zip(pairs.pairs, outputs.labels):
        if label != NO_RELATION:
            found[n].append((label, ids[n][id(a)], ids[n][id(b)]))
    return found


def facts_of(text: str, concepts, where: str = "concepts") -> list[Fact]:
    """Concepts given with a note (the concept services: ``[{"start", "end", "type"}, ...]``, ids T1, T2, ... in
    the order given), checked: offsets inside the note, on one line, over at least one word. One line per mistake,
    naming the item, never the text."""
    if not isinstance(concepts, list):
        raise DataError(f"'{where}' must be a list of {{\"start\", \"end\", \"type\"}} objects")
    facts = []
    for k, item in enumerate(concepts):
        if not isinstance(item, dict) or set(item) != {"start", "end", "type"}:
            raise DataError(f"item {k} of '{where}' must be an object with start, end and type")
        start, end, ctype = item["start"], item["end"], item["type"]
        if not (isinstance(start, int) and isinstance(end, int) and not isinstance(start, bool)
                and 0 <= start < end <= len(text)):
            raise DataError(f"item {k} of '{where}': start and end must be character offsets with 0 <= start < end "
                            f"<= {len(text)} (the note's length)")
        if not isinstance(ctype, str) or not ctype.strip():
            raise DataError(f"item {k} of '{where}': type must be a non-empty string")
        if "\n" in text[start:end]:
            raise DataError(f"item {k} of '{where}' crosses a line break; concepts lie within one line")
        if not text[start:end].strip():
            raise DataError(f"item {k} of '{where}' covers no word (only whitespace)")
        facts.append(Fact(f"T{k + 1}", ctype, start, end))
    return facts


# ---------------------------------------------------------------------------------------------------- reading
def read_notes(path: str, text_column: str = "text", id_column: str | None = None) -> tuple[list[str], list[str]]:
    """(note ids, texts): a folder of raw ``.txt`` notes (or of i2b2's ``txt/`` subfolder; ids: the file names;
    annotations beside them are not read), or a table / JSONL with a text column (ids: ``id_column``, or the row number). One line naming the file and row on a mistake."""
    from shared.data.tables import read_table, require_columns, require_text
    from shared.formats.textfile import read_text

    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith(".txt") and not n.startswith("."))
        if not names and os.path.isdir(os.path.join(path, "txt")):  # i2b2's txt/ + concept/ layout
            path = os.path.join(path, "txt")
            names = sorted(n for n in os.listdir(path) if n.endswith(".txt") and not n.startswith("."))
        if not names:
            raise DataError("no .txt notes in the folder (the chain reads raw notes: a folder of .txt files, or a "
                            "table / JSONL with a text column)", path=path)
        return [n[:-4] for n in names], [read_text(os.path.join(path, n)) for n in names]
    if path.lower().endswith(".txt"):
        raise DataError("give the folder that holds the .txt notes, or a table / JSONL with a text column",
                        path=path)
    table = read_table(path)
    require_columns(table, [text_column] + ([id_column] if id_column else []))
    require_text(table, text_column)
    texts = list(table[text_column])
    ids = [str(v) for v in table[id_column]] if id_column else [str(i) for i in range(len(texts))]
    seen: dict[str, int] = {}
    for i, name in enumerate(ids):
        if name in seen:
            _, line = table.where(seen[name])
            first = f"line {line}" if line is not None else f"row {seen[name] + 1}"
            raise DataError(f"note id '{name}' is not unique ({first} has it too): ids name the output files",
                            *table.where(i))
        if id_column and not re.fullmatch(r"[\w.-]+", name):
            raise DataError(f"'{id_column}' must be a plain name (letters, digits, . - _): it names output files",
                            *table.where(i))
        seen[name] = i
    return ids, texts


# ---------------------------------------------------------------------------------------------------- writing
def write_facts(output_dir: str, notes: Sequence[NoteFacts], output_format: str, assertions: bool,
                relations: bool) -> list[str]:
    """The chain's output: ``notes.jsonl`` (one object per note), i2b2 ``.txt`` + ``.con`` [+ ``.ast``] [+
    ``.rel``] (``assertions`` / ``relations``: whether those stages ran, so a note without any gets an empty
    file), or BRAT ``.txt`` + ``.ann`` (``T`` lines, the assertion as an ``A`` attribute line, ``R`` lines).
    Every file holds note text or its words (sensitive). Returns the files written."""
    if output_format not in OUTPUT_FORMATS:
        raise DataError(f"--output_format must be one of {', '.join(OUTPUT_FORMATS)}, got '{output_format}'")
    if output_format == "jsonl":
        path = os.path.join(output_dir, "notes.jsonl")
        atomic_write_text(path, "".join(json.dumps(n.as_json(), ensure_ascii=False) + "\n" for n in notes))
        return [path]
    files = []
    for note in notes:
        base = os.path.join(output_dir, note.note)
        atomic_write_text(base + ".txt", note.text)
        files.append(base + ".txt")
        if output_format == "brat":
            lines = [format_entity(BratEntity(c.id, c.type, [(c.start, c.end)], note.text[c.start:c.end]))
                     for c in note.concepts]
            lines += [f"A{k}\tAssertion {c.id} {c.assertion}"
                      for k, c in enumerate((c for c in note.concepts if c.assertion is not None), start=1)]
            lines += [f"R{k}\t{t} Arg1:{a} Arg2:{b}" for k, (t, a, b) in enumerate(note.relations, start=1)]
            atomic_write_text(base + ".ann", "".join(line + "\n" for line in lines))
            files.append(base + ".ann")
            continue
        i2b2 = i2b2_note(note.note, note.text, note.concepts)
        by_id = dict(zip((c.id for c in note.concepts), i2b2.concepts))
        write_con(base + ".con", i2b2.concepts)
        files.append(base + ".con")
        asserted = [Assertion(by_id[c.id], c.assertion) for c in note.concepts if c.assertion is not None]
        if assertions:
            write_ast(base + ".ast", asserted)
            files.append(base + ".ast")
        if relations:
            write_rel(base + ".rel", [Relation(by_id[a], t, by_id[b]) for t, a, b in note.relations])
            files.append(base + ".rel")
    return files


def parse_type_map(value: str | None) -> dict[str, str]:
    """``"Disease=problem,Drug=treatment"`` -> ``{"Disease": "problem", "Drug": "treatment"}``."""
    if not value:
        return {}
    mapping = {}
    for item in value.split(","):
        parts = [p.strip() for p in item.split("=")]
        if len(parts) != 2 or not all(parts):
            raise DataError(f"--type_map: '{item.strip()}' is not NER_TYPE=MODEL_TYPE")
        if parts[0] in mapping:
            raise DataError(f"--type_map renames {parts[0]} twice")
        mapping[parts[0]] = parts[1]
    return mapping
