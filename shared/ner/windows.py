"""Word -> subword label alignment, sliding windows over long examples, and predictions back to words.

A long note is cut into overlapping windows of at most ``max_length`` subwords (nothing truncated); each word is
predicted from the window in which it has the most context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.core.args import ModelArguments
from shared.core.errors import DataError
from shared.data.labels import IGNORE_INDEX
from shared.evaluation.forward import predict_in_order
from shared.formats.tags import spans_from_tags
from shared.training.models import load_pretrained, require_fast


# --------------------------------------------------------------------------------------------------------------
# Tokenizers and alignment
# --------------------------------------------------------------------------------------------------------------
def require_fast_tokenizer(tokenizer) -> None:
    """Alignment needs ``word_ids()``, which only Rust-backed ("fast") tokenizers provide."""
    require_fast(tokenizer, "word -> subword label alignment needs word_ids()")


def load_tokenizer(model, **kwargs):
    """The tokenizer of ``model`` (a ``ModelArguments`` or a folder / Hub id) for pre-split words, loaded safely
    (:func:`shared.training.models.load_pretrained`): fast only, and ``add_prefix_space=True`` for byte-level BPE
    tokenizers (RoBERTa, GPT-2, Longformer, BART, DeBERTa v1), which otherwise refuse ``is_split_into_words=True`` or
    encode every word as if glued to the previous one."""
    from transformers import AutoTokenizer


    model_args = model if isinstance(model, ModelArguments) else ModelArguments(model_name_or_path=str(model))
    tok = load_pretrained(AutoTokenizer, model_args, **kwargs)
    require_fast_tokenizer(tok)
    if needs_prefix_space(tok) and not kwargs.get("add_prefix_space"):
        tok = load_pretrained(AutoTokenizer, model_args, **{**kwargs, "add_prefix_space": True})
    return tok


def needs_prefix_space(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    text = repr(pre) if pre is not None else ""
    return "ByteLevel" in text and not getattr(tokenizer, "add_prefix_space", False)


def continuation_map(labels: list[str]) -> list[int]:
    """For label id ``i``, the id a non-first subword of that word gets with the ``all`` strategy under IOB2:
    ``B-X`` -> ``I-X`` (a word's second subword does not begin an entity), everything else unchanged."""
    index = {lab: i for i, lab in enumerate(labels)}
    return [index.get("I-" + lab[2:], i) if lab.startswith("B-") else i for i, lab in enumerate(labels)]


def subword_maps(labels: list[str]) -> tuple[list[int], list[int], list[int]]:
    """(first, inner, last): the label id the first, a middle and the last subword of a word split into several
    subwords get with the ``all`` strategy, so that the subword sequence is itself valid IOB2 / BIOES.

    IOB2: ``B-X`` -> ``B-X, I-X, ..., I-X``; ``I-X`` stays ``I-X``. BIOES: ``S-X`` -> ``B-X, I-X, ..., E-X``,
    ``E-X`` -> ``I-X, ..., E-X``, ``B-X`` -> ``B-X, I-X, ...``. A word of one subword keeps its own label, and the
    first subword always reads back (through :func:`from_scheme`) to the word's IOB2 tag.
    """
    index = {lab: i for i, lab in enumerate(labels)}

    def to(prefix, lab, i):
        return index.get(f"{prefix}-{lab[2:]}", i)

    first, inner, last = [], [], []
    for i, lab in enumerate(labels):
        p = lab[:2]
        first.append(to("I", lab, i) if p == "E-" else to("B", lab, i) if p == "S-" else i)
        inner.append(to("I", lab, i) if p in ("B-", "E-", "S-") else i)
        last.append(to("E", lab, i) if p in ("S-", "E-") else to("I", lab, i) if p == "B-" else i)
    return first, inner, last


def align_labels(word_ids: list[int | None], word_labels: list[int], strategy: str = "first",
                 b_to_i=None) -> list[int]:
    """Subword labels from word labels. ``first``: the first subword of each word gets the word's label, the
    others -100. ``all``: every subword is labelled; ``b_to_i`` says how: a list (:func:`continuation_map`, for
    every non-first subword) or a ``(first, inner, last)`` triple (:func:`subword_maps`, needed for BIOES).
    Special tokens (word id ``None``) always get -100."""
    if strategy not in ("first", "all"):
        raise ValueError(f"unknown label alignment strategy {strategy!r} (first or all)")
    if isinstance(b_to_i, tuple):
        first_map, inner_map, last_map = b_to_i
    else:
        first_map, inner_map, last_map = None, b_to_i, b_to_i
    out = []
    n = len(word_ids)
    for k, wid in enumerate(word_ids):
        if wid is None:
            out.append(IGNORE_INDEX)
            continue
        is_first = k == 0 or word_ids[k - 1] != wid
        is_last = k + 1 == n or word_ids[k + 1] != wid
        lab = word_labels[wid]
        if is_first:
            out.append(first_map[lab] if first_map is not None and not is_last else lab)
        elif strategy == "all":
            table = last_map if is_last else inner_map
            out.append(table[lab] if table is not None else lab)
        else:
            out.append(IGNORE_INDEX)
    return out


def scored_positions(word_ids: list[int | None], strategy: str) -> list[bool]:
    """Positions that carry a label under ``strategy`` (``all``: every subword of a word; ``first``: first
    subwords only). A CRF runs over exactly these positions, in training and in decoding."""
    return [wid is not None and (strategy == "all" or k == 0 or word_ids[k - 1] != wid)
            for k, wid in enumerate(word_ids)]


def simple_aggregation_spans(subword_labels: list[str]) -> set[tuple[str, int, int]]:
    """The entities ``pipeline("token-classification", aggregation_strategy="simple")`` builds from per-subword
    labels (special tokens removed), as ``(type, first_position, last_position)``; a copy of transformers'
    ``TokenClassificationPipeline.group_entities`` grouping rule, so agreement can be measured without the pipeline."""
    def get_tag(name):
        if name.startswith(("B-", "I-")):
            return name[0], name[2:]
        return "I", name

    groups, current = [], []
    for pos, lab in enumerate(subword_labels):
        if current:
            bi, tag = get_tag(lab)
            if tag == get_tag(subword_labels[current[-1]])[1] and bi != "B":
                current.append(pos)
                continue
            groups.append(current)
        current = [pos]
    if current:
        groups.append(current)
    out = set()
    for g in groups:
        etype = subword_labels[g[0]].split("-", 1)[-1]
        if etype != "O":
            out.add((etype, g[0], g[-1]))
    return out


# --------------------------------------------------------------------------------------------------------------
# Sliding windows
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Window:
    """One model input cut from an example: ``input_ids`` with special tokens, the word id of each position,
    and the positions (first subwords) whose predictions this window supplies for its example."""

    example: int
    input_ids: list[int]
    word_ids: list[int | None]
    owned: list[int]
    labels: list[int] | None = None
    scored: list[bool] | None = None  # positions labelled under the alignment strategy (a CRF decodes these)


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special token ids a single sequence gets before and after its words (``[CLS]`` / ``[SEP]``)."""
    enc = tokenizer(["x"], is_split_into_words=True, add_special_tokens=True)
    wids = enc.word_ids()
    first = wids.index(0)
    last = len(wids) - 1 - wids[::-1].index(0)
    return enc["input_ids"][:first], enc["input_ids"][last + 1:]


def make_windows(tokenizer, examples: list[list[str]], max_length: int, stride: int,
                 word_labels: list[list[int]] | None = None, strategy: str = "first",
                 b_to_i: list[int] | None = None) -> tuple[list[Window], list[list[int]]]:
    """Cut every example (a list of words) into windows of at most ``max_length`` subword tokens.

    Consecutive windows share ``stride`` subwords. Each word is predicted from the window in which its first
    subword has the most context (the larger of the two distances to the window's ends being the smaller one
    maximised), so words near a cut are predicted where they see text on both sides. Nothing is truncated.

    Returns the windows and, per example, the indices of words that the tokenizer turned into no subword at all
    (e.g. lone control characters); the caller still gives them a prediction ("O").
    """
    require_fast_tokenizer(tokenizer)
    prefix, suffix = special_frame(tokenizer)
    room = max_length - len(prefix) - len(suffix)
    if room <= 0:
        raise DataError(f"--max_seq_length {max_length} leaves no room for words after the special tokens")
    if not 0 <= stride < room:
        raise DataError(f"--stride must be at least 0 and less than {room} (--max_seq_length {max_length} minus "
                        "special tokens)")
    step = room - stride

    non_empty = [i for i, words in enumerate(examples) if words]
    enc = tokenizer([examples[i] for i in non_empty], is_split_into_words=True, add_special_tokens=False, verbose=False) \
        if non_empty else None
    windows: list[Window] = []
    unmapped: list[list[int]] = [[] for _ in examples]
    pad_wids: list[int | None] = [None] * len(prefix)
    for j, ex in enumerate(non_empty):
        ids, wids = enc["input_ids"][j], enc.word_ids(j)
        labels = None
        if word_labels is not None:
            labels = align_labels(wids, word_labels[ex], strategy, b_to_i)
        scored = scored_positions(wids, strategy)
        starts = list(range(0, max(len(ids) - stride, 1), step)) if len(ids) > room else [0]
        if starts[-1] + room < len(ids):  # the last step may stop short of the end
            starts.append(len(ids) - room)
        bounds = [(s, min(s + room, len(ids))) for s in starts]
        # Best window for every first subword: the one where it sits farthest from both edges.
        owned: list[list[int]] = [[] for _ in bounds]
        seen_words = set()
        for pos, wid in enumerate(wids):
            if wid is None or wid in seen_words:
                continue
            seen_words.add(wid)
            best = max(range(len(bounds)), key=lambda w: (min(pos - bounds[w][0], bounds[w][1] - 1 - pos), -w))
            owned[best].append(pos)
        unmapped[ex] = [w for w in range(len(examples[ex])) if w not in seen_words]
        for w, (s, e) in enumerate(bounds):
            windows.append(Window(
                example=ex,
                input_ids=prefix + ids[s:e] + suffix,
                word_ids=pad_wids + list(wids[s:e]) + [None] * len(suffix),
                owned=[len(prefix) + p - s for p in owned[w]],
                labels=None if labels is None else
                [IGNORE_INDEX] * len(prefix) + labels[s:e] + [IGNORE_INDEX] * len(suffix),
                scored=[False] * len(prefix) + scored[s:e] + [False] * len(suffix),
            ))
    for i, words in enumerate(examples):
        if not words:
            # An empty sentence still becomes one (specials-only) window so indices stay simple; it owns nothing.
            n_special = len(prefix) + len(suffix)
            windows.append(Window(i, prefix + suffix, [None] * n_special, [],
                                  None if word_labels is None else [IGNORE_INDEX] * n_special, [False] * n_special))
    windows.sort(key=lambda w: w.example)  # stable: windows of one example stay in order
    return windows, unmapped


def words_from_windows(windows: list[Window], window_preds: list[list[int]], n_words: list[int],
                       default: int = 0) -> list[list[int]]:
    """Word-level label ids for every example from per-window, per-position predicted ids.

    ``window_preds[k][p]`` is the prediction at position ``p`` of window ``k``. Every word gets a label: words
    with no subword get ``default`` (the id of ``"O"``).
    """
    out = [[default] * n for n in n_words]
    for win, preds in zip(windows, window_preds):
        for pos in win.owned:
            out[win.example][win.word_ids[pos]] = int(preds[pos])
    return out


def predict_windows(model, windows: list[Window], pad_token_id: int, batch_size: int = 64,
                    decode=None, progress: bool = False) -> list:
    """Predicted label id at every position of every window, in window order (an int32 array per window, padded to
    its batch's width).

    Through :func:`shared.evaluation.forward.predict_in_order` (float32, shortest windows first, results back in order).
    ``decode(logits, scored)`` turns a batch of logits into label ids, ``scored`` marking the positions that carry
    labels (default argmax; a CRF passes its constrained Viterbi decoding).
    """
    import torch


    def to_ids(logits, indices):  # label ids as int32: the only thing kept per batch (not N x L x C logits)
        if decode is None:
            return logits.argmax(-1).to(torch.int32)
        scored = torch.zeros(logits.shape[:2], dtype=torch.bool)
        for row, k in enumerate(indices):
            if windows[k].scored is not None:
                scored[row, : len(windows[k].scored)] = torch.tensor(windows[k].scored, dtype=torch.bool)
        return decode(logits, scored.to(logits.device)).to(torch.int32)

    # one int32 row per window, padded to its batch's width (positions past the window's length are never read)
    return predict_in_order(model, windows, _collate(pad_token_id), batch_size, [len(w.input_ids) for w in windows],
                            to_ids, progress)


def word_probabilities(model, windows: list[Window], pad_token_id: int, n_words: list[int],
                       batch_size: int = 64) -> list[np.ndarray]:
    """Per example, a (words x labels) array: the softmax of each word's first-subword logits (a CRF model: of its
    emission scores, not the CRF's marginals), read from the window that owns the word. Words with no subword get
    a uniform row."""
    import torch


    def softmax(logits, indices):
        return torch.softmax(logits, dim=-1)

    probs = predict_in_order(model, windows, _collate(pad_token_id), batch_size, [len(w.input_ids) for w in windows],
                             softmax)
    classes = probs[0].shape[-1] if probs else 1
    out = [np.full((n, classes), 1.0 / classes, dtype=np.float32) for n in n_words]
    for win, p in zip(windows, probs):
        for pos in win.owned:
            out[win.example][win.word_ids[pos]] = p[pos]
    return out


def _collate(pad_token_id: int):
    """A collate function for windows: input ids padded with ``pad_token_id`` and the attention mask."""
    import torch

    def collate(batch: list[Window]):
        width = max(len(w.input_ids) for w in batch)
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, w in enumerate(batch):
            ids[row, : len(w.input_ids)] = torch.tensor(w.input_ids)
            mask[row, : len(w.input_ids)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    return collate


def pipeline_agreement(windows: list[Window], window_preds: list[list[int]], labels: list[str],
                       word_tags: list[list[str]]) -> tuple[int, int]:
    """On how many examples ``pipeline(..., aggregation_strategy="simple")`` on the same model would give the
    entities in ``word_tags`` (the recipe's IOB2 output), from the same per-subword predictions.

    The pipeline groups every subword's own prediction, the recipe reads each word's first subword: they differ
    exactly when a word's subwords disagree (an entity would start or end inside a word). Only examples that fit
    in one window are checked (the pipeline reads longer ones in its own chunks). Returns ``(agree, checked)``.
    """
    per_example: dict[int, list[int]] = {}
    for k, win in enumerate(windows):
        per_example.setdefault(win.example, []).append(k)
    agree = checked = 0
    for ex, ks in per_example.items():
        if len(ks) != 1:
            continue
        win, pred = windows[ks[0]], window_preds[ks[0]]
        pos = [p for p, wid in enumerate(win.word_ids) if wid is not None]
        theirs = simple_aggregation_spans([labels[pred[p]] for p in pos])
        first_pos: dict[int, int] = {}
        last_pos: dict[int, int] = {}
        for j, p in enumerate(pos):
            first_pos.setdefault(win.word_ids[p], j)
            last_pos[win.word_ids[p]] = j
        ours = {(etype, first_pos.get(s, -1), last_pos.get(e - 1, -1))
                for etype, s, e in spans_from_tags(word_tags[ex])}
        checked += 1
        agree += ours == theirs
    return agree, checked
