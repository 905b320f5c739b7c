"""Notes longer than the model reads, for text classification: overlapping windows in, one score per note out.

``--long_text chunk`` cuts every note into windows of at most ``max_length`` tokens, consecutive windows sharing
``stride`` tokens (the fast tokenizer's own ``return_overflowing_tokens``, as transformers' question-answering
examples use it); with text pairs the first text is repeated whole in every window and the second is cut. Training
gives every window its note's label; prediction turns the windows' logits back into one row per note (their mean,
their maximum, or the first window's alone), so metrics, thresholds, confidence intervals and prediction files count
each note once. ``auto`` (the default when training with a validation split) scores two readings of the same model
on validation after every epoch, the mean of all windows and the first window alone, and keeps the better one with
its epoch: whether a label is stated at the start of a note or anywhere in it is a property of the data, and the
validation split says which.
``--long_text truncate`` keeps one window per note, cut at ``max_length`` (and counted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from torch.utils.data import Dataset

from shared.core.errors import DataError

MODES = ("truncate", "chunk")
AGGREGATIONS = ("mean", "max", "first")
CHOOSE_ON_VALIDATION = "auto"  # --chunk_aggregation auto
READINGS = ("mean", "first")  # what --chunk_aggregation auto chooses between, on validation (ties keep the mean)
TRAIN_WINDOWS = ("all", "one_per_epoch")
# The defaults, chosen from the Medical Abstracts and Hallmarks of Cancer table in the text recipe's README.
DEFAULT_MODE = "chunk"
DEFAULT_AGGREGATION = CHOOSE_ON_VALIDATION
FALLBACK_AGGREGATION = "mean"  # auto without a validation split to choose on
DEFAULT_TRAIN_WINDOWS = "all"


@dataclass
class LongText:
    """How a run reads examples longer than its windows; saved in the model's config.json as ``long_text``."""

    mode: str
    stride: int
    aggregation: str
    train_windows: str
    # --chunk_aggregation auto: each reading's validation score at the kept epoch, saved so the choice can be checked
    chosen_on_validation: dict | None = None

    def as_config(self) -> dict:
        return {"long_text": asdict(self)}

    def describe(self) -> str:
        """One line for the model card."""
        if self.mode != "chunk":
            return "truncate"
        trained_on = "one window per note per epoch" if self.train_windows == "one_per_epoch" else "every window"
        reading = ("the mean of its windows' logits or its first window's, whichever scores better on validation"
                   if self.undecided else "its first window's logits" if self.aggregation == "first" else
                   f"the {self.aggregation} of its windows' logits")
        if self.chosen_on_validation:
            scores = ", ".join(f"{name} {value:.4f}" for name, value in self.chosen_on_validation.items())
            reading += f", chosen on validation ({scores})"
        return (f"chunk (windows sharing {self.stride} tokens; trained on {trained_on}; a note's prediction is "
                f"{reading})")

    @property
    def undecided(self) -> bool:
        """``--chunk_aggregation auto`` before training has chosen a reading."""
        return self.aggregation == CHOOSE_ON_VALIDATION

    def choose(self, detail: dict | None) -> None:
        """Settle ``auto`` with the kept epoch's choice (``KeepBestEpoch.best_detail``), or the mean without one."""
        if not self.undecided:
            return
        if detail:
            self.aggregation, self.chosen_on_validation = detail["aggregation"], detail["scores"]
        else:
            self.aggregation = FALLBACK_AGGREGATION


def long_text_settings(mode: str | None, stride: int | None, aggregation: str | None, train_windows: str | None,
                       max_length: int, config=None) -> LongText:
    """The options as given; each one not given comes from ``config`` (a fine-tuned folder's, when a run only
    evaluates or predicts with it), else the defaults, so a folder reads notes the way it was trained to."""
    saved = (getattr(config, "long_text", None) if config is not None else None) or {}
    resolved_mode = mode or saved.get("mode") or DEFAULT_MODE
    given = [flag for flag, value in (("--stride", stride), ("--chunk_aggregation", aggregation),
                                      ("--train_windows", train_windows)) if value is not None]
    if resolved_mode == "truncate" and given:
        raise DataError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} only to --long_text chunk")
    if aggregation == CHOOSE_ON_VALIDATION and config is not None:
        raise DataError("--chunk_aggregation auto chooses on the validation split while training; a fine-tuned folder "
                        f"reads notes as it was saved, or give one of {', '.join(AGGREGATIONS)}")
    if resolved_mode == "truncate":  # one window per note: every aggregation gives its logits back
        resolved_aggregation = FALLBACK_AGGREGATION
    else:
        resolved_aggregation = (aggregation or saved.get("aggregation")
                                or (FALLBACK_AGGREGATION if config is not None else DEFAULT_AGGREGATION))
    return LongText(
        mode=resolved_mode,
        stride=stride if stride is not None else saved.get("stride", default_stride(max_length)),
        aggregation=resolved_aggregation,
        train_windows=train_windows or saved.get("train_windows") or DEFAULT_TRAIN_WINDOWS,
    )


def default_stride(max_length: int) -> int:
    """Tokens shared by consecutive windows when ``--stride`` is not given (text classification and NER)."""
    return min(32, max_length // 4)


def check_windows_fit(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int, stride: int,
                      where: Callable[[int], tuple[str, int | None]], text_column: str) -> None:
    """Refuse, before tokenizing, what the tokenizer cannot cut: a stride as long as a window's text, or (pairs) a
    first text that leaves no room in the window for the second one."""
    room = max_length - tokenizer.num_special_tokens_to_add(pair=pairs is not None)
    if pairs is None:
        if not 0 <= stride < room:
            raise DataError(f"--stride must be at least 0 and less than {room} (--max_seq_length {max_length} minus "
                            f"{max_length - room} special tokens), got {stride}")
        return
    if stride < 0:
        raise DataError(f"--stride must be at least 0, got {stride}")
    firsts = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    for index, ids in enumerate(firsts):
        if len(ids) + stride >= room:
            path, line = where(index)
            raise DataError(f"the '{text_column}' text takes {len(ids)} tokens, which leaves no room for its pair in "
                            f"a --max_seq_length {max_length} window with --stride {stride} (--long_text chunk repeats "
                            "it whole in every window): raise --max_seq_length or lower --stride", path=path, line=line)


def encode_windows(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int,
                   stride: int) -> dict[str, list]:
    """Token ids of every window of every note (``chunk``), plus ``note``: the position in ``texts`` of each window's
    note."""
    encoded = tokenizer(texts, pairs, truncation="only_second" if pairs is not None else True, max_length=max_length,
                        stride=stride, return_overflowing_tokens=True, verbose=False)
    notes = encoded.pop("overflow_to_sample_mapping")
    encoded = dict(encoded)
    encoded["note"] = list(notes)
    return encoded


def notes_from_windows(window_logits: np.ndarray, note_of_window: Sequence[int], n_notes: int,
                       how: str = "mean") -> np.ndarray:
    """One row of logits per note from its windows' rows: their mean, (per class) their maximum, or the first
    window's row."""
    if how not in AGGREGATIONS:
        raise DataError(f"unknown --chunk_aggregation '{how}'; choose one of {', '.join(AGGREGATIONS)}")
    window_logits = np.asarray(window_logits, dtype=np.float64)
    notes = np.asarray(note_of_window, dtype=np.int64)
    counts = np.bincount(notes, minlength=n_notes)
    if (counts == 0).any():
        raise ValueError(f"notes without a window: {np.flatnonzero(counts == 0)[:5].tolist()}")
    if how == "first":
        _, first_rows = np.unique(notes, return_index=True)  # a note's windows are in order, its first comes first
        out = window_logits[first_rows]
    elif how == "max":
        out = np.full((n_notes, window_logits.shape[1]), -np.inf)
        np.maximum.at(out, notes, window_logits)
    else:
        out = np.zeros((n_notes, window_logits.shape[1]))
        np.add.at(out, notes, window_logits)
        out /= counts[:, None]
    return out.astype(np.float32)


def rows_by_note(note_of_window: Sequence[int]) -> dict[int, list[int]]:
    """The window rows of every note, in order."""
    rows_of: dict[int, list[int]] = {}
    for row, note in enumerate(note_of_window):
        rows_of.setdefault(int(note), []).append(row)
    return rows_of


def windows_of_notes(note_of_window: Sequence[int], notes: Sequence[int]) -> list[int]:
    """Window rows for a list of notes (repeats kept, e.g. oversampled notes), each note's windows in order."""
    rows_of = rows_by_note(note_of_window)
    return [row for note in notes for row in rows_of[int(note)]]


class WindowPerEpoch(Dataset):
    """A training set of one window per note per epoch (``--train_windows one_per_epoch``): training costs what one
    window per note costs, and over as many epochs as a note has windows every one of them is trained once.

    Note ``i`` starts at a window drawn from ``seed`` and moves to its next window every epoch (wrapping around).
    ``set_epoch`` is called by the recipes' Trainer callback (``shared.core.resume.EpochSeededSampling``), so a run
    resumed mid-epoch trains on the same windows as the uninterrupted run. ``notes`` may repeat a note (oversampling).
    """

    def __init__(self, windows, note_of_window: Sequence[int], notes: Sequence[int], seed: int = 0):
        rows_of = rows_by_note(note_of_window)
        self.windows = windows
        self.rows = [rows_of[int(note)] for note in notes]
        rng = np.random.default_rng(seed)
        self.start = [int(rng.integers(len(rows))) for rows in self.rows]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        rows = self.rows[index]
        return self.windows[rows[(self.start[index] + self.epoch) % len(rows)]]
