"""One error type for bad input, so every recipe reports it the same way: one line naming file, line and problem."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Bad input data or configuration, raised before any training starts.

    The message is a single line: ``<file>:<line>: <what is wrong>`` (line omitted when it does not apply).
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.reason = message
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        super().__init__(f"{where}{message}".replace("\n", " "))

    def renamed(self, old: str, new: str) -> "DataError":
        """The same error with the folder ``old`` called ``new`` (a staging folder called by the name it takes)."""
        return DataError(self.reason.replace(old, new), None if self.path is None else self.path.replace(old, new),
                         self.line)
