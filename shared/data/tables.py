"""Tabular data: CSV/TSV, JSON / JSON lines, parquet, a saved ``datasets`` folder, or a Hub dataset.

Every reader returns a :class:`Table`: a :class:`datasets.Dataset` plus where each row came from, so that an error
names the line of the file a row starts on, also when a CSV cell spans several lines (clinical notes do) or a JSON
lines file has blank lines. Readers check what recipes otherwise discover mid-training: the file is UTF-8 (a BOM
is fine), it has rows, every CSV record has as many fields as the header, the requested columns exist. Errors are
one-line :class:`DataError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass

import datasets

from shared.core.errors import DataError

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


# ------------------------------------------------------------------------------------------------ readers
def _check_utf8(path: str) -> None:
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"not valid UTF-8 (byte {e.start} of the line); re-save the file as UTF-8",
                    path=path,
                    line=line_number,
                ) from None


def read_table(path: str) -> Table:
    """Read one local file or a ``save_to_disk`` folder."""
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
        _check_utf8(path)
        with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig: a BOM (Excel) is not part of a name
            text = f.read()
        if not text.strip():
            raise DataError("file is empty", path=path)
        if path.endswith((".csv", ".tsv")):
            columns, lines = _read_csv(path, text, "\t" if path.endswith(".tsv") else ",")
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
    """Columns of a CSV/TSV (every cell a string, as written) and the line each record starts on."""
    reader = csv.reader(io.StringIO(text), delimiter=separator, strict=True)
    header, rows, lines, previous = None, [], [], 0
    try:
        for record in reader:
            start, previous = previous + 1, reader.line_num  # a quoted cell may span several lines
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if header is None:
                header = [name.strip() for name in record]
                _check_header(path, header, start, separator)
                continue
            if len(record) != len(header):
                raise DataError(f"{len(record)} fields where the header has {len(header)}", path=path, line=start)
            rows.append(record)
            lines.append(start)
    except csv.Error as e:
        raise DataError(f"malformed table ({e})", path=path, line=reader.line_num) from None
    if header is None:
        raise DataError("file is empty", path=path)
    return {name: [row[i] for row in rows] for i, name in enumerate(header)}, lines


def _check_header(path: str, header: list[str], line: int, separator: str) -> None:
    if len(header) == 1:
        for other, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'"), (",", "','")):
            if other != separator and other in header[0]:
                fix = "comma-separated (.csv) or tab-separated (.tsv)"
                raise DataError(f"the header is one column '{header[0][:60]}': the file looks {name}-separated; "
                                f"save it {fix}", path=path, line=line)
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
    """Load each requested split as a :class:`Table`. Local files win; otherwise ``data_args.dataset_name`` is
    loaded from the Hub (needs network)."""
    splits = {split: read_table(path) for split, path in split_files.items() if path}
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
