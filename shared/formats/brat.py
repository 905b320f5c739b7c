"""BRAT standoff: ``name.txt`` + ``name.ann`` with character-offset entities (``T1<TAB>Problem 10 20<TAB>chest pain``).

For token classification a note is cut into sentences at line breaks and into words by ``WORD_PATTERN`` (runs of
letters/digits, or one punctuation mark). An entity covers every word it overlaps. Flat tags hold neither an
entity with words in a gap (``10 15;20 25``) nor two entities on the same words; :meth:`BratDoc.tag_sentences`
applies one of ``OVERLAPPING_ENTITIES`` to them and counts what it changed (fragments separated by spaces alone
cover contiguous words: they are read whole). Lines other than ``T`` lines (relations, events, attributes,
normalisations, notes) are kept as they are, so reading and writing a file back gives the same bytes.

Predictions are written back over the input's own ``.ann`` (:func:`predicted_lines`): a predicted entity that is an
input entity keeps its ``T`` line and id, new ones get ids above the input's, and every other line is kept as read
while the annotations it refers to are still in the file, so no line ever names a missing id.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise

from shared.core.errors import DataError
from shared.core.files import atomic_write_text
from shared.formats.tags import spans_from_tags
from shared.formats.textfile import read_text

logger = logging.getLogger(__name__)

WORD_PATTERN = re.compile(r"\w+|[^\w\s]")
# What to do with entities flat tags cannot hold (overlapping ones, discontinuous ones with words in a gap):
# 'error' stops at the later of two overlapping entities (a discontinuous one is read as its covering range);
# 'first_fragment' cuts a discontinuous one to its first fragment and 'drop' leaves it out, and both leave out an
# entity on words an earlier (.ann line) entity already holds.
OVERLAPPING_ENTITIES = ("error", "first_fragment", "drop")
_T_LINE = re.compile(r"^(T\d+)\t(\S+) (\d+ \d+(?:;\d+ \d+)*)\t(.*)$")


class OverlapError(DataError):
    """Two annotations on the same words, which flat tags cannot hold both of (the NER reader names its option)."""


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
        return line_words(self.text)

    def sentences(self) -> list[list[tuple[str, int, int]]]:
        """Words with their character offsets, one list per non-empty line of the note."""
        return [words for words in self.line_words() if words]

    def sentence_tags(self) -> list[list[str]]:
        """IOB2 tags for every sentence of :meth:`sentences` (overlapping entities an error)."""
        return self.tag_sentences("error")[0]

    def tag_sentences(self, overlapping: str = "error") -> tuple[list[list[str]], Counter]:
        """IOB2 tags for every sentence of :meth:`sentences`, entities taken in ``.ann`` order, and how many entities
        ``overlapping`` (one of ``OVERLAPPING_ENTITIES``) changed: ``covering_range`` / ``first_fragment``
        (discontinuous entities read as their covering range / cut to their first fragment),
        ``dropped_discontinuous`` and ``dropped_overlapping`` (entities left out)."""
        if overlapping not in OVERLAPPING_ENTITIES:
            raise ValueError(f"overlapping must be one of {OVERLAPPING_ENTITIES}, got {overlapping!r}")
        sents = self.sentences()
        tags = [["O"] * len(s) for s in sents]
        changed: Counter = Counter()
        owner: dict[tuple[int, int], tuple[BratEntity, bool]] = {}  # word -> (entity tagged there, as a covering range)
        for ent in self.entities:
            spans, covering = ent.spans, False
            if gap_holds_words(self.text, spans):
                if overlapping == "drop":
                    changed["dropped_discontinuous"] += 1
                    continue
                if overlapping == "first_fragment":
                    spans = spans[:1]
                    changed["first_fragment"] += 1
                else:  # the words of the gap are tagged too
                    changed["covering_range"] += 1
                    covering = True
            start, end = spans[0][0], spans[-1][1]
            hits = [(i, j) for i, s in enumerate(sents) for j, (_, ws, we) in enumerate(s) if ws < end and we > start]
            if not hits:
                raise DataError("entity covers no word (only whitespace)", self.ann_path, ent.source_line)
            if hits[0][0] != hits[-1][0]:
                raise DataError("entity crosses a line break; entities must lie within one line",
                                self.ann_path, ent.source_line)
            i = hits[0][0]
            if any(tags[i][j] != "O" for _, j in hits):
                if overlapping == "error":
                    other, other_covering = next(owner[(i, j)] for _, j in hits if (i, j) in owner)
                    raise OverlapError(_overlap_reason(ent, covering, other, other_covering), self.ann_path,
                                       ent.source_line)
                changed["dropped_overlapping"] += 1  # the earlier entity (.ann order) keeps the words
                continue
            for n, (_, j) in enumerate(hits):
                tags[i][j] = ("B-" if n == 0 else "I-") + ent.type
                owner[(i, j)] = (ent, covering)
        return tags, changed


def _overlap_reason(ent: BratEntity, covering: bool, other: BratEntity, other_covering: bool) -> str:
    """Why ``ent`` cannot be tagged over ``other``, naming a discontinuous entity read as its covering range (its gap
    holds the other entity's words), since the user sees two entities that do not overlap in the .ann file."""
    if covering:
        return (f"discontinuous entity (fragments {_fragments(ent)}) read as its covering range takes the words of "
                f"the entity on line {other.source_line} in its gap")
    if other_covering:
        return (f"entity lies in the gap of the discontinuous entity on line {other.source_line} (fragments "
                f"{_fragments(other)}), read as its covering range")
    return f"entity overlaps the entity on line {other.source_line}"


def _fragments(ent: BratEntity) -> str:
    return ";".join(f"{s} {e}" for s, e in ent.spans)


def line_words(text: str, pattern: re.Pattern = WORD_PATTERN) -> list[list[tuple[str, int, int]]]:
    """The words of every line of ``text`` (``pattern``: BRAT's words, or e.g. i2b2's whitespace tokens) with their
    character offsets, one list per line (empty lines give empty lists)."""
    out, pos = [], 0
    for line in text.split("\n"):
        out.append([(m.group(), pos + m.start(), pos + m.end()) for m in pattern.finditer(line)])
        pos += len(line) + 1
    return out


def gap_holds_words(text: str, spans: list[tuple[int, int]]) -> bool:
    """Whether a discontinuous entity leaves out a word between its fragments (fragments separated by whitespace
    alone cover contiguous words, which flat tags hold)."""
    return any(WORD_PATTERN.search(text, end, start) for (_, end), (start, _) in pairwise(spans))


def parse_ann(ann_path: str, text: str, allow_overlaps: bool = False, warn_discontinuous: bool = True
              ) -> tuple[list, bool]:
    raw = read_text(ann_path)
    trailing = raw.endswith("\n")
    lines = raw.split("\n")
    if trailing:
        lines.pop()
    items: list = []
    seen: dict[str, int] = {}
    char_owner: list[tuple[int, int, int, list]] = []  # (start, end, line, spans) of entities read so far
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
        for s, e, other, other_spans in [] if allow_overlaps else char_owner:
            if s < ent.end and ent.start < e:
                if len(ent.spans) > 1:  # the covering ranges overlap, maybe not the words: say so
                    raise OverlapError(f"discontinuous entity (read as its covering range {ent.start}-{ent.end}) "
                                       f"overlaps the entity on line {other}", ann_path, k)
                if len(other_spans) > 1:
                    raise OverlapError(f"entity overlaps the discontinuous entity on line {other} (read as its "
                                       f"covering range {s}-{e})", ann_path, k)
                raise OverlapError(f"entity overlaps the entity on line {other}", ann_path, k)
        char_owner.append((ent.start, ent.end, k, ent.spans))
        items.append(ent)
    if n_discontinuous and warn_discontinuous:
        logger.warning("%s: %d discontinuous entities read as their covering range", ann_path, n_discontinuous)
    return items, trailing


def read_brat(path: str | os.PathLike, allow_overlaps: bool = False, warn_discontinuous: bool = True
              ) -> list[BratDoc]:
    """Read every ``.txt`` (+ ``.ann``) under ``path`` (a folder, or one ``.txt`` file). Overlapping entities are an
    error (flat tags cannot hold them) unless ``allow_overlaps`` (relation corpora; NER data read with an
    ``OVERLAPPING_ENTITIES`` rule). Discontinuous entities are logged per file unless ``warn_discontinuous`` is
    False (the NER reader counts what it did with them per split instead)."""
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
        items, trailing = parse_ann(ann, text, allow_overlaps, warn_discontinuous) if has else ([], True)
        docs.append(BratDoc(os.path.basename(txt)[:-4], txt, ann if has else None, text, items, trailing,
                            labelled=has))
    return docs


def format_entity(ent: BratEntity) -> str:
    spans = ";".join(f"{s} {e}" for s, e in ent.spans)
    return f"{ent.id}\t{ent.type} {spans}\t{ent.text}"


def entity_key(doc: BratDoc, ent: BratEntity) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Type and spans, fragments separated by whitespace alone merged: the entity as flat tags predict it (and as
    the end-to-end scorer compares mentions, however they were cut)."""
    merged = [ent.spans[0]]
    for start, end in ent.spans[1:]:
        if gap_holds_words(doc.text, [merged[-1], (start, end)]):
            merged.append((start, end))
        else:
            merged[-1] = (merged[-1][0], end)
    return ent.type, tuple(merged)


def entities_from_tags(doc: BratDoc, tags: list[list[str]]) -> list[BratEntity]:
    """Entities (character offsets from the words' offsets) from IOB2 tags of every sentence, in text order. One
    with the type and span of an entity of the input (fragments separated by whitespace alone count as one span)
    is that entity, as read (its ``T`` id, line and spans); the others get ids above the input's largest ``T``."""
    inputs: dict[tuple, list[BratEntity]] = {}
    for ent in doc.entities:
        inputs.setdefault(entity_key(doc, ent), []).append(ent)
    next_id = max((int(e.id[1:]) for e in doc.entities), default=0) + 1
    ents = []
    for words, sent_tags in zip(doc.sentences(), tags):
        for etype, s, e in spans_from_tags(sent_tags):
            start, end = words[s][1], words[e - 1][2]
            same = inputs.get((etype, ((start, end),)))
            if same:  # two input lines with one span and type: each prediction takes the next
                ents.append(same.pop(0))
            else:
                ents.append(BratEntity(f"T{next_id}", etype, [(start, end)], doc.text[start:end]))
                next_id += 1
    return ents


def referenced_ids(line: str) -> list[str]:
    """The annotation ids a non-entity ``.ann`` line refers to: ``R1<TAB>Type Arg1:T1 Arg2:T2``,
    ``E1<TAB>Type:T3 Role:T4``, ``A1<TAB>Negated T2 [value]`` (and ``M``), ``N1<TAB>Reference T1 db:id<TAB>text``,
    ``#1<TAB>AnnotatorNotes T1<TAB>text``, ``*<TAB>Equiv T1 T2``."""
    fields = line.split("\t")
    if len(fields) < 2 or not fields[0]:
        return []
    kind, args = fields[0][0], fields[1].split(" ")
    if kind in "RE":
        return [arg.split(":", 1)[1] for arg in args if ":" in arg]
    if kind in "AMN#":
        return args[1:2]
    if kind == "*":
        return args[1:]
    return []


def predicted_lines(doc: BratDoc, tags: list[list[str]]) -> tuple[list[str], int]:
    """The ``.ann`` lines of ``doc`` with its entities replaced by the ones ``tags`` predict, and how many
    non-entity lines were dropped. Input order is kept: an input entity that is predicted stays where it was, new
    entities follow the input's last ``T`` line (in text order), and every other line is kept as read while every
    id it refers to is still in the file (a line on a line that was dropped goes too)."""
    predicted = entities_from_tags(doc, tags)
    kept_ids, input_ids = {id(e) for e in predicted}, {id(e) for e in doc.entities}  # the objects, as read
    new = [e for e in predicted if id(e) not in input_ids]
    others = {k: x for k, x in enumerate(doc.items) if not isinstance(x, BratEntity)}
    present = {e.id for e in predicted} | {x.split("\t", 1)[0] for x in others.values()}
    dropped: set[int] = set()
    while True:  # until no line refers to an id that is gone
        gone = {k for k, x in others.items() if k not in dropped and any(r not in present for r in referenced_ids(x))}
        if not gone:
            break
        dropped |= gone
        present = {e.id for e in predicted} | {x.split("\t", 1)[0] for k, x in others.items() if k not in dropped}
    t_positions = [k for k, x in enumerate(doc.items) if isinstance(x, BratEntity)]
    insert_after = t_positions[-1] if t_positions else -1
    lines = [format_entity(e) for e in new] if insert_after < 0 else []
    for k, x in enumerate(doc.items):
        if isinstance(x, BratEntity):
            if id(x) in kept_ids:
                lines.append(format_entity(x))
        elif k not in dropped:
            lines.append(x)
        if k == insert_after:
            lines += [format_entity(e) for e in new]
    return lines, len(dropped)


def write_brat(docs: list[BratDoc], out_dir: str | os.PathLike, tags: list[list[list[str]]] | None = None,
               write_txt: bool = True) -> None:
    """Write ``<doc_id>.txt`` + ``<doc_id>.ann``; with ``tags`` (per doc, per sentence) the predicted entities over
    the input's other lines (:func:`predicted_lines`), logging how many lines were dropped (a count, no text)."""
    out_dir = os.fspath(out_dir)
    n_other = n_dropped = 0
    for i, doc in enumerate(docs):
        if tags is None:
            lines = [format_entity(x) if isinstance(x, BratEntity) else x for x in doc.items]
        else:
            lines, dropped = predicted_lines(doc, tags[i])
            n_other += sum(1 for x in doc.items if not isinstance(x, BratEntity))
            n_dropped += dropped
        body = "\n".join(lines) + ("\n" if doc.ann_trailing_newline and lines else "")
        if write_txt:
            atomic_write_text(os.path.join(out_dir, doc.doc_id + ".txt"), doc.text)
        atomic_write_text(os.path.join(out_dir, doc.doc_id + ".ann"), body)
    if n_dropped:
        logger.info("%d of %d non-entity .ann lines dropped: they refer to entities not predicted", n_dropped, n_other)
