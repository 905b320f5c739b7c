"""BRAT standoff: ``name.txt`` + ``name.ann`` with character-offset entities (``T1<TAB>Problem 10 20<TAB>chest pain``).

For token classification a note is cut into sentences at line breaks and into words by ``WORD_PATTERN`` (runs of
letters/digits, or one punctuation mark). An entity covers every word it overlaps. Discontinuous entities
(``10 15;20 25``) are read as the range from their first to their last character, and counted, because flat BIO
tags cannot express gaps. Lines other than ``T`` lines (relations, events, attributes, notes, comments) are kept
as they are, so reading and writing a file back gives the same bytes.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field

from shared.core.errors import DataError
from shared.core.files import atomic_write_text
from shared.formats.tags import spans_from_tags
from shared.formats.textfile import read_text

logger = logging.getLogger(__name__)

WORD_PATTERN = re.compile(r"\w+|[^\w\s]")
_T_LINE = re.compile(r"^(T\d+)\t(\S+) (\d+ \d+(?:;\d+ \d+)*)\t(.*)$")


@dataclass
class BratEntity:
    id: str
    type: str
    spans: list[tuple[int, int]]  # character offsets, end exclusive
    text: str
    source_line: int | None = None

    @property
    def start(self) -> int:
        return self.spans[0][0]

    @property
    def end(self) -> int:
        return self.spans[-1][1]


@dataclass
class BratDoc:
    doc_id: str
    txt_path: str
    ann_path: str | None
    text: str
    # T lines as BratEntity, every other .ann line as its raw string, in file order
    items: list = field(default_factory=list)
    ann_trailing_newline: bool = True
    labelled: bool = True

    @property
    def entities(self) -> list[BratEntity]:
        return [x for x in self.items if isinstance(x, BratEntity)]

    def line_words(self) -> list[list[tuple[str, int, int]]]:
        """Words with their character offsets, one list per line of the note (empty lines give empty lists)."""
        out, pos = [], 0
        for line in self.text.split("\n"):
            out.append([(m.group(), pos + m.start(), pos + m.end()) for m in WORD_PATTERN.finditer(line)])
            pos += len(line) + 1
        return out

    def sentences(self) -> list[list[tuple[str, int, int]]]:
        """Words with their character offsets, one list per non-empty line of the note."""
        return [words for words in self.line_words() if words]

    def sentence_tags(self) -> list[list[str]]:
        """IOB2 tags for every sentence of :meth:`sentences`."""
        sents = self.sentences()
        tags = [["O"] * len(s) for s in sents]
        for ent in self.entities:
            hits = [(i, j) for i, s in enumerate(sents) for j, (_, ws, we) in enumerate(s)
                    if ws < ent.end and we > ent.start]
            if not hits:
                raise DataError("entity covers no word (only whitespace)", self.ann_path, ent.source_line)
            if hits[0][0] != hits[-1][0]:
                raise DataError("entity crosses a line break; entities must lie within one line",
                                self.ann_path, ent.source_line)
            i = hits[0][0]
            for n, (_, j) in enumerate(hits):
                if tags[i][j] != "O":
                    raise DataError("entity overlaps another entity on the same words", self.ann_path,
                                    ent.source_line)
                tags[i][j] = ("B-" if n == 0 else "I-") + ent.type
        return tags


def parse_ann(ann_path: str, text: str, allow_overlaps: bool = False) -> tuple[list, bool]:
    raw = read_text(ann_path)
    trailing = raw.endswith("\n")
    lines = raw.split("\n")
    if trailing:
        lines.pop()
    items: list = []
    seen: dict[str, int] = {}
    char_owner: list[tuple[int, int, int]] = []  # (start, end, line) of entities read so far
    n_discontinuous = 0
    for k, line in enumerate(lines, start=1):
        if not line.startswith("T"):
            if line and line[0] not in "REAMN#*":
                raise DataError("malformed annotation line (expected an id starting with T, R, E, A, M, N, # or *)",
                                ann_path, k)
            items.append(line)
            continue
        m = _T_LINE.match(line)
        if not m:
            raise DataError("malformed entity line; expected 'T<n><TAB>Type start end<TAB>text'", ann_path, k)
        eid, etype, span_str, etext = m.groups()
        if eid in seen:
            raise DataError(f"entity id {eid} already used on line {seen[eid]}", ann_path, k)
        seen[eid] = k
        spans = [tuple(map(int, p.split(" "))) for p in span_str.split(";")]
        for s, e in spans:
            if s >= e:
                raise DataError(f"empty or reversed span {s} {e}", ann_path, k)
            if e > len(text):
                raise DataError(f"span {s} {e} is outside the text ({len(text)} characters)", ann_path, k)
        if " ".join(text[s:e] for s, e in spans) != etext:
            raise DataError("entity text does not match the note at its offsets", ann_path, k)
        if len(spans) > 1:
            n_discontinuous += 1
        ent = BratEntity(eid, etype, spans, etext, k)
        for s, e, other in [] if allow_overlaps else char_owner:
            if s < ent.end and ent.start < e:
                raise DataError(f"entity overlaps the entity on line {other}", ann_path, k)
        char_owner.append((ent.start, ent.end, k))
        items.append(ent)
    if n_discontinuous:
        logger.warning("%s: %d discontinuous entities read as their covering range", ann_path, n_discontinuous)
    return items, trailing


def read_brat(path: str | os.PathLike, allow_overlaps: bool = False) -> list[BratDoc]:
    """Read every ``.txt`` (+ ``.ann``) under ``path`` (a folder, or one ``.txt`` file). Overlapping entities are an
    error (flat tags cannot hold them) unless ``allow_overlaps`` (relation corpora)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        if not path.endswith(".txt"):
            raise DataError("a BRAT input is a .txt file or a folder of .txt + .ann files", path)
        txts = [path]
    elif os.path.isdir(path):
        txts = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".txt") and not n.startswith("."))
        if not txts:
            raise DataError("no .txt files found", path)
    else:
        raise DataError("no such file or folder", path)
    anns = [t[:-4] + ".ann" for t in txts]
    have = [os.path.exists(a) for a in anns]
    if any(have) and not all(have):
        missing = have.index(False)
        raise DataError(f"note has no .ann file (expected {anns[missing]})", txts[missing])
    docs = []
    for txt, ann, has in zip(txts, anns, have):
        text = read_text(txt, offsets=True)
        items, trailing = parse_ann(ann, text, allow_overlaps) if has else ([], True)
        docs.append(BratDoc(os.path.basename(txt)[:-4], txt, ann if has else None, text, items, trailing,
                            labelled=has))
    return docs


def format_entity(ent: BratEntity) -> str:
    spans = ";".join(f"{s} {e}" for s, e in ent.spans)
    return f"{ent.id}\t{ent.type} {spans}\t{ent.text}"


def entities_from_tags(doc: BratDoc, tags: list[list[str]]) -> list[BratEntity]:
    """Entities (character offsets from the words' offsets) from IOB2 tags of every sentence."""
    ents = []
    for words, sent_tags in zip(doc.sentences(), tags):
        for etype, s, e in spans_from_tags(sent_tags):
            start, end = words[s][1], words[e - 1][2]
            ents.append(BratEntity(f"T{len(ents) + 1}", etype, [(start, end)], doc.text[start:end]))
    return ents


def write_brat(docs: list[BratDoc], out_dir: str | os.PathLike, tags: list[list[list[str]]] | None = None,
               write_txt: bool = True) -> None:
    """Write ``<doc_id>.txt`` + ``<doc_id>.ann``; with ``tags`` (per doc, per sentence) only predicted T lines."""
    out_dir = os.fspath(out_dir)
    for i, doc in enumerate(docs):
        if tags is None:
            lines = [format_entity(x) if isinstance(x, BratEntity) else x for x in doc.items]
            trailing = doc.ann_trailing_newline
        else:
            lines = [format_entity(e) for e in entities_from_tags(doc, tags[i])]
            trailing = True
        body = "\n".join(lines) + ("\n" if trailing and lines else "")
        if write_txt:
            atomic_write_text(os.path.join(out_dir, doc.doc_id + ".txt"), doc.text)
        atomic_write_text(os.path.join(out_dir, doc.doc_id + ".ann"), body)
