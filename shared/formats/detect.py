"""Which note format a path holds, from its files: the i2b2 and BRAT folders, CoNLL and JSON files that the NER,
assertion and relation tasks read."""

from __future__ import annotations

import os

from shared.core.errors import DataError


def detect_format(path: str, notes_format: str | None = None) -> str:
    """Guess the format from a path; ``--data_format`` overrides it. A folder of raw notes (no .con or .ann files)
    is read as ``notes_format`` when given: the format a model was trained on (its task record)."""
    if os.path.isdir(path):
        names = os.listdir(path)
        if "concept" in names or any(n.endswith(".con") for n in names):
            return "i2b2"
        if any(n.endswith(".ann") for n in names):
            return "brat"
        if "txt" in names:
            return "i2b2"
        if notes_format in ("i2b2", "brat"):
            return notes_format
        raise DataError("cannot tell whether this folder is i2b2 or BRAT (no .con or .ann files); pass "
                        "--data_format", path)
    if path.endswith((".json", ".jsonl")):
        return "json"
    if path.endswith(".txt"):
        if os.path.exists(path[:-4] + ".con"):
            return "i2b2"
        if os.path.exists(path[:-4] + ".ann"):
            return "brat"
        if notes_format in ("i2b2", "brat"):  # most likely a raw note, which is read from its folder
            raise DataError(f"a .txt file without annotations: give the folder of the raw notes (read as "
                            f"{notes_format}, as the model was trained), or --data_format conll for a CoNLL file", path)
    return "conll"
