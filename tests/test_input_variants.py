"""Reasonable inputs that used to be refused (issue #32): ';'-separated Windows-1252 files (``--delimiter``,
``--encoding``, train.py and predict.py), rows without a label (``--drop_unlabelled_rows``), labels ``1.0`` in one
split and ``1`` in another, Excel's trailing empty column; and a ``--config`` null that used to be a traceback."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from shared.core.runner import run_recipe
from tests.helpers import assert_one_line, run_cli, run_in_process

ROWS = [("chest pain on exertion", "1"), ("productive cough and wheeze", "0"), ("palpitations at night", "1"),
        ("shortness of breath", "0")] * 3


def write_excel_csv(path, rows, label=lambda x: x):
    """What Excel writes in a European locale: ';' between fields, Windows-1252, a trailing empty column."""
    lines = ["text;label;"] + [f"{text} (fièvre);{label(y)};" for text, y in rows]
    path.write_bytes("\r\n".join(lines).encode("cp1252"))
    return str(path)


def test_a_semicolon_cp1252_file_with_unlabelled_rows_and_decimal_labels(tiny_bert_dir, tmp_path, capsys, caplog):
    train = write_excel_csv(tmp_path / "train.csv", ROWS + [("no label here", ""), ("nor here", " ")])
    test = write_excel_csv(tmp_path / "test.csv", ROWS[:4], label=lambda y: f"{y}.0")  # numbers through Excel
    out = tmp_path / "out"
    run_recipe("text_classification", [
        "--model_name_or_path", tiny_bert_dir, "--output_dir", str(out), "--train_file", train, "--test_file", test,
        "--do_train", "--do_predict", "--delimiter", ";", "--encoding", "cp1252", "--drop_unlabelled_rows",
        "--num_train_epochs", "1", "--bootstrap_resamples", "10", "--seed", "1"])
    assert "2 of 14 rows have an empty label (column 'label') and were dropped" in caplog.text
    assert json.loads((out / "config.json").read_text())["label2id"] == {"0": 0, "1": 1}
    assert "test_macro_f1" in json.loads((out / "all_results.json").read_text())

    # predict.py takes the input file's own --delimiter / --encoding (a model folder never records them)
    done = run_cli("text_classification", ["--model_dir", str(out), "--input", test, "--output_dir",
                                           str(tmp_path / "pred"), "--delimiter", "semicolon", "--encoding", "cp1252"],
                   entry="predict")
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = pd.read_csv(tmp_path / "pred" / "predictions.csv", dtype=str)
    assert list(predictions["label"]) == ["1", "0", "1", "0"]

    # what else Excel writes, read without options: UTF-16 "Unicode text" (tab-separated), CR-only line ends
    unicode_text, mac = tmp_path / "unicode.tsv", tmp_path / "mac.csv"
    unicode_text.write_bytes("\ufefftext\tlabel\r\nfièvre et toux\t1\r\ncough\t0\r\n".encode("utf-16-le"))
    mac.write_bytes(b"text,label\rchest pain,1\rcough,0\r")
    for path in (unicode_text, mac):
        run_recipe("text_classification", ["--model_dir", str(out), "--input", str(path), "--output_dir",
                                           str(tmp_path / path.stem)], entry="predict")
        assert list(pd.read_csv(tmp_path / path.stem / "predictions.csv", dtype=str)["label"]) == ["1", "0"]

    # without the options: one line, naming the file, the line and the way out
    status, err = run_in_process("text_classification", [
        "--model_name_or_path", tiny_bert_dir, "--output_dir", str(tmp_path / "no"), "--train_file", train,
        "--do_train"], capsys)
    assert_one_line(status, err, r".*train\.csv:2: not valid UTF-8 \(byte 26 of the line\); re-save the file as "
                                 r"UTF-8 or pass its --encoding \(e\.g\. cp1252 for Excel on Windows\)", tmp_path / "no")


def test_a_null_in_a_config_is_one_line_and_writes_nothing(tiny_bert_dir, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"model_name_or_path: {tiny_bert_dir}\noutput_dir: {tmp_path / 'out'}\ndo_train: true\n"
                      f"train_file: {write_excel_csv(tmp_path / 'train.csv', ROWS)}\nlearning_rate: ~\n")
    status, err = run_in_process("text_classification", ["--config", str(config)], capsys)
    assert_one_line(status, err, r".*run\.yaml:5: learning_rate: empty \(null\) value where a number is needed; "
                                 r"remove the line to use the default", tmp_path / "out")


def test_extra_spaces_in_ast_and_rel_lines_are_harmless(tmp_path):
    from shared.concepts.i2b2 import parse_ast, parse_rel
    from tests.concepts.test_concept_files import note

    n = note(tmp_path, ast='c="pneumonia"  1:6 1:6 || t="problem" || a="present"  \n',
             rel='c="furosemide" 1:4 1:4 ||r="TrAP"|| c="pneumonia" 1:6  1:6 \n')
    assert [(a.concept.text, a.value) for a in parse_ast(str(tmp_path / "n.ast"), n)] == [("pneumonia", "present")]
    assert [(r.first.text, r.type, r.second.text) for r in parse_rel(str(tmp_path / "n.rel"), n)] == [
        ("furosemide", "TrAP", "pneumonia")]


def test_an_image_table_with_a_delimiter_an_encoding_and_unlabelled_rows(tmp_path, caplog):
    from shared.images.readers import read_images

    path = tmp_path / "images.csv"
    path.write_bytes("image;label\r\nrö1.png;normal\r\nrö2.png;\r\nrö3.png;opacity\r\n".encode("cp1252"))
    images = read_images(str(path), "train", delimiter=";", encoding="cp1252", drop_unlabelled_rows=True)
    assert images.labels == ["normal", "opacity"] and [line for _, line in images.refs] == [2, 4]
    assert "1 of 3 rows have an empty label" in caplog.text


def test_a_utf16_note_says_so(tmp_path):
    from shared.core.errors import DataError
    from shared.formats.i2b2 import read_i2b2

    (tmp_path / "n.txt").write_bytes("\ufeffFever .\n".encode("utf-16-le"))
    (tmp_path / "n.con").write_text('c="fever" 1:0 1:0||t="problem"\n')
    with pytest.raises(DataError) as info:
        read_i2b2(tmp_path)
    assert str(info.value) == f"{tmp_path / 'n.txt'}: is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8"
