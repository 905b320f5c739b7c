"""i2b2 2010 concept format: ``.txt`` notes (one sentence per line, whitespace tokens) with ``.con`` files.

A ``.con`` line looks like ``c="chest pain" 12:3 12:4||t="problem"``: line numbers start at 1, token offsets at 0,
both ends inclusive. The concept text is lowercase in the official data, so it is compared case-insensitively.

A corpus is a folder with ``name.txt`` + ``name.con`` side by side, or ``txt/`` + ``concept/`` subfolders, or a
single ``.txt`` file with its ``.con`` next to it. Notes without any ``.con`` file are read as unlabelled (for
prediction). Writing a note back gives the same bytes when its files were in the canonical layout (one concept per
line, newline-terminated); predictions are written as ``.con`` files that the official scorer reads.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from shared.core.errors import DataError
from shared.core.files import atomic_write_text
from shared.formats.brat import OverlapError
from shared.formats.tags import spans_from_tags
from shared.formats.textfile import read_text

# extra spaces around the spans and the "||" (hand-edited files) are harmless; the quoted text is compared to the note
_CON_LINE = re.compile(r'^\s*c="(.*)"\s+(\d+):(\d+)\s+(\d+):(\d+)\s*\|\|\s*t="([^"]+)"\s*$')
# i2b2 notes come tokenized, tokens separated by ASCII spaces: a Unicode space (a non-breaking space pasted from a
# word processor) is part of its token, as the .con token numbers count it
I2B2_SPACE = re.compile(r"[ \t\f\v]+")


def i2b2_tokens(text: str) -> list[str]:
    """The tokens of a note line (or of a concept's text) as i2b2 counts them: split on ASCII whitespace only."""
    return [token for token in I2B2_SPACE.split(text) if token]


@dataclass
class Concept:
    text: str
    line: int  # 1-based line of the note
    start: int  # 0-based first token, inclusive
    end: int  # 0-based last token, inclusive
    type: str
    source_line: int | None = None  # line in the .con file, for error messages

    @property
    def location(self) -> str:
        """``line:first-last`` tokens: where the concept is, without its words (prediction tables)."""
        return f"{self.line}:{self.start}-{self.end}"


@dataclass
class I2b2Note:
    doc_id: str
    txt_path: str
    con_path: str | None
    text: str  # the .txt file as read, kept so that writing it back is byte-identical
    lines: list[list[str]]  # tokens of each line
    concepts: list[Concept] = field(default_factory=list)
    labelled: bool = True

    def line_tags(self) -> list[list[str]]:
        """IOB2 tags for every line (empty lines give empty lists)."""
        return self.tag_lines()[0]

    def tag_lines(self, drop_overlapping: bool = False) -> tuple[list[list[str]], int]:
        """IOB2 tags for every line, and how many concepts were left out: with ``drop_overlapping`` a concept on
        tokens an earlier one (``.con`` order) holds, which flat tags cannot hold beside it; else that is an error."""
        tags = [["O"] * len(toks) for toks in self.lines]
        dropped = 0
        for c in self.concepts:
            row = tags[c.line - 1]
            if any(tag != "O" for tag in row[c.start: c.end + 1]):
                if not drop_overlapping:
                    raise OverlapError("concept overlaps another concept", self.con_path, c.source_line)
                dropped += 1
                continue
            row[c.start] = f"B-{c.type}"
            for k in range(c.start + 1, c.end + 1):
                row[k] = f"I-{c.type}"
        return tags, dropped


def _note_lines(text: str) -> list[list[str]]:
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return [i2b2_tokens(line) for line in lines]


def parse_con(con_path: str, lines: list[list[str]], allow_overlaps: bool = False) -> list[Concept]:
    """Parse and validate a ``.con`` file against the tokens of its note; overlapping concepts are an error unless
    ``allow_overlaps`` (:meth:`I2b2Note.tag_lines` then leaves the later one out)."""
    concepts: list[Concept] = []
    owner: dict[tuple[int, int], int] = {}  # (line, token) -> .con line that claimed it, to report overlaps
    for k, raw in enumerate(read_text(con_path).split("\n"), start=1):
        if not raw.strip():
            continue
        m = _CON_LINE.match(raw)
        if not m:
            raise DataError('malformed concept line; expected c="text" L:T L:T||t="type"', con_path, k)
        text, l1, t1, l2, t2, ctype = m.group(1), *map(int, m.group(2, 3, 4, 5)), m.group(6).strip()
        if l1 != l2:
            raise DataError(f"concept spans lines {l1} to {l2}; concepts must lie on one line", con_path, k)
        if not 1 <= l1 <= len(lines):
            raise DataError(f"line {l1} is outside the note ({len(lines)} lines)", con_path, k)
        n_tok = len(lines[l1 - 1])
        if t1 > t2:
            raise DataError(f"concept starts at token {t1} after it ends ({t2})", con_path, k)
        if t2 >= n_tok:
            raise DataError(f"token {t2} is outside line {l1} ({n_tok} tokens)", con_path, k)
        covered = " ".join(lines[l1 - 1][t1: t2 + 1])
        if " ".join(i2b2_tokens(text)).lower() != covered.lower():
            # Say where, not what: the tokens are patient text and must not end up in logs.
            raise DataError(f"concept text does not match the tokens at {l1}:{t1}-{l1}:{t2} of the note",
                            con_path, k)
        for t in [] if allow_overlaps else range(t1, t2 + 1):
            if (l1, t) in owner:
                raise OverlapError(f"concept overlaps the concept on line {owner[(l1, t)]}", con_path, k)
            owner[(l1, t)] = k
        concepts.append(Concept(text, l1, t1, t2, ctype, k))
    return concepts


def _pairs(path: str) -> list[tuple[str, str, str | None]]:
    """(doc_id, txt_path, con_path or None) for every note under ``path``."""
    if os.path.isfile(path):
        if not path.endswith(".txt"):
            raise DataError("an i2b2 input is a .txt note or a folder of them", path)
        con = path[:-4] + ".con"
        return [(os.path.basename(path)[:-4], path, con if os.path.exists(con) else None)]
    if not os.path.isdir(path):
        raise DataError("no such file or folder", path)
    txt_dir, con_dir = path, path
    if os.path.isdir(os.path.join(path, "txt")):
        txt_dir = os.path.join(path, "txt")
        con_dir = os.path.join(path, "concept")
    # hidden files, macOS "._note.txt" resource forks among them, are not notes
    names = sorted(n[:-4] for n in os.listdir(txt_dir) if n.endswith(".txt") and not n.startswith("."))
    if not names:
        raise DataError("no .txt notes found", txt_dir)
    pairs = []
    for name in names:
        con = os.path.join(con_dir, name + ".con")
        pairs.append((name, os.path.join(txt_dir, name + ".txt"), con if os.path.exists(con) else None))
    have = [p for p in pairs if p[2] is not None]
    if have and len(have) != len(pairs):
        missing = next(p for p in pairs if p[2] is None)
        raise DataError(f"note has no .con file (expected {os.path.join(con_dir, missing[0] + '.con')})", missing[1])
    return pairs


def read_i2b2(path: str | os.PathLike, allow_overlaps: bool = False) -> list[I2b2Note]:
    """Read and validate every note under ``path`` (see the module docstring for layouts); overlapping concepts
    are an error unless ``allow_overlaps``."""
    notes = []
    for doc_id, txt_path, con_path in _pairs(os.fspath(path)):
        text = read_text(txt_path)
        lines = _note_lines(text)
        concepts = parse_con(con_path, lines, allow_overlaps) if con_path else []
        notes.append(I2b2Note(doc_id, txt_path, con_path, text, lines, concepts, labelled=con_path is not None))
    return notes


def format_span(c: Concept) -> str:
    """The concept as the i2b2 files name it: ``c="text" line:first line:last``."""
    return f'c="{c.text}" {c.line}:{c.start} {c.line}:{c.end}'


def format_concept(c: Concept) -> str:
    return f'{format_span(c)}||t="{c.type}"'


def concepts_from_tags(lines: list[list[str]], tags: list[list[str]]) -> list[Concept]:
    """Concepts (lowercased text, as in the official data) from IOB2 tags of every line."""
    concepts = []
    for line_no, (toks, line_tags) in enumerate(zip(lines, tags), start=1):
        for ctype, s, e in spans_from_tags(line_tags):
            concepts.append(Concept(" ".join(toks[s:e]).lower(), line_no, s, e - 1, ctype))
    return concepts


def write_con(path: str | os.PathLike, concepts: list[Concept]) -> None:
    atomic_write_text(path, "".join(format_concept(c) + "\n" for c in concepts))


def write_i2b2(notes: list[I2b2Note], out_dir: str | os.PathLike, tags: list[list[list[str]]] | None = None,
               write_txt: bool = True) -> None:
    """Write notes as ``<doc_id>.txt`` + ``<doc_id>.con`` into ``out_dir``.

    With ``tags`` (per note, per line) the concepts are built from them (predictions); otherwise the notes' own
    concepts are written, in their original order.
    """
    out_dir = os.fspath(out_dir)
    for i, note in enumerate(notes):
        concepts = note.concepts if tags is None else concepts_from_tags(note.lines, tags[i])
        if write_txt:
            atomic_write_text(os.path.join(out_dir, note.doc_id + ".txt"), note.text)
        write_con(os.path.join(out_dir, note.doc_id + ".con"), concepts)
