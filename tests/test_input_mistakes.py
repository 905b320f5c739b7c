"""Silent input mistakes become explicit, through the recipes: labels and tags with surrounding spaces, a label
header that differs only in case, NER data without entities, error lines of multi-line CSV cells and of JSON lines
with blank lines, BOM / CRLF files, macOS ``._*`` files, a CSV with the wrong separator, ``"a;b"`` multi-labels."""

from __future__ import annotations

import csv
import json
import re
import shutil

import pandas as pd

from shared.core.runner import run_recipe
from tests.helpers import IMAGE_SAMPLE, NER_SAMPLE, assert_one_line, run_in_process

FAST = ["--num_train_epochs", "1", "--bootstrap_resamples", "10", "--per_device_train_batch_size", "16", "--seed", "1"]
ROWS = [("chest pain on exertion", "cardiac"), ("productive cough and wheeze", "resp"),
        ("palpitations at night", "cardiac"), ("shortness of breath", "resp")] * 3


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def text_run(model, tmp_path, train, test=None, *extra):
    args = ["--model_name_or_path", str(model), "--output_dir", str(tmp_path / "out"), "--train_file", train,
            "--do_train", *FAST, *extra]
    return args + (["--test_file", test, "--do_predict"] if test else [])


def test_a_label_with_surrounding_spaces_is_the_same_class(tiny_bert_dir, tmp_path):
    train = write_csv(tmp_path / "train.csv", [(t, label + " " if i % 2 else label) for i, (t, label) in enumerate(ROWS)])
    test = write_csv(tmp_path / "test.csv", [(t, " " + label) for t, label in ROWS[:4]])
    run_recipe("text_classification", text_run(tiny_bert_dir, tmp_path, train, test))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert sorted(config["label2id"]) == ["cardiac", "resp"]
    assert set(pd.read_csv(tmp_path / "out" / "test_predictions.csv")["label"]) == {"cardiac", "resp"}


def test_a_tag_with_a_trailing_space_is_the_same_entity_type(tiny_ner_model, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"tokens": ["Chest", "pain", "today"], "ner_tags": ["B-problem ", "I-problem",
                                                                                          "O"]}) + "\n"
                             for _ in range(6)))
    run_recipe("ner", ["--model_name_or_path", tiny_ner_model, "--output_dir", str(tmp_path / "out"),
                       "--train_file", str(train), "--do_train", *FAST])
    assert json.loads((tmp_path / "out" / "config.json").read_text())["label2id"] == {
        "O": 0, "B-problem": 1, "I-problem": 2}


def test_a_test_label_header_that_differs_only_in_case_is_an_error(tiny_bert_dir, tiny_vit, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", ROWS)
    test = write_csv(tmp_path / "test.csv", ROWS[:2], header=("text", "Label"))
    out = tmp_path / "out"
    status, err = run_in_process("text_classification", text_run(tiny_bert_dir, tmp_path, train, test), capsys)
    assert_one_line(status, err, re.escape(f"{test}: column 'label' not found, but 'Label' is (column names are "
                                           "case-sensitive)"), out)
    rows = [(str(IMAGE_SAMPLE / "folders" / "train" / name / "000.png"), name) for name in ("normal", "opacity")] * 3
    images = write_csv(tmp_path / "images.csv", rows, header=("image", "label"))
    images_test = write_csv(tmp_path / "images_test.csv", rows, header=("image", "LABEL"))
    status, err = run_in_process("image_classification", [
        "--model_name_or_path", tiny_vit, "--output_dir", out, "--train_file", images, "--test_file", images_test,
        "--do_train", "--do_predict"], capsys)
    assert_one_line(status, err, re.escape(f"{images_test}: column 'label' not found, but 'LABEL' is (column names "
                                           "are case-sensitive)"), out)


def test_ner_training_data_without_any_entity_is_an_error(tiny_ner_model, tmp_path, capsys):
    train = tmp_path / "train.tsv"
    train.write_text("Patient\tO\nwell\tO\n\nNo\tO\ncomplaints\tO\n")
    out = tmp_path / "out"
    status, err = run_in_process("ner", ["--model_name_or_path", tiny_ner_model, "--output_dir", out,
                                         "--train_file", train, "--do_train"], capsys)
    assert_one_line(status, err, re.escape(f"{train}: training data has no entity at all (every tag is O); check "
                                           "--data_format / the tag column"), out)


def test_error_lines_count_multi_line_cells_and_blank_json_lines(tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "out"
    train = write_csv(tmp_path / "train.csv", ROWS[:2] + [("a note\nover three\nlines", "cardiac"), ("cough", "")])
    status, err = run_in_process("text_classification", text_run(tiny_bert_dir, tmp_path, train), capsys)
    assert_one_line(status, err, re.escape(f"{train}:7: missing label (column 'label'); fill it in, or drop such rows "
                                           "with train.py --drop_unlabelled_rows"), out)  # not line 5
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"text": "chest pain", "label": "cardiac"}\n\n{"text": "cough", "label": "resp"}\n\n'
                     '{"text": "wheeze"}\n')
    status, err = run_in_process("text_classification", text_run(tiny_bert_dir, tmp_path, str(jsonl)), capsys)
    assert_one_line(status, err, re.escape(f"{jsonl}:5: missing label (column 'label')") + ".*", out)


def test_a_csv_with_another_separator_says_which(tiny_bert_dir, tmp_path, capsys):
    train = tmp_path / "train.csv"
    train.write_text("text;label\nchest pain;cardiac\ncough;resp\n")
    status, err = run_in_process("text_classification", text_run(tiny_bert_dir, tmp_path, str(train)), capsys)
    assert_one_line(status, err, re.escape(f"{train}:1: the header is one column 'text;label': the file looks "
                                           "';'-separated; save it comma-separated or pass --delimiter ';'"),
                    tmp_path / "out")


def test_text_multi_label_with_a_separator(tiny_bert_dir, tmp_path):
    rows = [("chest pain and cough", "cardiac;resp"), ("chest pain", "cardiac"), ("cough", "resp"),
            ("nothing today", "")] * 4
    train = write_csv(tmp_path / "train.csv", rows)
    run_recipe("text_classification", text_run(tiny_bert_dir, tmp_path, train, train, "--label_separator", ";"))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and sorted(config["label2id"]) == ["cardiac", "resp"]
    predictions = pd.read_csv(tmp_path / "out" / "test_predictions.csv", keep_default_na=False)
    assert predictions["label"].tolist()[:4] == ["cardiac;resp", "cardiac", "resp", ""]  # written back the same way


def test_windows_files_and_macos_resource_files(tiny_ner_model, tiny_vit, tmp_path, capsys):
    notes = tmp_path / "notes"
    shutil.copytree(NER_SAMPLE / "train", notes)
    for path in sorted(notes.iterdir())[:4]:  # a BOM and CRLF endings, as a Windows editor saves them
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    (notes / "._train_note_00.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")  # not even UTF-8
    results = run_recipe("ner", ["--model_name_or_path", tiny_ner_model, "--output_dir", str(tmp_path / "ner"),
                                 "--train_file", str(notes), "--do_train", *FAST])
    reference = run_recipe("ner", ["--model_name_or_path", tiny_ner_model, "--output_dir", str(tmp_path / "ref"),
                                   "--train_file", str(NER_SAMPLE / "train"), "--do_train", *FAST])
    assert results["train_samples"] == reference["train_samples"]
    assert results["train_loss"] == reference["train_loss"]  # read exactly like the plain files

    images = tmp_path / "images"
    shutil.copytree(IMAGE_SAMPLE / "folders" / "train", images)
    (images / "normal" / "._000.png").write_bytes(b"\x00\x05\x16\x07")
    results = run_recipe("image_classification", ["--model_name_or_path", tiny_vit, "--output_dir",
                                                   str(tmp_path / "img"), "--train_dir", str(images), "--do_train",
                                                   *FAST])
    assert results["train_samples"] == 48 and results["train_skipped_images"] == 0

    brat = tmp_path / "brat"
    brat.mkdir()
    (brat / "d.txt").write_bytes(b"\xef\xbb\xbfChest pain.\n")
    (brat / "d.ann").write_text("T1\tproblem 0 10\tChest pain\n")
    status, err = run_in_process("ner", ["--model_name_or_path", tiny_ner_model, "--output_dir", tmp_path / "b",
                                         "--train_file", brat, "--do_train"], capsys)
    assert_one_line(status, err, re.escape(f"{brat / 'd.txt'}:1: starts with a byte-order mark (BOM), which shifts "
                                           "every character offset of the annotations; save the file as UTF-8 "
                                           "without BOM"), tmp_path / "b")
