"""End-to-end runs of recipes/assertion_status/train.py with a tiny BERT on the bundled synthetic notes: outputs,
.ast files written back, a folder of concepts without assertions predicted (the NER recipe's output), the trained
folder re-evaluated to the same scores, and bad input stopped with one line before training."""

from __future__ import annotations

import glob
import json
import shutil

import pytest

from shared.concepts.data import read_assertion_split
from shared.concepts.i2b2 import parse_ast
from shared.core.runner import run_recipe
from shared.formats.i2b2 import read_i2b2
from shared.training.tiny_models import build_tiny_bert
from tests.helpers import ASSERTION_SAMPLE, assert_one_line, run_cli, run_in_process

SPLITS = {split: str(ASSERTION_SAMPLE / split) for split in ("train", "validation", "test")}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    corpus = [open(p).read() for p in sorted(glob.glob(str(ASSERTION_SAMPLE / "*" / "*.txt")))]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_assertion_bert"), corpus)


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("assertion") / "out"
    results = run_recipe("assertion_status", [
        "--model_name_or_path", tiny_model, "--output_dir", str(out), "--train_file", SPLITS["train"],
        "--validation_file", SPLITS["validation"], "--test_file", SPLITS["test"], "--do_train", "--do_eval",
        "--do_predict", "--num_train_epochs", "2", "--learning_rate", "1e-3", "--bootstrap_resamples", "20",
        "--freeze_layers", "0", "--seed", "0"])
    return out, results


def test_outputs_and_ast_files_written_back(trained):
    out, results = trained
    test = read_assertion_split(SPLITS["test"])
    assert results["test_samples"] == len(test) and results["eval_samples"] > 0
    for key in ("test_accuracy", "test_macro_f1", "test_micro_f1", "test_macro_f1_ci_low", "eval_macro_f1"):
        assert 0.0 <= results[key] <= 1.0, key
    report = json.loads((out / "test_report.json").read_text())
    assert "present" in json.dumps(report) and "absent" in json.dumps(report)
    rows = (out / "test_predictions.csv").read_text().splitlines()
    assert len(rows) == len(test) + 1 and rows[0].startswith("row,note,concept,label,prediction,prob_present")
    written = read_i2b2(out / "test_predictions")
    assert [n.doc_id for n in written] == [n.doc_id for n in test.notes]
    predicted = [(note.doc_id, a) for note in written
                 for a in parse_ast(str(out / "test_predictions" / f"{note.doc_id}.ast"), note)]
    with open(out / "test_predictions.csv") as f:
        cells = [line.split(",") for line in f.read().splitlines()[1:]]
    # one .ast line per problem concept, in order, and the table says which note and tokens each row is
    assert [(doc, f"{a.concept.line}:{a.concept.start}-{a.concept.end}", a.value) for doc, a in predicted] == [
        (c[1], c[2], c[4]) for c in cells]
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    assert {"[E]", "[/E]"} <= {t["content"] for t in tokenizer["added_tokens"]}


def test_trained_folder_re_evaluates_and_predicts_concepts_without_assertions(trained, tmp_path):
    out, results = trained
    again = run_recipe("assertion_status", ["--model_name_or_path", str(out), "--output_dir", str(tmp_path / "eval"),
                                            "--test_file", SPLITS["test"], "--do_predict",
                                            "--bootstrap_resamples", "20"])
    assert again["test_macro_f1"] == pytest.approx(results["test_macro_f1"], abs=1e-9)
    # the NER recipe's output: notes with .con files and no .ast -> every problem predicted, nothing scored
    concepts_only = tmp_path / "ner_predictions"
    concepts_only.mkdir()
    for path in glob.glob(f"{SPLITS['test']}/*.txt") + glob.glob(f"{SPLITS['test']}/*.con"):
        shutil.copy(path, concepts_only)
    predicted = run_recipe("assertion_status", ["--model_name_or_path", str(out), "--output_dir",
                                                str(tmp_path / "pred"), "--test_file", str(concepts_only),
                                                "--do_predict"])
    assert "test_macro_f1" not in predicted
    # --test_concepts_dir: the notes from one folder, their concepts from another (the NER recipe's .con files)
    predicted_con = tmp_path / "ner_out" / "test_predictions"
    predicted_con.mkdir(parents=True)
    for path in glob.glob(f"{SPLITS['test']}/*.con"):
        shutil.copy(path, predicted_con)
    run_recipe("assertion_status", ["--model_name_or_path", str(out), "--output_dir", str(tmp_path / "chained"),
                                    "--test_file", SPLITS["test"], "--test_concepts_dir", str(predicted_con),
                                    "--do_predict"])
    assert ((tmp_path / "chained" / "test_predictions.csv").read_text()
            == (tmp_path / "pred" / "test_predictions.csv").read_text())
    assert (tmp_path / "pred" / "test_predictions.csv").read_text().splitlines()[1:] == [
        ",".join(line.split(",")[:3] + line.split(",")[4:]) for line in  # without the label column
        (tmp_path / "eval" / "test_predictions.csv").read_text().splitlines()[1:]]


def bad_copy(tmp_path, note, suffix, edit):
    data = tmp_path / "train"
    shutil.copytree(SPLITS["train"], data)
    path = data / f"{note}{suffix}"
    path.write_text(edit(path.read_text()))
    return data


@pytest.mark.parametrize("case,suffix,edit,message", [
    ("concept absent from .con", ".ast", lambda t: t + 'c="fever" 1:0 1:0||t="problem"||a="present"\n',
     r".*/train_note_00\.ast:\d+: the concept at 1:0-1:0 is not a concept of the note's \.con file"),
    ("assertion on a test", ".ast", lambda t: t.replace('||t="problem"||a=', '||t="test"||a=', 1),
     r".*/train_note_00\.ast:1: the assertion says t=\"test\" but the \.con concept there is a problem"),
    ("unknown assertion value", ".ast", lambda t: t.replace('a="', 'a="maybe_', 1),
     r".*/train_note_00\.ast:1: unknown assertion 'maybe_.*' \(known: present, absent, .*\)"),
    ("problem without assertion", ".ast", lambda t: "\n".join(t.splitlines()[1:]) + "\n",
     r".*/train_note_00\.con:\d+: problem concept has no assertion in .*/train_note_00\.ast"),
])
def test_bad_input_is_one_line_before_training(tiny_model, tmp_path, capsys, case, suffix, edit, message):
    data = bad_copy(tmp_path, "train_note_00", suffix, edit)
    args = ["--model_name_or_path", tiny_model, "--train_file", str(data), "--output_dir", str(tmp_path / "out"),
            "--do_train"]
    if case == "concept absent from .con":  # through the real command line once
        proc = run_cli("assertion_status", args)
        status, stderr = proc.returncode, proc.stderr
    else:
        status, stderr = run_in_process("assertion_status", args, capsys)
    assert_one_line(status, stderr, message, tmp_path / "out")
