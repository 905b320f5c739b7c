"""shared/data/tables.py: table readers, the line of every record, and one-line errors."""

from __future__ import annotations

import pytest

from shared.core.errors import DataError
from shared.data.tables import TableFormatArguments, has_column, read_table, require_columns, require_text


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_bytes("text,label\nfine,a\n".encode() + "caf\xe9,b\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"notes\.csv:3: not valid UTF-8"):
        read_table(str(path))


def test_table_readers_and_column_check(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "labels": ["x"]}\n{"text": "b", "labels": []}\n')
    ds = read_table(str(jsonl))
    assert ds["labels"][0] == ["x"] and len(ds) == 2
    with pytest.raises(DataError, match=r"column 'label' not found \(columns: text, labels\)"):
        require_columns(ds, ["label"], str(jsonl))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(DataError, match=r"broken\.jsonl:2: invalid JSON"):
        read_table(str(broken))
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(DataError, match="no rows"):
        read_table(str(empty))
    parquet = tmp_path / "d.parquet"
    ds.to_parquet(str(parquet))
    assert read_table(str(parquet))["text"][:] == ["a", "b"]
    saved = tmp_path / "saved"
    ds.save_to_disk(str(saved))
    assert len(read_table(str(saved))) == 2


# ---------------------------------------------------------------- record positions, BOM, separators


def test_error_lines_follow_records_across_multi_line_cells_and_blank_lines(tmp_path):
    csv_path = tmp_path / "notes.csv"
    csv_path.write_text('text,label\n"first note\nspans\nthree lines",a\n\n"second",b\n"",c\n', encoding="utf-8")
    table = read_table(str(csv_path))
    assert table.lines == [2, 6, 7]  # the line each record starts on, the blank line 5 skipped
    assert table["text"][0] == "first note\nspans\nthree lines"
    with pytest.raises(DataError, match=r"notes\.csv:7: empty or missing text in column 'text'"):
        require_text(table, "text")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "label": "x"}\n\n\n{"text": "", "label": "y"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:4: empty or missing text"):
        require_text(read_table(str(jsonl)), "text")
    array = tmp_path / "d.json"
    array.write_text('[\n  {"text": "a", "label": "x"},\n  {"text": "b",\n   "label": "y"},\n  {"text": "", "label": "z"}\n]')
    table = read_table(str(array))
    assert table.lines == [2, 3, 5]
    with pytest.raises(DataError, match=r"d\.json:5: empty or missing text"):
        require_text(table, "text")


def test_bom_crlf_and_spaces_around_header_names(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefftext , label\r\nchest pain,cardiac \r\ncough,resp\r\n".encode("utf-8"))
    table = read_table(str(path))
    assert table.column_names == ["text", "label"] and table["label"] == ["cardiac ", "resp"]
    assert table.lines == [2, 3]


def test_cr_only_line_endings_old_excel_on_macos(tmp_path):
    path = tmp_path / "mac.csv"
    path.write_bytes(b'text,label\rchest pain,cardiac\r"cough\rat night",resp\rwheeze,resp\r')
    table = read_table(str(path))
    assert table["label"] == ["cardiac", "resp", "resp"] and table.lines == [2, 3, 5]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_with_a_byte_order_mark_is_read(tmp_path, encoding):
    path = tmp_path / "unicode.tsv"  # Excel's "Unicode text": UTF-16 LE with a BOM, tab-separated
    path.write_bytes("\ufefftext\tlabel\r\nfièvre\tfever\r\ncough\tresp\r\n".encode(encoding))
    table = read_table(str(path))
    assert table.column_names == ["text", "label"] and table["text"] == ["fièvre", "cough"]


def test_trailing_unnamed_empty_columns_are_dropped(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_text("text,label,,\nchest pain,cardiac,,\ncough,resp\n")
    table = read_table(str(path))
    assert table.column_names == ["text", "label"] and table["label"] == ["cardiac", "resp"]
    path.write_text("text,label,\nchest pain,cardiac,\ncough,resp,oops\n")
    with pytest.raises(DataError, match=r"excel\.csv:3: field 3 has a value but its column has no name in the header"):
        read_table(str(path))


def test_delimiter_and_encoding(tmp_path):
    path = tmp_path / "europe.csv"  # Excel in a European locale: ';' and Windows-1252
    path.write_bytes("text;label\nfièvre;fever\ntoux;resp\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"europe\.csv:2: not valid UTF-8 \(byte 2 of the line\); .* pass its --encoding"):
        read_table(str(path))
    path.write_bytes("text;label\nfièvre;fever\ntoux;resp\n".encode("utf-8"))
    with pytest.raises(DataError, match=r"looks ';'-separated; save it comma-separated or pass --delimiter ';'"):
        read_table(str(path))
    path.write_bytes("text;label\nfièvre;fever\ntoux;resp\n".encode("cp1252"))
    table = read_table(str(path), delimiter=";", encoding="cp1252")
    assert table["text"] == ["fièvre", "toux"]
    assert TableFormatArguments(delimiter="tab").delimiter == "\t"
    with pytest.raises(DataError, match="--delimiter must be one character"):
        TableFormatArguments(delimiter=";;")
    with pytest.raises(DataError, match="--encoding: unknown encoding 'utf-9'"):
        TableFormatArguments(encoding="utf-9")


@pytest.mark.parametrize("text, message", [
    ("text;label\nchest pain;cardiac\n", r"x\.csv:1: the header is one column 'text;label': the file looks ';'-separated"),
    ("text\tlabel\nchest pain\tcardiac\n", r"x\.csv:1: the header is one column .*: the file looks tab-separated"),
    ("text,label\nchest pain,cardiac,extra\n", r"x\.csv:2: 3 fields where the header has 2"),
    ("text,text\na,b\n", r"x\.csv:1: column name\(s\) text occur more than once"),
    ('text,label\n"unclosed,a\n', r"x\.csv:\d+: malformed table"),
    ("\n\n", r"x\.csv: file is empty"),
])
def test_malformed_csv_is_one_line_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "x.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_table(str(path))


def test_a_label_header_that_differs_only_in_case_is_an_error(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text("text,Label\nchest pain,cardiac\n")
    table = read_table(str(path))
    with pytest.raises(DataError, match=r"test\.csv: column 'label' not found, but 'Label' is \(column names are case-sensitive\)"):
        has_column(table, "label")
    path.write_text("text\nchest pain\n")
    assert not has_column(read_table(str(path)), "label")  # no label column at all: an unlabelled file
