"""Tabular data readers: CSV, JSON / JSON lines, parquet, a saved ``datasets`` folder, or a Hub dataset.

Every reader returns a :class:`datasets.Dataset` and checks what recipes otherwise discover mid-training: the file
is UTF-8, it has rows, the requested columns exist. Errors are :class:`DataError` naming the file (and line).
"""

from __future__ import annotations

import json
import os

import datasets
import pandas as pd

from shared.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


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


def row_location(path: str, index: int) -> int:
    """The 1-based line of a row in the file, for error messages (CSV/TSV have a header line)."""
    return index + 2 if path.endswith((".csv", ".tsv")) else index + 1


def read_table(path: str) -> datasets.Dataset:
    """Read one local file or a ``save_to_disk`` folder into a Dataset."""
    if os.path.isdir(path):
        try:
            loaded = datasets.load_from_disk(path)
        except (FileNotFoundError, ValueError) as e:
            raise DataError(f"not a saved datasets folder ({str(e).splitlines()[0]})", path=path) from None
        if isinstance(loaded, datasets.DatasetDict):
            raise DataError("is a DatasetDict; pass one split's folder (e.g. data/train)", path=path)
        return loaded
    if not os.path.isfile(path):
        raise DataError("file does not exist", path=path)
    if not path.endswith(TABLE_SUFFIXES):
        raise DataError(f"unsupported file type; use one of {', '.join(TABLE_SUFFIXES)} or a saved datasets folder", path=path)
    if path.endswith(".parquet"):
        frame = pd.read_parquet(path)
    else:
        _check_utf8(path)
        try:
            if path.endswith((".csv", ".tsv")):
                frame = pd.read_csv(path, sep="\t" if path.endswith(".tsv") else ",", keep_default_na=False, dtype=str)
            elif path.endswith(".jsonl"):
                frame = _read_json_lines(path)
            else:
                frame = _read_json(path)
        except pd.errors.ParserError as e:
            raise DataError(f"malformed table: {str(e).strip().splitlines()[-1]}", path=path) from None
        except pd.errors.EmptyDataError:
            raise DataError("file is empty", path=path) from None
    if len(frame) == 0:
        raise DataError("file has no rows", path=path)
    return datasets.Dataset.from_pandas(frame, preserve_index=False)


def _read_json_lines(path: str) -> pd.DataFrame:
    records = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON ({e.msg})", path=path, line=line_number) from None
            if not isinstance(record, dict):
                raise DataError("each line must be a JSON object", path=path, line=line_number)
            records.append(record)
    return pd.DataFrame.from_records(records)


def _read_json(path: str) -> pd.DataFrame:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # a JSON-lines file with a .json suffix
            return _read_json_lines(path)
        raise DataError(f"invalid JSON ({e.msg})", path=path, line=e.lineno) from None
    if isinstance(data, dict) and "data" in data:  # {"data": [...]}, as transformers' examples accept
        data = data["data"]
    if isinstance(data, dict):  # column-oriented {"text": [...], "label": [...]}
        return pd.DataFrame(data)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError("JSON must be a list of objects, a {column: values} mapping, or JSON lines", path=path)
    return pd.DataFrame.from_records(data)


def load_splits(data_args, split_files: dict[str, str | None]) -> dict[str, tuple[datasets.Dataset, str]]:
    """Load each requested split as ``{split: (dataset, source)}``; ``source`` names the file for error messages.

    Local files win; otherwise ``data_args.dataset_name`` is loaded from the Hub (needs network).
    """
    splits = {}
    for split, path in split_files.items():
        if path:
            splits[split] = (read_table(path), path)
    if data_args.dataset_name and len(splits) < len(split_files):
        try:
            hub = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name)
        except Exception as e:  # network, unknown id, ... : one clear line
            raise DataError(
                f"cannot load dataset '{data_args.dataset_name}' from the Hub ({type(e).__name__}); "
                "save it where you have network and pass local files with --train_file/--validation_file/--test_file"
            ) from None
        hub_names = {"train": ["train"], "validation": ["validation", "valid", "dev"], "test": ["test"]}
        for split in split_files:
            if split not in splits:
                for name in hub_names[split]:
                    if name in hub:
                        splits[split] = (hub[name], f"{data_args.dataset_name}[{name}]")
                        break
    return splits


def require_columns(dataset: datasets.Dataset, columns: list[str], source: str) -> None:
    for column in columns:
        if column not in dataset.column_names:
            raise DataError(
                f"column '{column}' not found (columns: {', '.join(dataset.column_names)})", path=source
            )


def require_text(dataset: datasets.Dataset, column: str, source: str) -> None:
    """Every row has a non-empty string in ``column``."""
    for index, value in enumerate(dataset[column]):
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"empty or missing text in column '{column}'", path=source, line=row_location(source, index))
