"""Deployment of the two concept tasks: assertion status and relation predict.py give the bytes train.py
--do_predict gives on the same folder (i2b2 and BRAT), their ONNX exports pass the parity gate and predict the
same, the service answers a note with its concepts, and a mistake is one line before anything is written."""

from __future__ import annotations

import filecmp
import json
import os

import numpy as np
import pytest

from shared.core.runner import run_recipe
from tests.helpers import ASSERTION_SAMPLE, RELATION_SAMPLE, assert_one_line, run_cli

CANARY = "zebra-canary-7f3a"  # must appear in no log and no answer of an error

INPUTS = {"assertion_status": ASSERTION_SAMPLE / "test", "relation_extraction": RELATION_SAMPLE / "i2b2" / "test"}


def do_predict(task, folder, data, out, *extra):
    """train.py --do_predict on a trained folder: the reference predict.py must reproduce."""
    return run_recipe(task, ["--model_name_or_path", folder, "--test_file", data, "--output_dir", out,
                             "--do_predict", "--bootstrap_resamples", "0", *extra])


def predict(task, folder, data, out, *extra):
    return run_recipe(task, ["--model_dir", folder, "--input", data, "--output_dir", out, *extra], entry="predict")


def same_files(reference_dir, reference_table, got_dir):
    """Every note file of train.py's test_predictions/ and its test_predictions.csv, byte for byte in predict.py's
    output folder."""
    names = sorted(os.listdir(reference_dir))
    assert names
    match, mismatch, errors = filecmp.cmpfiles(reference_dir, got_dir, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    assert filecmp.cmp(reference_table, os.path.join(got_dir, "predictions.csv"), shallow=False)


@pytest.fixture
def folders(assertion_folder, relation_folder):
    return {"assertion_status": assertion_folder, "relation_extraction": relation_folder}


@pytest.mark.parametrize("task", ["assertion_status", "relation_extraction"])
def test_predict_gives_the_bytes_of_do_predict(task, folders, tmp_path):
    reference = do_predict(task, folders[task], INPUTS[task], tmp_path / "reference")
    results = predict(task, folders[task], INPUTS[task], tmp_path / "predicted")
    same_files(tmp_path / "reference" / "test_predictions", tmp_path / "reference" / "test_predictions.csv",
               tmp_path / "predicted")
    metric = "macro_f1" if task == "assertion_status" else "f1"
    assert results[metric] == pytest.approx(reference[f"test_{metric}"])
    assert results["examples"] == reference["test_samples"] and "input content" in results["sensitive"]


def test_relation_predict_reads_brat_in_the_trained_format(brat_relation_folder, tmp_path):
    data = RELATION_SAMPLE / "brat" / "test"
    do_predict("relation_extraction", brat_relation_folder, data, tmp_path / "reference")
    predict("relation_extraction", brat_relation_folder, data, tmp_path / "predicted")
    same_files(tmp_path / "reference" / "test_predictions", tmp_path / "reference" / "test_predictions.csv",
               tmp_path / "predicted")
    assert any(name.endswith(".ann") for name in os.listdir(tmp_path / "predicted"))


def test_predict_takes_concepts_from_another_folder(assertion_folder, tmp_path):
    """--concepts_dir reads the notes' concepts from elsewhere (the NER output) and predicts, unscored."""
    concepts = tmp_path / "concepts"
    concepts.mkdir()
    notes = tmp_path / "notes"
    notes.mkdir()
    for name in os.listdir(INPUTS["assertion_status"]):
        target = concepts if name.endswith(".con") else notes if name.endswith(".txt") else None
        if target is not None:
            (target / name).write_bytes((INPUTS["assertion_status"] / name).read_bytes())
    results = predict("assertion_status", assertion_folder, notes, tmp_path / "out", "--concepts_dir", concepts)
    assert "macro_f1" not in results and results["examples"] > 0
    reference = predict("assertion_status", assertion_folder, INPUTS["assertion_status"], tmp_path / "labelled")
    same = filecmp.cmp(tmp_path / "out" / "test_note_00.ast", tmp_path / "labelled" / "test_note_00.ast",
                       shallow=False)
    assert same and reference["examples"] == results["examples"]


@pytest.mark.parametrize("task", ["assertion_status", "relation_extraction"])
def test_onnx_export_keeps_the_markers_and_predicts_like_pytorch(task, folders, tmp_path):
    export = tmp_path / "export"
    info = run_recipe("export_onnx.py", ["--model_dir", folders[task], "--input", INPUTS[task], "--output_dir",
                                         export])
    assert info["parity"]["changed_decisions"] == 0 and info["parity"]["metric"] in ("macro_f1", "f1")
    saved = json.loads((export / "export.json").read_text())
    assert saved["task"] == task and {"[E]", "[E1]", "[/E2]"} & set(saved["markers"])
    predict(task, folders[task], INPUTS[task], tmp_path / "pytorch")
    predict(task, str(export), INPUTS[task], tmp_path / "onnx", "--backend", "onnx", "--batch_size", "7")
    for name in os.listdir(tmp_path / "pytorch"):  # the same concept files (decisions), probabilities within float
        if name.endswith((".ast", ".rel", ".con", ".txt")):
            assert filecmp.cmp(tmp_path / "pytorch" / name, tmp_path / "onnx" / name, shallow=False), name
    verified = run_recipe("verify_onnx.py", ["--model_dir", folders[task], "--onnx_dir", export, "--input",
                                             INPUTS[task]])
    assert verified["changed_decisions"] == 0


def test_service_asserts_and_relates_the_concepts_given_with_a_note(serve, assertion_folder, relation_folder,
                                                                   caplog, capfd):
    import httpx

    from shared.deploy.chain import assert_facts, facts_of, relate_facts
    from shared.deploy.concepts import AssertionClassifier, RelationClassifier

    note = f"Patient denies chest pain .\nStarted aspirin for angina and ordered an ecg for {CANARY} ."
    concepts = [{"start": note.index("chest pain"), "end": note.index("chest pain") + 10, "type": "problem"},
                {"start": note.index("aspirin"), "end": note.index("aspirin") + 7, "type": "treatment"},
                {"start": note.index("angina"), "end": note.index("angina") + 6, "type": "problem"},
                {"start": note.index("ecg"), "end": note.index("ecg") + 3, "type": "test"}]
    url = serve("--model_dir", assertion_folder, "--max_items", "4")
    assert httpx.get(f"{url}/health").json()["task"] == "assertion_status"
    answer = httpx.post(f"{url}/predict", json={"text": note, "concepts": concepts}).json()["concepts"]
    assert [c["id"] for c in answer] == ["T1", "T3"]  # problems only
    facts = facts_of(note, concepts)
    assert_facts(AssertionClassifier(assertion_folder), [note], [facts])
    assert [c["assertion"] for c in answer] == [facts[0].assertion, facts[2].assertion]
    assert all(sum(c["probabilities"].values()) == pytest.approx(1.0) for c in answer)

    rel_url = serve("--model_dir", relation_folder)
    relations = httpx.post(f"{rel_url}/predict", json={"text": note, "concepts": concepts}).json()["relations"]
    expected = relate_facts(RelationClassifier(relation_folder), [note], [facts_of(note, concepts)])[0]
    assert relations == [{"type": t, "arg1": a, "arg2": b} for t, a, b in expected]

    far = len(note) + 5
    for body, status, says in [
        ({"text": note}, 400, "needs 'concepts'"),
        ({"text": note, "concepts": concepts * 2}, 413, "at most 4"),
        ({"text": note, "concepts": [{"start": 3, "end": far, "type": "problem"}]}, 400, "character offsets"),
        ({"text": note, "concepts": [{"start": 20, "end": 40, "type": "problem"}]}, 400, "crosses a line break"),
        ({"text": note, "concepts": [{"start": 0, "end": 3}]}, 400, "start, end and type"),
        ({"text": note, "concepts": concepts, "extra": 1}, 400, "unknown field"),
        ({"text": "", "concepts": concepts}, 400, "non-empty string"),
    ]:
        response = httpx.post(f"{url}/predict", json=body)
        assert response.status_code == status and says in response.json()["error"], response.text
        assert CANARY not in response.text
    out, err = capfd.readouterr()
    assert CANARY not in caplog.text + out + err


@pytest.mark.parametrize("case, task, args, expected", [
    ("another task's folder", "assertion_status", lambda f: ["--model_dir", f["relation_extraction"]],
     r".*holds a relation extraction model, not an assertion status one: use recipes/relation_extraction/predict\.py"),
    ("notes without concepts", "assertion_status", lambda f: ["--model_dir", f["assertion_status"], "--input",
                                                              "NOTES"],
     r".*note has no \.con file.*"),
    ("a missing concepts folder", "relation_extraction",
     lambda f: ["--model_dir", f["relation_extraction"], "--concepts_dir", "/nonexistent/concepts"],
     r".*concepts.*does not exist.*"),
    ("a misspelt flag", "relation_extraction", lambda f: ["--model_dir", f["relation_extraction"],
                                                          "--concept_dir", "x"],
     r".*--concept_dir.*--concepts_dir.*"),
])
def test_predict_mistakes_are_one_line_before_anything_is_written(case, task, args, expected, folders, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Denies chest pain .\n", encoding="utf-8")
    argv = [a.replace("NOTES", str(notes)) for a in args(folders)]
    if "--input" not in argv:
        argv += ["--input", str(INPUTS[task])]
    out = tmp_path / "out"
    result = run_cli(task, [*argv, "--output_dir", out], entry="predict")
    assert_one_line(result.returncode, result.stderr, expected, out)


def test_relation_probabilities_rule_out_types_a_pair_cannot_take(relation_folder, tmp_path):
    """i2b2: a (test, problem) pair may only be TeRP, TeCP or none, in predict.py as in the recipe."""
    import csv

    predict("relation_extraction", relation_folder, INPUTS["relation_extraction"], tmp_path / "out")
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    treatment_only = [k for k in rows[0] if k.startswith("prob_Tr")]
    assert treatment_only
    masked = [float(row[k]) for row in rows for k in treatment_only]
    assert np.count_nonzero(np.asarray(masked) == 0.0) > 0  # pairs without a treatment cannot take Tr* types
