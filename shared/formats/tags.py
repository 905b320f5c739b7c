"""Tag schemes (IOB2, BIOES), entity spans, tag validation and the model's label list.

Everything here works on plain Python lists so that the recipe, the notebook and the tests share one
implementation. Word-level tags are strings (``"B-problem"``); model labels are ids from a label list in which
``"O"`` comes first. Subword alignment and sliding windows are in :mod:`shared.ner.windows`.
"""

from __future__ import annotations

from shared.core.errors import DataError

SCHEMES = ("IOB2", "BIOES")


# --------------------------------------------------------------------------------------------------------------
# Tags and spans
# --------------------------------------------------------------------------------------------------------------
def split_tag(tag: str) -> tuple[str, str | None]:
    """``"B-problem"`` -> ``("B", "problem")``; ``"O"`` -> ``("O", None)``. Raises ValueError on anything else."""
    if tag == "O":
        return "O", None
    prefix, sep, etype = tag.partition("-")
    if not sep or prefix not in ("B", "I", "E", "S") or not etype:
        raise ValueError(f"tag {tag!r} is not O or <B|I|E|S>-<type>")
    return prefix, etype


def iob2_errors(tags: list[str]) -> list[int]:
    """Positions of tags that make the sequence invalid IOB2: ``I-X`` not preceded by ``B-X`` or ``I-X``."""
    bad, prev = [], "O"
    for i, tag in enumerate(tags):
        prefix, etype = split_tag(tag)
        if prefix in ("E", "S"):
            bad.append(i)
        elif prefix == "I" and prev not in (f"B-{etype}", f"I-{etype}"):
            bad.append(i)
        prev = tag
    return bad


def repair_iob2(tags: list[str]) -> tuple[list[str], int]:
    """Make a sequence valid IOB2 the way seqeval's lenient mode reads it: a stray ``I-X`` starts an entity
    (becomes ``B-X``). Returns the repaired tags and how many were changed."""
    out, n = list(tags), 0
    for i in iob2_errors(tags):
        out[i] = "B-" + split_tag(tags[i])[1]
        n += 1
    return out, n


def iob2_to_bioes(tags: list[str]) -> list[str]:
    """Valid IOB2 -> BIOES (single-token entities become ``S-``, last tokens ``E-``)."""
    out = []
    for i, tag in enumerate(tags):
        prefix, etype = split_tag(tag)
        continues = i + 1 < len(tags) and tags[i + 1] == f"I-{etype}"
        if prefix == "B":
            out.append(("B-" if continues else "S-") + etype)
        elif prefix == "I":
            out.append(("I-" if continues else "E-") + etype)
        else:
            out.append(tag)
    return out


def bioes_to_iob2(tags: list[str]) -> list[str]:
    """BIOES -> IOB2 (``S-`` -> ``B-``, ``E-`` -> ``I-``)."""
    out = []
    for tag in tags:
        prefix, etype = split_tag(tag)
        out.append({"S": "B-", "E": "I-"}.get(prefix, prefix + "-") + etype if etype else tag)
    return out


def detect_scheme(sequences: list[list[str]]) -> str:
    """``"BIOES"`` when any ``S-``/``E-`` tag occurs, else ``"IOB2"``."""
    for tags in sequences:
        for tag in tags:
            if tag[:2] in ("S-", "E-"):
                return "BIOES"
    return "IOB2"


def spans_from_tags(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities ``(type, start, end_exclusive)`` of an IOB2 (or BIOES) sequence; a stray ``I-X`` starts one."""
    spans, start, etype = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, t = split_tag(tag)
        if start is not None and (prefix in ("O", "B", "S") or t != etype):
            spans.append((etype, start, i))
            start = None
        if prefix in ("B", "S") or (prefix in ("I", "E") and start is None):
            start, etype = i, t
        if prefix in ("E", "S") and start is not None:
            spans.append((etype, start, i + 1))
            start = None
    return spans


def tags_from_spans(n: int, spans: list[tuple[str, int, int]]) -> list[str]:
    tags = ["O"] * n
    for etype, s, e in spans:
        tags[s] = f"B-{etype}"
        for k in range(s + 1, e):
            tags[k] = f"I-{etype}"
    return tags


def validate_tags(sequences: list[list[str]], where: list[tuple[str, int | None]], repair: bool = False
                  ) -> tuple[list[list[str]], int]:
    """Check word-level tag sequences and return them in IOB2, with the number of repaired tags.

    ``where[i]`` is the (file, line) of sequence ``i`` for the error message. BIOES input is accepted (and
    converted). An invalid IOB2 sequence is an error unless ``repair`` is set; then it is repaired and counted.
    """
    sequences = [[tag.strip() for tag in tags] for tags in sequences]  # "B-problem " is B-problem, not a new type
    scheme = detect_scheme(sequences)
    out, n_repaired = [], 0
    for tags, (path, line) in zip(sequences, where):
        try:
            if scheme == "BIOES":
                tags = bioes_to_iob2(tags)
            bad = iob2_errors(tags)
        except ValueError as e:
            raise DataError(str(e), path, line) from None
        if bad and not repair:
            tag_line = None if line is None else line + bad[0] if _line_per_token(path) else line
            raise DataError(f"invalid IOB2: tag {tags[bad[0]]!r} at token {bad[0]} does not continue an entity of "
                            "its type (use --repair_tags to turn it into B-)", path, tag_line)
        if bad:
            tags, n = repair_iob2(tags)
            n_repaired += n
        out.append(tags)
    return out, n_repaired


def _line_per_token(path: str | None) -> bool:
    # In CoNLL files each token has its own line, so the error can point at the token's line.
    return bool(path) and not path.endswith((".con", ".ann", ".json", ".jsonl", ".txt"))


def label_list(sequences: list[list[str]], scheme: str = "IOB2") -> list[str]:
    """``["O", "B-a", "I-a", ("E-a", "S-a",) "B-b", ...]`` for every entity type seen (IOB2 input), sorted."""
    types = sorted({split_tag(t)[1] for tags in sequences for t in tags if t != "O"})
    prefixes = ("B", "I") if scheme == "IOB2" else ("B", "I", "E", "S")
    return ["O"] + [f"{p}-{t}" for t in types for p in prefixes]


def to_scheme(tags: list[str], scheme: str) -> list[str]:
    """IOB2 tags -> the model's scheme."""
    return iob2_to_bioes(tags) if scheme == "BIOES" else list(tags)


def from_scheme(tags: list[str], scheme: str) -> list[str]:
    """Model-scheme tags -> valid IOB2 (predictions may be inconsistent; spans are re-read and re-written)."""
    if scheme == "BIOES":
        tags = bioes_to_iob2(tags)
    return tags_from_spans(len(tags), spans_from_tags(tags))
