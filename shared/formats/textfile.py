"""Reading a whole text file the way every note/annotation reader needs: UTF-8, LF line endings, clear errors.

Files from Windows editors often start with a byte-order mark (BOM) and end lines with CRLF. Where positions are
counted in lines and tokens (i2b2 notes and ``.con`` files, CoNLL, JSON, BRAT ``.ann``), both are read away: nothing
shifts. Where they are character offsets into the file as stored (a BRAT ``.txt``), a BOM or CR would move every
offset after it, so the file is refused with one line naming it.
"""

from __future__ import annotations

import codecs

from shared.core.errors import DataError


def read_utf8(path: str, newline: str | None = None) -> str:
    """The file's text; a one-line :class:`DataError` (file, line) when it is not UTF-8 or cannot be read.

    ``newline`` as in :func:`open`: ``None`` translates CRLF to LF, ``""`` keeps line endings as stored.
    """
    try:
        with open(path, encoding="utf-8", newline=newline) as f:
            return f.read()
    except UnicodeDecodeError as e:
        if e.object.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Notepad's / Excel's "Unicode"
            raise DataError("is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8", path) from None
        line = e.object[: e.start].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 (byte {e.start}); re-save the file as UTF-8", path, line) from None
    except OSError as e:
        raise DataError(f"cannot read file ({e.strerror})", path) from None


BOM = "\ufeff"


def read_text(path: str, offsets: bool = False) -> str:
    """The file's text with LF line endings; a one-line :class:`DataError` (file, line) when it is not UTF-8.

    ``offsets=False``: a leading BOM is dropped and CRLF / CR line endings become LF. ``offsets=True`` (character
    offsets point into this file as stored): a BOM or CR is an error naming it.
    """
    text = read_utf8(path, newline="")
    if offsets:
        if text.startswith(BOM):
            raise DataError("starts with a byte-order mark (BOM), which shifts every character offset of the "
                            "annotations; save the file as UTF-8 without BOM", path, 1)
        if "\r" in text:
            line = text[: text.index("\r")].count("\n") + 1
            raise DataError("Windows (CRLF) line endings, which shift the character offsets of the annotations; "
                            "convert the file to LF line endings", path, line)
        return text
    return text.removeprefix(BOM).replace("\r\n", "\n").replace("\r", "\n")
