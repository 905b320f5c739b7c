"""Tag schemes (IOB2, BIOES), entity spans, word -> subword label alignment and sliding windows over subwords.

Everything here works on plain Python lists so that the recipe, the notebook and the tests share one
implementation. Word-level tags are strings (``"B-problem"``); model labels are ids from a label list in which
``"O"`` comes first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.errors import DataError

logger = logging.getLogger(__name__)

SCHEMES = ("IOB2", "BIOES")
IGNORE_INDEX = -100  # the label id PyTorch's cross-entropy skips


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


# --------------------------------------------------------------------------------------------------------------
# Tokenizers and alignment
# --------------------------------------------------------------------------------------------------------------
def require_fast_tokenizer(tokenizer) -> None:
    """Alignment needs ``word_ids()``, which only Rust-backed ("fast") tokenizers provide."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"tokenizer {type(tokenizer).__name__} is not a fast (Rust-backed) tokenizer; word -> "
                        "subword label alignment needs word_ids(). Use a model that ships a tokenizer.json.")


def load_tokenizer(name_or_path: str, **kwargs):
    """AutoTokenizer for pre-split words: fast only, and ``add_prefix_space=True`` for byte-level BPE tokenizers
    (RoBERTa, GPT-2, Longformer, BART, DeBERTa v1), which otherwise refuse ``is_split_into_words=True`` or encode
    every word as if glued to the previous one."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    require_fast_tokenizer(tok)
    if needs_prefix_space(tok) and not kwargs.get("add_prefix_space"):
        tok = AutoTokenizer.from_pretrained(name_or_path, **{**kwargs, "add_prefix_space": True})
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
        raise ValueError(f"max_length {max_length} leaves no room for words after the special tokens")
    if not 0 <= stride < room:
        raise ValueError(f"stride must be at least 0 and less than {room} (max_length minus special tokens)")
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
                    bf16: bool = False, decode=None) -> list[list[int]]:
    """Predicted label id at every position of every window, in window order.

    Windows are batched by length (little padding) and the results put back in order. ``decode(logits, scored)``
    turns a batch of logits into label ids, ``scored`` marking the positions that carry labels (default argmax;
    a CRF passes its constrained Viterbi decoding). An own loop instead of ``Trainer.predict`` because the latter
    reorders examples when length-grouped sampling is on. ``bf16=False`` (default) computes in float32, as
    ``pipeline()`` does, so the recipe's predictions are the ones users get from the saved model.
    """
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(windows)), key=lambda k: len(windows[k].input_ids))
    out: list[list[int] | None] = [None] * len(windows)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(windows[k].input_ids) for k in batch)
            ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            scored = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, k in enumerate(batch):
                n = len(windows[k].input_ids)
                ids[row, :n] = torch.tensor(windows[k].input_ids)
                mask[row, :n] = 1
                if windows[k].scored is not None:
                    scored[row, :n] = torch.tensor(windows[k].scored, dtype=torch.bool)
            ids, mask = ids.to(device), mask.to(device)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            pred = decode(logits, scored.to(device)) if decode is not None else logits.argmax(-1)
            for row, k in enumerate(batch):
                out[k] = pred[row, : len(windows[k].input_ids)].tolist()
    finally:
        model.train(was_training)
    return out


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
