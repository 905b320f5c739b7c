"""Entity markers: the concept(s) a classifier decides about, marked in their sentence with added tokens.

    assertion:  Denies [E] chest pain [/E] or fever .
    relation:   He was started on [E1] furosemide [/E1] for [E2] pneumonia [/E2] .

The markers are added to the tokenizer as special tokens (never split, never lowercased) and the model's input
embeddings are resized to hold them (Baldini Soares et al. 2019, "entity start" markers; Zhong & Chen 2021 use the
same scheme for relations). Spans are word indices, both ends inclusive; spans may touch or nest (DDI's
discontinuous mentions share words), and markers at the same position keep a fixed order, so a marked sentence is
the same for every run.
"""

from __future__ import annotations

from typing import Sequence

from shared.core.errors import DataError

ENTITY = ("[E]", "[/E]")
FIRST, SECOND = ("[E1]", "[/E1]"), ("[E2]", "[/E2]")
MARKER_TOKENS = (*ENTITY, *FIRST, *SECOND)


def mark(words: Sequence[str], spans: Sequence[tuple[int, int]], markers: Sequence[tuple[str, str]]) -> list[str]:
    """``words`` with ``markers[i]`` (open, close) around ``spans[i]`` = (first word, last word), inclusive."""
    if len(spans) != len(markers):
        raise ValueError("one marker pair per span")
    opens: dict[int, list[str]] = {}
    closes: dict[int, list[str]] = {}
    for (start, end), (open_, close) in zip(spans, markers):
        if not 0 <= start <= end < len(words):
            raise ValueError(f"span {start}-{end} is outside the sentence ({len(words)} words)")
        opens.setdefault(start, []).append(open_)
        closes.setdefault(end, []).insert(0, close)  # the span opened first closes last
    out: list[str] = []
    for i, word in enumerate(words):
        out += opens.get(i, [])
        out.append(word)
        out += closes.get(i, [])
    return out


def add_marker_tokens(tokenizer, model=None) -> int:
    """Add :data:`MARKER_TOKENS` to ``tokenizer`` as special tokens (and resize ``model``'s input embeddings to the
    new vocabulary); returns how many were new. Idempotent: a folder trained with markers already has them."""
    added = tokenizer.add_special_tokens({"extra_special_tokens": list(MARKER_TOKENS)},
                                         replace_extra_special_tokens=False)
    if model is not None and model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return added


def fit_around(tokenizer, words: list[str], max_length: int) -> tuple[list[str], bool]:
    """``words`` (a marked sentence) cut to at most ``max_length`` tokens; ``(words, cut)``. The words farthest from
    the markers go first, alternately from each end; when the marked span alone is still too long (two concepts far
    apart), the middle of the widest stretch between two markers that lies outside every concept goes next. The
    markers and the concepts' own words always stay."""
    if _length(tokenizer, words) <= max_length:
        return words, False
    marks = [i for i, w in enumerate(words) if w in MARKER_TOKENS]
    counts = [len(ids) for ids in tokenizer(list(words), add_special_tokens=False)["input_ids"]]
    special = tokenizer.num_special_tokens_to_add()
    keep = list(range(len(words)))

    def over() -> bool:  # per-word counts first (cheap), the real tokenization to confirm
        if special + sum(counts[i] for i in keep) > max_length:
            return True
        return _length(tokenizer, [words[i] for i in keep]) > max_length

    while over():
        first, last = keep.index(marks[0]), keep.index(marks[-1])
        before, after = first, len(keep) - last - 1
        if before or after:
            keep.pop(0 if before >= after else -1)
            continue
        inside = [keep.index(m) for m in marks]
        gaps = [(b - a - 1, a, b) for a, b in zip(inside, inside[1:])]
        droppable = [gap for gap in gaps if gap[0] and _droppable(words, keep, gap[1], gap[2], marks)]
        if not droppable:
            raise DataError(f"the marked concepts alone take more than {max_length} tokens; raise --max_seq_length")
        _, a, b = max(droppable)  # the widest stretch outside every concept (nested mentions have some inside)
        keep.pop((a + b) // 2 if (a + b) // 2 > a else a + 1)
    return [words[i] for i in keep], True


def _length(tokenizer, words) -> int:
    return len(tokenizer(" ".join(words), truncation=False)["input_ids"])


def _droppable(words, keep, a, b, marks) -> bool:
    """Whether the stretch between kept positions ``a`` and ``b`` lies outside every marked concept (a concept's own
    words stay)."""
    open_at = set()
    for i in marks:
        if words[i] in (ENTITY[0], FIRST[0], SECOND[0]):
            open_at.add(words[i])
        else:
            open_at.discard("[" + words[i][2:])
        if i == keep[a]:
            return not open_at
    return False
