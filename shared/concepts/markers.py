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
