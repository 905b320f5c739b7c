"""CoNLL / BIO TSV reader and writer: ``token<TAB>tag`` lines, a blank line between sentences.

The file is kept line by line, so writing it back with the original tags gives the same bytes, and writing it with
predicted tags changes nothing but the tag column (official scorers and diff tools can then compare the two files).

Columns are split on a tab when the line has one, otherwise on single spaces (the classic CoNLL-2003 layout).
``-DOCSTART-`` lines start a new document and are kept as they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from shared.core.errors import DataError
from shared.core.files import atomic_write_text
from shared.formats.textfile import read_text


@dataclass
class ConllSentence:
    """One sentence: the indices (0-based) of its lines in ``ConllFile.lines``, its tokens and tags."""

    line_indices: list[int]
    tokens: list[str]
    tags: list[str]
    doc_index: int

    @property
    def first_line(self) -> int:
        """1-based line number of the sentence's first token, for error messages."""
        return self.line_indices[0] + 1


@dataclass
class ConllFile:
    path: str
    lines: list[str]  # without their newline characters
    trailing_newline: bool
    token_column: int
    tag_column: int
    sentences: list[ConllSentence] = field(default_factory=list)
    n_columns: int = 0  # columns of the token lines (1 = tokens only, no tags)


def _split(line: str) -> tuple[list[str], str]:
    sep = "\t" if "\t" in line else " "
    return line.split(sep), sep


def read_conll(path: str | os.PathLike, token_column: int = 0, tag_column: int = -1,
               require_tags: bool = True) -> ConllFile:
    """Read a CoNLL/BIO file. Raises :class:`DataError` naming the file and line of the first bad line.

    ``tag_column`` may be negative (counted from the end). ``require_tags=False`` accepts one-column files
    (tokens only, for prediction); their tags are ``"O"``.
    """
    path = os.fspath(path)
    content = read_text(path)  # a BOM dropped, CRLF read as LF (a CR would end up inside every tag)
    trailing_newline = content.endswith("\n")
    lines = content.split("\n")
    if trailing_newline:
        lines.pop()
    data = ConllFile(path, lines, trailing_newline, token_column, tag_column)

    doc_index = 0
    current: list[int] = []
    n_columns = None

    def close_sentence():
        if current:
            rows = [_split(lines[i])[0] for i in current]
            tokens = [r[token_column] for r in rows]
            # Token-only files (allowed with require_tags=False) are predicted from scratch: start them all "O".
            tags = [r[tag_column] for r in rows] if len(rows[0]) > 1 else ["O"] * len(rows)
            data.sentences.append(ConllSentence(list(current), tokens, tags, doc_index))
            current.clear()

    for i, line in enumerate(lines):
        if not line.strip():
            close_sentence()
            continue
        if line.startswith("-DOCSTART-"):
            close_sentence()
            if data.sentences:
                doc_index += 1
            continue
        cols, _ = _split(line)
        if n_columns is None:
            n_columns = len(cols)
            if require_tags and n_columns < 2:
                raise DataError("expected 'token<TAB>tag' but found a single column", path, i + 1)
            for name, col in (("token", token_column), ("tag", tag_column)):
                if n_columns > 1 and not -n_columns <= col < n_columns:
                    raise DataError(f"{name} column {col} does not exist (the line has {n_columns} columns)",
                                    path, i + 1)
        elif len(cols) != n_columns:
            raise DataError(f"expected {n_columns} columns like the first token line, found {len(cols)}", path, i + 1)
        if any(c == "" for c in cols):
            raise DataError("empty column (two separators in a row or a trailing separator)", path, i + 1)
        current.append(i)
    close_sentence()
    data.n_columns = n_columns or 0
    return data


def write_conll(data: ConllFile, path: str | os.PathLike, tags: list[list[str]] | None = None) -> None:
    """Write ``data`` to ``path``; with ``tags`` (one list per sentence) the tag column is replaced by them.

    One-column (token-only) input gets a tag column appended. Written atomically (temporary file + rename).
    """
    lines = list(data.lines)
    if tags is not None:
        if len(tags) != len(data.sentences):
            raise ValueError(f"{len(tags)} tag sequences for {len(data.sentences)} sentences")
        for sent, sent_tags in zip(data.sentences, tags):
            if len(sent_tags) != len(sent.line_indices):
                raise ValueError(f"sentence at line {sent.first_line}: {len(sent_tags)} tags for "
                                 f"{len(sent.line_indices)} tokens")
            for i, tag in zip(sent.line_indices, sent_tags):
                cols, sep = _split(lines[i])
                if len(cols) == 1:
                    cols.append(tag)
                    sep = "\t"
                else:
                    cols[data.tag_column] = tag
                lines[i] = sep.join(cols)
    text = "\n".join(lines) + ("\n" if data.trailing_newline else "")
    atomic_write_text(path, text)
