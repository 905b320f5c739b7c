"""JSON / JSON lines with a list of tokens and a list of tags per record (the layout of hub NER datasets).

``.jsonl``: one object per line. ``.json``: a list of objects, or ``{"data": [...]}``. Tags may be strings
(``"B-problem"``) or integers when ``label_names`` is given (hub ``ClassLabel`` ids). Predictions are written as
JSON lines: every input record with its tag list replaced by the predicted tags.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from shared.core.errors import DataError
from shared.core.files import atomic_write_text
from shared.formats.textfile import read_utf8


@dataclass
class JsonNerFile:
    path: str
    records: list[dict]
    lines: list[int | None]  # line of each record in a .jsonl file (None for .json)
    tokens_column: str
    tags_column: str


def _check_record(rec, path, line, index, tokens_column, tags_column, require_tags, label_names):
    where = dict(path=path, line=line)
    name = f"record {index}" if line is None else "record"
    if not isinstance(rec, dict):
        raise DataError(f"{name} is not a JSON object", **where)
    if tokens_column not in rec:
        raise DataError(f"{name} has no '{tokens_column}' field (set --tokens_column)", **where)
    toks = rec[tokens_column]
    if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
        raise DataError(f"{name}: '{tokens_column}' must be a list of strings", **where)
    if tags_column not in rec:
        if require_tags:
            raise DataError(f"{name} has no '{tags_column}' field (set --tags_column)", **where)
        return toks, ["O"] * len(toks)
    tags = rec[tags_column]
    if not isinstance(tags, list):
        raise DataError(f"{name}: '{tags_column}' must be a list", **where)
    if len(tags) != len(toks):
        raise DataError(f"{name} has {len(toks)} tokens but {len(tags)} tags", **where)
    out = []
    for t in tags:
        if isinstance(t, bool) or not isinstance(t, (str, int)):
            raise DataError(f"{name}: tags must be strings or integer label ids", **where)
        if isinstance(t, int):
            if label_names is None or not 0 <= t < len(label_names):
                raise DataError(f"{name}: integer tag {t} without a matching label name", **where)
            t = label_names[t]
        out.append(t.strip())  # "B-problem " is the tag B-problem, never a new entity type
    return toks, out


def read_ner_json(path: str | os.PathLike, tokens_column: str = "tokens", tags_column: str = "ner_tags",
                  require_tags: bool = True, label_names: list[str] | None = None
                  ) -> tuple[JsonNerFile, list[list[str]], list[list[str]]]:
    """Return the file (for writing back), the token lists and the string tag lists."""
    path = os.fspath(path)
    content = read_utf8(path).removeprefix("\ufeff")  # a BOM (Windows editors) is not part of the JSON
    records, lines = [], []
    if path.endswith(".jsonl"):
        for k, line in enumerate(content.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON ({e.msg})", path, k) from None
            lines.append(k)
    else:
        try:
            obj = json.loads(content)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e.msg})", path, e.lineno) from None
        if isinstance(obj, dict) and isinstance(obj.get("data"), list):
            obj = obj["data"]
        if not isinstance(obj, list):
            raise DataError("expected a list of records or {\"data\": [...]}", path)
        records, lines = obj, [None] * len(obj)
    all_tokens, all_tags = [], []
    for i, (rec, line) in enumerate(zip(records, lines)):
        toks, tags = _check_record(rec, path, line, i, tokens_column, tags_column, require_tags, label_names)
        all_tokens.append(toks)
        all_tags.append(tags)
    return JsonNerFile(path, records, lines, tokens_column, tags_column), all_tokens, all_tags


def write_ner_json(data: JsonNerFile, path: str | os.PathLike, tags: list[list[str]]) -> None:
    """Every record of ``data`` as one JSON line, its tag list replaced by ``tags`` (string tags)."""
    out = []
    for rec, rec_tags in zip(data.records, tags, strict=True):
        rec = dict(rec)
        rec[data.tags_column] = rec_tags
        out.append(json.dumps(rec, ensure_ascii=False))
    atomic_write_text(path, "".join(line + "\n" for line in out))
