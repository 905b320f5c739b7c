"""--subgroup_columns through the real command line: the text recipe scores each group of a column it never feeds to
the model (report table, forest plot, model card), a rare value never reaches a log or an output file (canary), and
a column the model reads or a missing one is one line before training; the image recipe reads a column of a table
of images, or a DICOM header keyword."""

from __future__ import annotations

import csv
import json
import os

from tests.helpers import TEXT_SAMPLE, assert_one_line, run_cli

QUIET_IMAGES = ["--bf16", "false", "--seed", "3", "--learning_rate", "1e-3", "--report_to", "none"]
CANARY = "RARE-SITE-5e1d77"  # a subgroup value held by 3 rows: too small to report, never to be written or logged
COMMON = ["--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "1", "--max_seq_length", "24",
          "--max_train_samples", "80", "--bf16", "false", "--seed", "3", "--log_level", "info", "--logging_steps", "1"]


def with_sites(source, path, rare_rows=()):
    """A copy of a sample split with a 'site' column: north / south alternately, ``rare_rows`` at the canary site."""
    with open(source, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["text", "label", "site"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, "site": CANARY if i in rare_rows else ("north" if i % 2 else "south")})
    return path


def test_text_run_reports_subgroups_and_no_rare_value_anywhere(tiny_bert_dir, tmp_path):
    data = {split: with_sites(TEXT_SAMPLE / f"{split}.csv", tmp_path / f"{split}.csv", rare_rows=(1, 4, 7))
            for split in ("train", "validation", "test")}
    out = tmp_path / "out"
    proc = run_cli("text_classification", [
        "--model_name_or_path", tiny_bert_dir, "--train_file", data["train"], "--validation_file", data["validation"],
        "--test_file", data["test"], "--output_dir", out, "--subgroup_columns", "site", "--bootstrap_resamples", "30",
        *COMMON])
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry = json.loads((out / "test_report.json").read_text())["subgroups"]["columns"]["site"]
    assert set(entry["groups"]) == {"north", "south"} and entry["too_small"] == {"groups": 1, "examples": 3}
    assert entry["groups"]["north"]["examples"] + entry["groups"]["south"]["examples"] == 117
    north = entry["groups"]["north"]
    assert north["macro_f1_ci_low"] <= north["macro_f1"] <= north["macro_f1_ci_high"]
    assert entry["largest_gap"]["group"] in ("north", "south")
    results = json.loads((out / "all_results.json").read_text())
    assert results["test_subgroup_site_worst_macro_f1"] == entry["worst_group"]["value"]
    assert (out / "test_subgroups.png").stat().st_size > 1000 and (out / "eval_subgroups.png").exists()
    card = (out / "README.md").read_text()
    assert "## Subgroups (test)" in card and "| site | 1 group(s) under 10 | 3 | too small | | |" in card
    # the canary: in no log line and no file the run wrote (the input text is not in them either)
    assert CANARY not in proc.stdout + proc.stderr
    assert "site" in proc.stderr  # the log does speak of the column, by name only
    for folder, _, names in os.walk(out):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                assert CANARY.encode() not in f.read(), name


def test_a_column_the_model_reads_or_a_missing_one_is_one_line(tiny_bert_dir, tmp_path):
    data = {split: with_sites(TEXT_SAMPLE / f"{split}.csv", tmp_path / f"{split}.csv")
            for split in ("train", "validation", "test")}
    common = ["--model_name_or_path", tiny_bert_dir, "--train_file", data["train"], "--validation_file",
              data["validation"], "--test_file", data["test"], *COMMON]
    for columns, expected in (
            ("text", r"--subgroup_columns: 'text' is a column the model reads or predicts; .*"),
            ("site,ward", rf"{data['validation']}: column 'ward' not found \(columns: text, label, site\)")):
        out = tmp_path / "out"
        proc = run_cli("text_classification", [*common, "--output_dir", out, "--subgroup_columns", columns])
        assert_one_line(proc.returncode, proc.stderr, expected, out)


def test_image_run_reads_a_table_column_and_dicom_header_keywords(tiny_vit, tmp_path):
    import numpy as np
    import pydicom

    from tests.helpers import IMAGE_SAMPLE
    from tests.images.test_dicom import make_dicom

    # a table of image paths with a scanner column the model never sees
    tables = {}
    for split in ("train", "test"):
        with open(IMAGE_SAMPLE / f"{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        tables[split] = tmp_path / f"{split}.csv"
        with open(tables[split], "w", newline="") as f:
            writer = csv.DictWriter(f, ["image", "label", "scanner"])
            writer.writeheader()
            for i, row in enumerate(rows):
                writer.writerow({"image": IMAGE_SAMPLE / row["image"], "label": row["label"],
                                 "scanner": "A" if i % 2 else "B"})
    out = tmp_path / "table_out"
    proc = run_cli("image_classification", [
        "--model_name_or_path", tiny_vit, "--train_file", tables["train"], "--test_file", tables["test"],
        "--output_dir", out, "--do_train", "--do_predict", "--num_train_epochs", "1", "--bootstrap_resamples", "20",
        "--subgroup_columns", "scanner", "--subgroup_min_size", "4", "--max_predict_samples", "14", *QUIET_IMAGES])
    assert proc.returncode == 0, proc.stderr[-3000:]
    groups = json.loads((out / "test_report.json").read_text())["subgroups"]["columns"]["scanner"]["groups"]
    assert {g: r["examples"] for g, r in groups.items()} == {"A": 7, "B": 7}

    # class folders of DICOM files: PatientSex from each header, one header without it
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 6)):
        for label in ("normal", "opacity"):
            (tmp_path / "dicom" / split / label).mkdir(parents=True)
            for i in range(n):
                stored = rng.integers(800, 1200, (16, 16))
                if label == "opacity":
                    stored[4:12, 4:12] += 2000
                path = tmp_path / "dicom" / split / label / f"{i}.dcm"
                make_dicom(path, stored, patient=f"{split}{label}{i}")
                if not (split == "test" and label == "normal" and i == 0):
                    ds = pydicom.dcmread(path)
                    ds.PatientSex = "F" if i % 2 else "M"
                    ds.save_as(path)
    out = tmp_path / "dicom_out"
    proc = run_cli("image_classification", [
        "--model_name_or_path", tiny_vit, "--train_dir", tmp_path / "dicom" / "train", "--test_dir",
        tmp_path / "dicom" / "test", "--output_dir", out, "--do_train", "--do_predict", "--num_train_epochs", "1",
        "--bootstrap_resamples", "20", "--subgroup_columns", "PatientSex", "--subgroup_min_size", "4",
        "--image_size", "32", *QUIET_IMAGES])
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry = json.loads((out / "test_report.json").read_text())["subgroups"]["columns"]["PatientSex"]
    assert {g: r["examples"] for g, r in entry["groups"].items()} == {"F": 6, "M": 5}
    assert entry["too_small"] == {"groups": 1, "examples": 1}  # the header without PatientSex: '(missing)'
    assert (out / "test_subgroups.png").exists()

    proc = run_cli("image_classification", [
        "--model_name_or_path", tiny_vit, "--train_dir", tmp_path / "dicom" / "train", "--test_dir",
        tmp_path / "dicom" / "test", "--output_dir", tmp_path / "bad", "--do_train", "--do_predict",
        "--subgroup_columns", "NoSuchKeyword", *QUIET_IMAGES])
    assert_one_line(proc.returncode, proc.stderr, r".*: --subgroup_columns: 'NoSuchKeyword' is neither a column .*",
                    tmp_path / "bad")


def test_assertion_concepts_are_scored_in_the_groups_of_their_notes(concept_bert, tmp_path):
    from tests.helpers import ASSERTION_SAMPLE

    notes = tmp_path / "notes.csv"
    names = sorted(p.stem for split in ("train", "validation", "test") for p in (ASSERTION_SAMPLE / split).glob("*.txt"))
    with open(notes, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["note", "site"])
        writer.writeheader()
        for i, name in enumerate(names):  # file names with and without .txt both name the note
            writer.writerow({"note": name + (".txt" if i % 3 == 0 else ""), "site": "north" if i % 2 else "south"})

    def run(out, *extra):
        return run_cli("assertion_status", [
            "--model_name_or_path", concept_bert, "--train_file", ASSERTION_SAMPLE / "train", "--validation_file",
            ASSERTION_SAMPLE / "validation", "--test_file", ASSERTION_SAMPLE / "test", "--output_dir", out,
            "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "1", "--bf16", "false",
            "--bootstrap_resamples", "20", "--seed", "0", *extra])

    out = tmp_path / "out"
    proc = run(out, "--subgroup_columns", "site", "--subgroup_file", notes)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry = json.loads((out / "test_report.json").read_text())["subgroups"]["columns"]["site"]
    with open(out / "test_predictions.csv", newline="", encoding="utf-8") as f:
        concepts = [row["note"] for row in csv.DictReader(f)]
    south = sum(names.index(note) % 2 == 0 for note in concepts)
    assert entry["groups"]["south"]["examples"] == south and entry["examples"] == len(concepts)
    assert "## Subgroups (test)" in (out / "README.md").read_text()

    # a note of a scored split without a row, a column alone, a note twice: one line each, nothing written
    out = tmp_path / "bad"
    with open(notes, encoding="utf-8") as f:
        lines = f.read().splitlines()
    (tmp_path / "short.csv").write_text("\n".join(line for line in lines if "test_note_02" not in line) + "\n")
    proc = run(out, "--subgroup_columns", "site", "--subgroup_file", tmp_path / "short.csv")
    assert_one_line(proc.returncode, proc.stderr, r".*short\.csv: 1 note\(s\) of the test split have no row \(the "
                                                  r"first: 'test_note_02'\); --subgroup_file needs one row per note", out)
    (tmp_path / "twice.csv").write_text("\n".join(lines + [lines[1]]) + "\n")
    proc = run(out, "--subgroup_columns", "site", "--subgroup_file", tmp_path / "twice.csv")
    assert_one_line(proc.returncode, proc.stderr, r".*twice\.csv:\d+: note '.*' has a second row \(the first is row "
                                                  r"1\)", out)
    proc = run(out, "--subgroup_columns", "site")
    assert_one_line(proc.returncode, proc.stderr, r"--subgroup_columns and --subgroup_file go together.*", out)
