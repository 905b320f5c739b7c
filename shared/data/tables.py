"""Tabular data: CSV/TSV, JSON / JSON lines, parquet, a saved ``datasets`` folder, or a Hub dataset.

Every reader returns a :class:`Table`: a :class:`datasets.Dataset` plus where each row came from, so that an error
names the line of the file a row starts on, also when a CSV cell spans several lines (clinical notes do) or a JSON
lines file has blank lines. Readers check what recipes otherwise discover mid-training: the file is UTF-8 (a BOM
is fine; a UTF-16 BOM is read as UTF-16; ``--encoding`` names another), it has rows, every CSV record has as many fields as the header, the requested columns exist. Errors are
one-line :class:`DataError` naming the file and line.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import os
from dataclasses import dataclass, field

import datasets

from shared.core.errors import DataError

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
HUB_SPLIT_NAMES = {"train": ["train"], "validation": ["validation", "valid", "dev"], "test": ["test"]}


@dataclass
class Table:
    """Rows of one split: ``dataset`` (columns as a :class:`datasets.Dataset`), ``source`` (file or ``hub[split]``)
    and ``lines``, the 1-based line each row starts on in ``source`` (None where a row has no line, e.g. parquet)."""

    dataset: datasets.Dataset
    source: str
    lines: list[int] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.dataset[key]

    def __getattr__(self, name):  # column_names, features, to_parquet, ... come from the dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def where(self, index: int) -> tuple[str, int | None]:
        """``(path, line)`` of row ``index`` for a :class:`DataError`; rows without a line are named by number."""
        if self.lines is not None:
            return self.source, self.lines[index]
        return f"{self.source} (row {index + 1})", None

    def select(self, indices) -> "Table":
        indices = list(indices)
        lines = None if self.lines is None else [self.lines[i] for i in indices]
        return Table(self.dataset.select(indices), self.source, lines)


# ------------------------------------------------------------------------------------------------ arguments
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


@dataclass
class TableFormatArguments:
    """How to read CSV/TSV/JSON input files when they are not UTF-8 with ',' (.csv) or tab (.tsv) between fields:
    the data recipes' and predict.py's (they describe the files given, so a model folder never carries them)."""

    delimiter: str | None = field(
        default=None,
        metadata={"help": "Field separator of .csv/.tsv files: one character, or tab, comma, semicolon, pipe "
                          "(default: ',' for .csv, tab for .tsv). Excel in many European locales writes ';'."},
    )
    encoding: str | None = field(
        default=None,
        metadata={"help": "Text encoding of .csv/.tsv/.json/.jsonl files, a Python codec name such as cp1252 (Excel on "
                          "Windows) or latin-1 (default: UTF-8; a UTF-8 or UTF-16 byte-order mark is read either "
                          "way)."},
    )

    def __post_init__(self):
        self._check_table_format()
        parent = getattr(super(), "__post_init__", None)  # the recipe's DataArguments, when mixed into it
        if parent is not None:
            parent()

    def _check_table_format(self):
        if self.delimiter is not None:
            self.delimiter = DELIMITER_NAMES.get(self.delimiter.lower(), self.delimiter)
            if len(self.delimiter) != 1 or self.delimiter in "\"\r\n":
                raise DataError(f"--delimiter must be one character (or tab, comma, semicolon, pipe), got "
                                f"{self.delimiter!r}")
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise DataError(f"--encoding: unknown encoding {self.encoding!r} (e.g. utf-8, cp1252, latin-1, "
                                "utf-16)") from None


@dataclass
class LabelledTableArguments(TableFormatArguments):
    """:class:`TableFormatArguments` of a recipe's training tables, and what to do with rows whose label is empty."""

    drop_unlabelled_rows: bool = field(
        default=False,
        metadata={"help": "Drop rows whose label cell is empty (logged with their count) instead of stopping at the "
                          "first one. An empty JSON list ([]) of a multi-label row is a label (no class), not empty."},
    )


# ------------------------------------------------------------------------------------------------ readers
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _decode(path: str, encoding: str | None) -> str:
    """The file's text in ``encoding`` (default UTF-8). A byte-order mark says what the file is, whatever
    ``encoding``: UTF-16 (Excel's "Unicode text") or UTF-8 (Excel's "CSV UTF-8"), and it is not part of the text. A
    byte the encoding cannot read is one line naming the file, line and byte."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(UTF16_BOMS):
        encoding = "utf-16"
    elif raw.startswith(codecs.BOM_UTF8) or encoding is None:
        encoding = "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        before = raw[: e.start]  # lines may end in LF, CRLF or a lone CR
        line = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1
        line_start = max(before.rfind(b"\n"), before.rfind(b"\r")) + 1
        if encoding == "utf-8-sig":
            raise DataError(f"not valid UTF-8 (byte {e.start - line_start} of the line); re-save the file as UTF-8 "
                            "or pass its --encoding (e.g. cp1252 for Excel on Windows)", path=path, line=line) from None
        raise DataError(f"not valid {encoding} (byte {e.start - line_start} of the line); check --encoding",
                        path=path, line=line) from None


def read_table(path: str, delimiter: str | None = None, encoding: str | None = None) -> Table:
    """Read one local file or a ``save_to_disk`` folder. ``delimiter`` (CSV/TSV) and ``encoding`` (text files) as
    :class:`TableFormatArguments` says; None: from the suffix, and UTF-8."""
    if os.path.isdir(path):
        try:
            loaded = datasets.load_from_disk(path)
        except (FileNotFoundError, ValueError) as e:
            raise DataError(f"not a saved datasets folder ({str(e).splitlines()[0]})", path=path) from None
        if isinstance(loaded, datasets.DatasetDict):
            raise DataError("is a DatasetDict; pass one split's folder (e.g. data/train)", path=path)
        return Table(loaded, path)
    if not os.path.isfile(path):
        raise DataError("file does not exist", path=path)
    if not path.endswith(TABLE_SUFFIXES):
        raise DataError(f"unsupported file type; use one of {', '.join(TABLE_SUFFIXES)} or a saved datasets folder", path=path)
    if path.endswith(".parquet"):
        import pandas as pd  # in memory: datasets' own parquet reader writes a cache file of the data

        dataset, lines = datasets.Dataset.from_pandas(pd.read_parquet(path), preserve_index=False), None
    else:
        text = _decode(path, encoding).removeprefix("\ufeff")  # a BOM (Excel) is not part of a column name
        if not text.strip():
            raise DataError("file is empty", path=path)
        if path.endswith((".csv", ".tsv")):
            columns, lines = _read_csv(path, text, delimiter or ("\t" if path.endswith(".tsv") else ","))
        elif path.endswith(".jsonl"):
            columns, lines = _read_json_lines(path, text)
        else:
            columns, lines = _read_json(path, text)
        dataset = _dataset(columns, path)
    if len(dataset) == 0:
        raise DataError("file has no rows", path=path)
    return Table(dataset, path, lines)


def _dataset(columns: dict[str, list], path: str) -> datasets.Dataset:
    try:
        return datasets.Dataset.from_dict(columns)
    except (TypeError, ValueError) as e:  # pyarrow cannot give a column one type (e.g. a number and a list)
        raise DataError(f"a column mixes kinds of values ({str(e).splitlines()[0][:120]})", path=path) from None


def _read_csv(path: str, text: str, separator: str) -> tuple[dict[str, list], list[int]]:
    """Columns of a CSV/TSV (every cell a string, as written) and the line each record starts on.

    Lines may end in LF, CRLF or a lone CR (old Excel on macOS). Trailing columns without a name (``text,label,``
    from Excel) are dropped when every row leaves them empty."""
    if "\r" in text.replace("\r\n", ""):  # lone CRs: read as line ends, as Python's universal newlines do
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    reader = csv.reader(io.StringIO(text), delimiter=separator, strict=True)
    header, rows, lines, previous, unnamed = None, [], [], 0, 0
    try:
        for record in reader:
            start, previous = previous + 1, reader.line_num  # a quoted cell may span several lines
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if header is None:
                header = [name.strip() for name in record]
                while len(header) > 1 and not header[-1]:
                    header.pop()
                    unnamed += 1
                _check_header(path, header, start, separator)
                continue
            if len(header) < len(record) <= len(header) + unnamed:
                extra = next((i for i in range(len(header), len(record)) if record[i].strip()), None)
                if extra is not None:
                    raise DataError(f"field {extra + 1} has a value but its column has no name in the header",
                                    path=path, line=start)
                record = record[: len(header)]
            if len(record) != len(header):
                raise DataError(f"{len(record)} fields where the header has {len(header) + unnamed}", path=path,
                                line=start)
            rows.append(record)
            lines.append(start)
    except csv.Error as e:
        raise DataError(f"malformed table ({e})", path=path, line=reader.line_num) from None
    if header is None:
        raise DataError("file is empty", path=path)
    if unnamed:
        logger.info("%s: %d empty column(s) without a name at the end of the header ignored", path, unnamed)
    return {name: [row[i] for row in rows] for i, name in enumerate(header)}, lines


def _check_header(path: str, header: list[str], line: int, separator: str) -> None:
    if len(header) == 1:
        for other, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'"), (",", "','")):
            if other != separator and other in header[0]:
                flag = "--delimiter tab" if other == "\t" else f"--delimiter '{other}'"
                raise DataError(f"the header is one column '{header[0][:60]}': the file looks {name}-separated; "
                                f"save it comma-separated or pass {flag}", path=path, line=line)
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DataError(f"column name(s) {', '.join(duplicated)} occur more than once in the header", path=path, line=line)
    if any(not name for name in header):
        raise DataError("the header has an empty column name", path=path, line=line)


def _columns(records: list[dict]) -> dict[str, list]:
    names: list[str] = []
    for record in records:
        names += [k for k in record if k not in names]
    return {name: [record.get(name) for record in records] for name in names}


def _read_json_lines(path: str, text: str) -> tuple[dict[str, list], list[int]]:
    records, lines = [], []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e.msg})", path=path, line=line_number) from None
        if not isinstance(record, dict):
            raise DataError("each line must be a JSON object", path=path, line=line_number)
        records.append(record)
        lines.append(line_number)
    return _columns(records), lines


def _read_json(path: str, text: str) -> tuple[dict[str, list], list[int] | None]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and text.lstrip().startswith("{"):  # JSON lines in a file named .json
            return _read_json_lines(path, text)
        raise DataError(f"invalid JSON ({e.msg})", path=path, line=e.lineno) from None
    if isinstance(data, dict) and "data" in data:  # {"data": [...]}, as transformers' examples accept
        data = data["data"]
    if isinstance(data, dict):  # column-oriented {"text": [...], "label": [...]}: rows have no line of their own
        if not all(isinstance(v, list) for v in data.values()) or len({len(v) for v in data.values()}) > 1:
            raise DataError("a {column: values} mapping needs lists of one length", path=path)
        return data, None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError("JSON must be a list of objects, a {column: values} mapping, or JSON lines", path=path)
    return _columns(data), _record_lines(text, len(data))


def _record_lines(text: str, n: int) -> list[int] | None:
    """The line each object of a top-level JSON list starts on (None if the list is nested under a key)."""
    decoder = json.JSONDecoder()
    start = text.find("[")
    if start < 0 or text[:start].strip():
        return None
    lines, pos = [], start + 1
    while len(lines) < n:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        lines.append(text.count("\n", 0, pos) + 1)
        _, pos = decoder.raw_decode(text, pos)
    return lines


def load_hub_dataset(name: str, config_name: str | None = None):
    """``datasets.load_dataset(name)`` or one line saying it cannot be had (offline, unknown id, ...)."""
    try:
        return datasets.load_dataset(name, config_name)
    except Exception as e:  # network, unknown id, missing config, ...: one clear line
        raise DataError(
            f"cannot load dataset '{name}' from the Hub ({type(e).__name__}); save it where you have network and "
            "pass local files with --train_file/--validation_file/--test_file"
        ) from None


def hub_split(hub, split: str):
    """The split of a loaded Hub dataset that serves ``split`` (``validation`` may be named ``valid`` or ``dev``)."""
    for name in HUB_SPLIT_NAMES[split]:
        if name in hub:
            return name
    return None


def load_splits(data_args, split_files: dict[str, str | None]) -> dict[str, Table]:
    """Load each requested split as a :class:`Table`. Local files win (read with the ``--delimiter`` /
    ``--encoding`` of :class:`TableFormatArguments` when ``data_args`` has them); otherwise
    ``data_args.dataset_name`` is loaded from the Hub (needs network)."""
    delimiter, encoding = getattr(data_args, "delimiter", None), getattr(data_args, "encoding", None)
    splits = {split: read_table(path, delimiter, encoding) for split, path in split_files.items() if path}
    if getattr(data_args, "drop_unlabelled_rows", False):
        splits = {split: drop_unlabelled_rows(table, data_args.label_column) for split, table in splits.items()}
    if data_args.dataset_name and len(splits) < len(split_files):
        hub = load_hub_dataset(data_args.dataset_name, data_args.dataset_config_name)
        for split in split_files:
            name = hub_split(hub, split)
            if split not in splits and name is not None:
                splits[split] = Table(hub[name], f"{data_args.dataset_name}[{name}]")
    return splits


# ------------------------------------------------------------------------------------------------ checks
def require_columns(table: Table, columns: list[str], source: str | None = None) -> None:
    """Every column exists; a header that differs only in case or surrounding spaces is named as such."""
    source = source or table.source
    for column in columns:
        if column in table.column_names:
            continue
        near = [c for c in table.column_names if c.strip().lower() == column.strip().lower()]
        if near:
            raise DataError(f"column '{column}' not found, but '{near[0]}' is (column names are case-sensitive)",
                            path=source)
        raise DataError(f"column '{column}' not found (columns: {', '.join(table.column_names)})", path=source)


def has_column(table: Table, column: str) -> bool:
    """Whether a (test) table has an optional column, e.g. the labels; a header that differs only in case is an
    error naming it, not a silently unlabelled file."""
    if column in table.column_names:
        return True
    if any(c.strip().lower() == column.strip().lower() for c in table.column_names):
        require_columns(table, [column])  # raises, naming the near match
    return False


def require_text(table: Table, column: str) -> None:
    """Every row has a non-empty string in ``column``."""
    for index, value in enumerate(table[column]):
        if not isinstance(value, str) or not value.strip():
            path, line = table.where(index)
            raise DataError(f"empty or missing text in column '{column}'", path=path, line=line)


def drop_unlabelled_rows(table: Table, column: str) -> Table:
    """``table`` without the rows whose ``column`` cell is empty (``--drop_unlabelled_rows``), their count logged; a
    table without the column is returned as it is (unlabelled test data), one whose every row is empty is an error."""
    from shared.data.labels import parse_label_cell

    if not has_column(table, column):
        return table
    keep = []
    for index, value in enumerate(table[column]):
        try:
            empty = parse_label_cell(value) is None
        except ValueError:  # a malformed cell is not an empty one: the label parser names it
            empty = False
        if not empty:
            keep.append(index)
    if not keep:
        raise DataError(f"every row has an empty label (column '{column}')", path=table.source)
    if len(keep) < len(table):
        logger.warning("%s: %d of %d rows have an empty label (column '%s') and were dropped (--drop_unlabelled_rows)",
                       table.source, len(table) - len(keep), len(table), column)
        return table.select(keep)
    return table
