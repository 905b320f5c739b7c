"""i2b2 2010 assertion (``.ast``) and relation (``.rel``) files, read against the note's concepts (``.con``).

    .ast  c="chest pain" 12:3 12:4||t="problem"||a="present"
    .rel  c="percocet" 98:5 98:5||r="TrAP"||c="pain" 98:9 98:9

Line numbers start at 1, token offsets at 0, both ends inclusive, as in ``.con`` (:mod:`shared.formats.i2b2`). Every
concept an ``.ast`` or ``.rel`` line names must be a concept of the note's ``.con`` file, an assertion must be on a
``problem`` and a relation must join two concepts of one sentence (line) whose types its relation type allows;
anything else is a :class:`DataError` naming the file and line, never the note's words.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from shared.core.errors import DataError
from shared.core.files import atomic_write_text
from shared.formats.i2b2 import Concept, I2b2Note, format_concept, format_span, i2b2_tokens
from shared.formats.textfile import read_text

ASSERTIONS = ("present", "absent", "possible", "conditional", "hypothetical", "associated_with_someone_else")
# relation type -> (type of the first concept, type of the second), as the 2010 challenge defines them
RELATION_TYPES = {
    "TrIP": ("treatment", "problem"),  # treatment improves problem
    "TrWP": ("treatment", "problem"),  # treatment worsens problem
    "TrCP": ("treatment", "problem"),  # treatment causes problem
    "TrAP": ("treatment", "problem"),  # treatment is administered for problem
    "TrNAP": ("treatment", "problem"),  # treatment is not administered because of problem
    "TeRP": ("test", "problem"),  # test reveals problem
    "TeCP": ("test", "problem"),  # test conducted to investigate problem
    "PIP": ("problem", "problem"),  # problem indicates problem
}
NO_RELATION = "none"
# the type pairs i2b2 annotates relations between; every such pair in a sentence is a candidate
CANDIDATE_TYPES = (("treatment", "problem"), ("test", "problem"), ("problem", "problem"))

# extra spaces around the spans and the "||" (hand-edited files) are harmless, as in .con files
_SPAN = r'c="(.*?)"\s+(\d+):(\d+)\s+(\d+):(\d+)'
_AST_LINE = re.compile(rf'^{_SPAN}\s*\|\|\s*t="([^"]+)"\s*\|\|\s*a="([^"]+)"$')
_REL_LINE = re.compile(rf'^{_SPAN}\s*\|\|\s*r="([^"]+)"\s*\|\|\s*{_SPAN}$')


@dataclass
class Assertion:
    concept: Concept
    value: str
    source_line: int | None = None


@dataclass
class Relation:
    first: Concept
    type: str
    second: Concept
    source_line: int | None = None


def _lines(path: str):
    for k, raw in enumerate(read_text(path).split("\n"), start=1):
        if raw.strip():
            yield k, raw.strip()


def _concept_at(note: I2b2Note, groups, path: str, k: int, role: str = "the concept") -> Concept:
    """The ``.con`` concept at the span of ``groups`` (text, l1, t1, l2, t2), or a one-line error."""
    text, l1, t1, l2, t2 = groups[0], *map(int, groups[1:5])
    if l1 != l2:
        raise DataError(f"{role} spans lines {l1} to {l2}; concepts lie on one line", path, k)
    for concept in note.concepts:
        if (concept.line, concept.start, concept.end) == (l1, t1, t2):
            if " ".join(i2b2_tokens(text)).lower() != " ".join(i2b2_tokens(concept.text)).lower():
                raise DataError(f"{role} at {l1}:{t1}-{l2}:{t2} has other text than the .con concept there", path, k)
            return concept
    raise DataError(f"{role} at {l1}:{t1}-{l2}:{t2} is not a concept of the note's .con file", path, k)


def parse_ast(path: str, note: I2b2Note) -> list[Assertion]:
    """The assertions of a note's ``.ast`` file, each on one of its ``.con`` problems."""
    out, seen = [], {}
    for k, raw in _lines(path):
        m = _AST_LINE.match(raw)
        if not m:
            raise DataError('malformed assertion line; expected c="text" L:T L:T||t="problem"||a="value"', path, k)
        concept = _concept_at(note, m.groups()[:5], path, k)
        ctype, value = m.group(6).strip(), m.group(7).strip().lower()
        if ctype != concept.type:
            raise DataError(f"the assertion says t=\"{ctype}\" but the .con concept there is a {concept.type}",
                            path, k)
        if concept.type != "problem":
            raise DataError(f"an assertion on a {concept.type} concept; i2b2 asserts problems only", path, k)
        if value not in ASSERTIONS:
            raise DataError(f"unknown assertion '{value}' (known: {', '.join(ASSERTIONS)})", path, k)
        key = (concept.line, concept.start, concept.end)
        if key in seen:
            raise DataError(f"a second assertion on the concept of line {seen[key]}", path, k)
        seen[key] = k
        out.append(Assertion(concept, value, k))
    return out


def parse_rel(path: str, note: I2b2Note) -> list[Relation]:
    """The relations of a note's ``.rel`` file, each between two ``.con`` concepts of one sentence."""
    out, seen = [], {}
    for k, raw in _lines(path):
        m = _REL_LINE.match(raw)
        if not m:
            raise DataError('malformed relation line; expected c="text" L:T L:T||r="type"||c="text" L:T L:T',
                            path, k)
        groups = m.groups()
        first = _concept_at(note, groups[:5], path, k, "the first concept")
        rtype = groups[5].strip()
        second = _concept_at(note, groups[6:], path, k, "the second concept")
        if rtype not in RELATION_TYPES:
            raise DataError(f"unknown relation type '{rtype}' (known: {', '.join(RELATION_TYPES)})", path, k)
        if first.line != second.line:
            raise DataError(f"a relation across sentences (lines {first.line} and {second.line}); i2b2 relations "
                            "join concepts of one sentence", path, k)
        if (first.type, second.type) != RELATION_TYPES[rtype]:
            want = "a {} and a {}".format(*RELATION_TYPES[rtype])
            raise DataError(f"{rtype} joins {want}, not a {first.type} and a {second.type}", path, k)
        key = pair_key(first, second)
        if key in seen:
            raise DataError(f"a second relation between the concepts of line {seen[key]}", path, k)
        seen[key] = k
        out.append(Relation(first, rtype, second, k))
    return out


def pair_key(a: Concept, b: Concept) -> tuple:
    """One key per unordered pair of concepts."""
    return tuple(sorted([(a.line, a.start, a.end), (b.line, b.start, b.end)]))


def i2b2_candidate_pairs(note: I2b2Note) -> list[tuple[Concept, Concept]]:
    """Every pair of concepts of one sentence whose types i2b2 relates: (treatment, problem), (test, problem) in
    that order, and (problem, problem) in text order. Sorted by line, then by position."""
    by_line: dict[int, list[Concept]] = {}
    for concept in note.concepts:
        by_line.setdefault(concept.line, []).append(concept)
    pairs = []
    for line in sorted(by_line):
        concepts = sorted(by_line[line], key=lambda c: c.start)
        for i, a in enumerate(concepts):
            for b in concepts[i + 1:]:
                if (a.type, b.type) in CANDIDATE_TYPES:
                    pairs.append((a, b))
                elif (b.type, a.type) in CANDIDATE_TYPES:
                    pairs.append((b, a))
    return pairs


def write_ast(path: str | os.PathLike, assertions: list[Assertion]) -> None:
    atomic_write_text(path, "".join(f'{format_concept(a.concept)}||a="{a.value}"\n' for a in assertions))


def write_rel(path: str | os.PathLike, relations: list[Relation]) -> None:
    atomic_write_text(path, "".join(f'{format_span(r.first)}||r="{r.type}"||{format_span(r.second)}\n'
                                    for r in relations))
