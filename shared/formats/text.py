"""Reading a whole text file the way every note/annotation reader needs: UTF-8, LF line endings, clear errors."""

from __future__ import annotations

from shared.errors import DataError


def read_utf8(path: str, newline: str | None = None) -> str:
    """The file's text; a one-line :class:`DataError` (file, line) when it is not UTF-8 or cannot be read.

    ``newline`` as in :func:`open`: ``None`` translates CRLF to LF, ``""`` keeps line endings as stored.
    """
    try:
        with open(path, encoding="utf-8", newline=newline) as f:
            return f.read()
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 (byte {e.start}); re-save the file as UTF-8", path, line) from None
    except OSError as e:
        raise DataError(f"cannot read file ({e.strerror})", path) from None


def read_text(path: str) -> str:
    """The file's text; a one-line :class:`DataError` (file, line) when it is not UTF-8 or has CRLF endings.

    Offsets in `.con`/`.ann` files count characters of the note as stored, so line endings are not translated.
    """
    text = read_utf8(path, newline="")
    if "\r" in text:
        line = text[: text.index("\r")].count("\n") + 1
        raise DataError("Windows (CRLF) line endings; convert the file to LF line endings", path, line)
    return text
