"""A text classification table read and encoded one way, by the recipe (evaluation and ``--do_predict``) and by the
predictor of ``predict.py``, ``serve.py`` and the ONNX tools: what was trained is what is served.

- :func:`read_text_columns` checks the text (and pair) columns and parses the label column when there is one;
- :class:`NoteEncoder` turns notes (and pairs) into model inputs: every overlapping window of a long note
  (``--long_text chunk``) or its first window (``truncate``, counted), each window remembering its note.
"""

from __future__ import annotations

from typing import Callable, Sequence

from shared.core.errors import DataError
from shared.data.labels import parse_label_column
from shared.data.long_text import LongText, check_windows_fit, encode_windows
from shared.data.tables import has_column, require_columns, require_text


def read_text_columns(table, text_column: str, text_pair_column: str | None, label_column: str,
                      label_separator: str | None, require_labels: bool) -> list | None:
    """Check that ``table`` holds the text (and pair) columns as text, and the label column when ``require_labels``;
    the parsed labels (names, or lists of names for multi-label rows) when it has a label column, else None. Every
    mistake is one line naming the file and row."""
    columns = [text_column] + ([text_pair_column] if text_pair_column else [])
    require_columns(table, columns)
    for column in columns:
        require_text(table, column)
    if require_labels:
        require_columns(table, [label_column])
    if not has_column(table, label_column):
        return None
    return parse_label_column(table[label_column], table.where, label_separator, label_column)


class NoteEncoder:
    """Notes (and pairs) -> windows of token ids, as a folder was trained to read them."""

    def __init__(self, tokenizer, max_length: int, long_text: LongText):
        self.tokenizer, self.max_length, self.long_text = tokenizer, max_length, long_text

    @property
    def chunk(self) -> bool:
        return self.long_text.mode == "chunk"

    def check(self, texts: Sequence[str], pairs: Sequence[str] | None, where: Callable[[int], tuple],
              column: str) -> int:
        """Refuse (one line) what the windows cannot hold, before anything is encoded; how many notes ``truncate``
        cuts (0 in ``chunk`` mode, which reads every window)."""
        texts, pairs = list(texts), None if pairs is None else list(pairs)
        if self.chunk:
            check_windows_fit(self.tokenizer, texts, pairs, self.max_length, self.long_text.stride, where, column)
            return 0
        lengths = self.tokenizer(texts, pairs, truncation=False, verbose=False)["input_ids"]
        return sum(len(ids) > self.max_length for ids in lengths)

    def __call__(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> dict[str, list]:
        """Model inputs of every window, with ``note``: the position in ``texts`` of each window's note."""
        texts, pairs = list(texts), None if pairs is None else list(pairs)
        if self.chunk and self.long_text.aggregation == "first":  # the first window alone makes the prediction
            return self.first_windows(texts, pairs)
        if self.chunk:
            return encode_windows(self.tokenizer, texts, pairs, self.max_length, self.long_text.stride)
        encoded = dict(self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length))
        encoded["note"] = list(range(len(texts)))
        return encoded

    def first_windows(self, texts: list[str], pairs: list[str] | None) -> dict[str, list]:
        """Each note's first window, as :func:`encode_windows` cuts it (pairs: the second text is the one cut)."""
        encoded = dict(self.tokenizer(texts, pairs, truncation="only_second" if pairs is not None else True,
                                      max_length=self.max_length, verbose=False))
        encoded["note"] = list(range(len(texts)))
        return encoded


def require_pair_shape(pairs: Sequence[str] | None, trained_pair_column: str | None, text_column: str) -> None:
    """A model trained on pairs is given pairs, and one trained on single texts is not (one line otherwise)."""
    if (pairs is None) != (trained_pair_column is None):
        raise DataError(f"this model was trained on pairs ({text_column} + {trained_pair_column}): give the second "
                        "text of each pair too" if trained_pair_column is not None else
                        "this model was trained on single texts: give no second text")
