"""Bad input, across the three recipes (issue #6): one clear line, before training, nothing half-written.

Every case is run the way a user meets it: the recipe's command line, whose ``main_guard`` turns a ``DataError``
into ``error: <file>:<line>: <what is wrong>`` on stderr and exit status 2. Most cases call ``main()`` in-process
(the same guard, the same stderr line; a subprocess costs seconds of imports each); the cases marked ``CLI`` run
``train.py`` as a subprocess. Every case checks: exit status 2, the last stderr line is exactly the expected one
(file and line named where they apply), no traceback, ``Trainer.train`` never called, and ``--output_dir`` absent.

The table in docs/bad-input.md lists these lines. Format-level details of each reader are
tested beside the readers (tests/test_formats_*.py, tests/test_shared_utils.py) and in the recipe tests.
"""

from __future__ import annotations

import csv
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import transformers
from PIL import Image

from shared.core.runner import run_recipe
from tests.helpers import run_cli

TASKS = ("text_classification", "ner", "image_classification")


# ------------------------------------------------------------------------------------------------ builders
def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


TEXT_ROWS = [("chest pain", "cardiac"), ("cough", "resp"), ("palpitations", "cardiac"), ("wheeze", "resp")]
CONLL = "Chest\tB-problem\npain\tI-problem\n\nfever\tB-problem\n.\tO\n"


def pickled_only(model: Path, d: Path) -> Path:
    """A copy of ``model`` whose only weights are a pickle that, if ever unpickled, creates ``d/UNPICKLED``."""
    folder = d / "pickled"
    shutil.copytree(model, folder)
    for name in os.listdir(folder):
        if name.endswith(".safetensors"):
            os.remove(folder / name)

    class Touch:
        def __reduce__(self):
            return Path.touch, (d / "UNPICKLED",)

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Touch()))
    return folder


def needs_remote_code(model: Path, d: Path) -> Path:
    """A copy of ``model`` whose config names custom code (auto_map) that, if ever imported, creates ``d/RAN``."""
    import json

    folder = d / "remote"
    shutil.copytree(model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "custom_clinical"  # an architecture transformers does not know: only the code can load it
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_custom.py").write_text(
        f"from pathlib import Path\nPath({str(d / 'RAN')!r}).touch()\n"
        "from transformers import PretrainedConfig\nclass CustomConfig(PretrainedConfig):\n    model_type = 'custom_clinical'\n"
    )
    return folder


def model_for(case: str, model, d: Path):
    """The model folder a case runs with: the tiny model, or a broken variant of it for the model cases."""
    if case == "missing_model":
        return d / "no_such_model"
    if case == "pickle_weights":
        return pickled_only(model, d)
    if case == "remote_code":
        return needs_remote_code(model, d)
    return model


def text_args(d: Path, models, case: str) -> list[str]:
    train = write_csv(d / "train.csv", TEXT_ROWS)
    validation = write_csv(d / "validation.csv", TEXT_ROWS)
    test = write_csv(d / "test.csv", TEXT_ROWS)
    model = model_for(case, models["bert"], d)
    extra = []
    if case == "misspelt_column":
        extra = ["--text_column", "txt"]
    elif case == "empty_split":
        test.write_bytes(b"")
    elif case == "label_only_in_test":
        write_csv(test, [("cough", "resp"), ("oliguria", "renal")])
    elif case == "non_utf8":
        validation.write_bytes(b"text,label\nchest pain,cardiac\nfi\xe8vre,resp\n")
    elif case == "pair_too_long":  # --long_text chunk repeats the first text in every window: it must fit
        rows = [("pain ?", text, label) for text, label in TEXT_ROWS]
        rows[2] = (" ".join(["palpitations"] * 20), *TEXT_ROWS[2])
        write_csv(validation, rows, header=("question", "text", "label"))
        for path in (train, test):
            write_csv(path, rows[:2] + rows[3:], header=("question", "text", "label"))
        extra = ["--text_column", "question", "--text_pair_column", "text", "--max_seq_length", "16",
                 "--long_text", "chunk"]
    return ["--model_name_or_path", str(model), "--train_file", str(train), "--validation_file", str(validation),
            "--test_file", str(test), "--do_train", "--do_eval", "--do_predict", *extra]


def ner_args(d: Path, models, case: str) -> list[str]:
    train, validation = d / "train.tsv", d / "validation.tsv"
    train.write_text(CONLL)
    validation.write_text(CONLL)
    model = model_for(case, models["bert"], d)
    extra = []
    if case == "misspelt_column":
        train = d / "train.jsonl"
        train.write_text('{"tokens": ["Chest", "pain"], "ner_tags": ["B-problem", "I-problem"]}\n')
        extra = ["--tokens_column", "words"]
    elif case == "empty_split":
        validation.write_text("")
    elif case == "label_only_in_eval":
        validation.write_text("Chest\tB-problem\npain\tI-problem\n\naspirin\tB-drug\n")
    elif case == "malformed_conll":
        train.write_text("Chest\tB-problem\npain\tI-problem\textra\n")
    elif case == "con_offset":
        train = d / "notes"
        train.mkdir()
        (train / "n.txt").write_text("Fever and chills .\n")
        (train / "n.con").write_text('c="chills" 1:2 1:9||t="problem"\n')
    elif case == "non_utf8":
        train.write_bytes(b"Chest\tB-problem\nfi\xe8vre\tI-problem\n")
    elif case == "non_utf8_json":
        train = d / "train.jsonl"
        train.write_bytes(b'{"tokens": ["Chest"], "ner_tags": ["B-problem"]}\n{"tokens": ["fi\xe8vre"], "ner_tags": ["O"]}\n')
    return ["--model_name_or_path", str(model), "--train_file", str(train), "--validation_file", str(validation),
            "--do_train", "--do_eval", *extra]


def image_args(d: Path, models, case: str) -> list[str]:
    rng = np.random.default_rng(0)
    (d / "img").mkdir()
    rows = []
    for i, label in enumerate(["normal", "opacity"] * 2):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / "img" / f"{i}.png")
        rows.append((f"img/{i}.png", label))
    train = write_csv(d / "train.csv", rows, header=("image", "label"))
    validation = write_csv(d / "validation.csv", rows, header=("image", "label"))
    model = model_for(case, models["vit"], d)
    split_args = ["--train_file", str(train), "--validation_file", str(validation)]
    if case == "misspelt_column":
        write_csv(train, rows, header=("path", "label"))
    elif case == "empty_split":
        (d / "validation").mkdir()
        split_args = ["--train_file", str(train), "--validation_dir", str(d / "validation")]
    elif case == "label_only_in_eval":
        write_csv(validation, rows[:1] + [("img/1.png", "effusion")], header=("image", "label"))
    elif case == "corrupt_image":
        (d / "img" / "bad.png").write_bytes(b"not an image at all")
        write_csv(train, rows[:1] + [("img/bad.png", "opacity")] + rows[1:], header=("image", "label"))
    elif case == "non_utf8":
        train.write_bytes(b"image,label\nimg/0.png,normal\nimg/1.png,opaci\xe9\n")
    return ["--model_name_or_path", str(model), *split_args, "--do_train", "--do_eval"]


BUILDERS = {"text_classification": text_args, "ner": ner_args, "image_classification": image_args}

NO_WEIGHTS = ("{d}/pickled: model folder has no safetensors weights; convert it, or pass --allow_pickle_weights if "
              "you trust the pickled .bin file")
REMOTE = ("{d}/remote: the model's config.json asks to run Python code shipped with it (auto_map); pass "
          "--trust_remote_code only if you trust that code")

# (recipe, case, how it runs, the exact last stderr line; {d} is the case's data folder, a regex-escaped path)
CASES = [
    ("text_classification", "misspelt_column", "in-process", r"{d}/train\.csv: column 'txt' not found \(columns: text, label\)"),
    ("text_classification", "empty_split", "in-process", r"{d}/test\.csv: file is empty"),
    ("text_classification", "label_only_in_test", "in-process",
     r"{d}/test\.csv:3: label 'renal' does not occur in the training data \(known: cardiac, resp\)"),
    ("text_classification", "non_utf8", "in-process",
     r"{d}/validation\.csv:3: not valid UTF-8 \(byte 2 of the line\); re-save the file as UTF-8 "
     r"or pass its --encoding \(e\.g\. cp1252 for Excel on Windows\)"),
    ("text_classification", "pair_too_long", "in-process",
     r"{d}/validation\.csv:4: the 'question' text takes \d+ tokens, which leaves no room for its pair in a "
     r"--max_seq_length 16 window with --stride 4 \(--long_text chunk repeats it whole in every window\): raise "
     r"--max_seq_length or lower --stride"),
    ("text_classification", "missing_model", "CLI", r"{d}/no_such_model: model folder does not exist"),
    ("text_classification", "pickle_weights", "in-process", re.escape(NO_WEIGHTS).replace(r"\{d\}", "{d}")),
    ("text_classification", "remote_code", "CLI", re.escape(REMOTE).replace(r"\{d\}", "{d}")),
    ("ner", "misspelt_column", "in-process", r"{d}/train\.jsonl:1: record has no 'words' field \(set --tokens_column\)"),
    ("ner", "empty_split", "in-process", r"{d}/validation\.tsv: no sentences found"),
    ("ner", "label_only_in_eval", "in-process",
     r"{d}/validation\.tsv:4: entity type 'drug' does not occur in the training data \(known: problem\)"),
    ("ner", "malformed_conll", "CLI", r"{d}/train\.tsv:2: expected 2 columns like the first token line, found 3"),
    ("ner", "con_offset", "in-process", r"{d}/notes/n\.con:1: token 9 is outside line 1 \(4 tokens\)"),
    ("ner", "non_utf8", "in-process", r"{d}/train\.tsv:2: not valid UTF-8 \(byte 18\); re-save the file as UTF-8"),
    ("ner", "non_utf8_json", "in-process",
     r"{d}/train\.jsonl:2: not valid UTF-8 \(byte 64\); re-save the file as UTF-8"),
    ("ner", "missing_model", "in-process", r"{d}/no_such_model: model folder does not exist"),
    ("ner", "pickle_weights", "in-process", re.escape(NO_WEIGHTS).replace(r"\{d\}", "{d}")),
    ("ner", "remote_code", "in-process", re.escape(REMOTE).replace(r"\{d\}", "{d}")),
    ("image_classification", "misspelt_column", "in-process",
     r"{d}/train\.csv: column 'image' not found \(columns: path, label\)"),
    ("image_classification", "empty_split", "in-process",
     r"{d}/validation: no class subfolders \(expected <folder>/<class>/<image>\)"),
    ("image_classification", "label_only_in_eval", "in-process",
     r"{d}/validation\.csv:3: label 'effusion' does not occur in the training data \(known: normal, opacity\)"),
    ("image_classification", "corrupt_image", "CLI",
     r"{d}/train\.csv:3: cannot read image '{d}/img/bad\.png': cannot identify image file .*"),
    ("image_classification", "non_utf8", "in-process",
     r"{d}/train\.csv:3: not valid UTF-8 \(byte 15 of the line\); re-save the file as UTF-8 "
     r"or pass its --encoding \(e\.g\. cp1252 for Excel on Windows\)"),
    ("image_classification", "missing_model", "in-process", r"{d}/no_such_model: model folder does not exist"),
    ("image_classification", "pickle_weights", "in-process", re.escape(NO_WEIGHTS).replace(r"\{d\}", "{d}")),
    ("image_classification", "remote_code", "in-process", re.escape(REMOTE).replace(r"\{d\}", "{d}")),
]


def run_case(task, args, how, capsys, monkeypatch) -> tuple[int, str]:
    """(exit status, stderr) of one run, in-process or as a subprocess."""
    if how == "CLI":
        proc = run_cli(task, args, timeout=180)
        return proc.returncode, proc.stderr

    def no_training(*_, **__):
        raise AssertionError("Trainer.train called although the input is bad")

    monkeypatch.setattr(transformers.Trainer, "train", no_training)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(task, args)  # main_guard: the one error line on stderr, exit status 2
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("task, case, how, expected", CASES, ids=[f"{t.split('_')[0]}-{c}" for t, c, _, _ in CASES])
def test_bad_input_is_one_clear_line_before_training(task, case, how, expected, tiny_bert_dir, tiny_vit,
                                                     tmp_path, capsys, monkeypatch):
    d = tmp_path / "data"
    d.mkdir()
    out = tmp_path / "out"
    args = BUILDERS[task](d, {"bert": tiny_bert_dir, "vit": tiny_vit}, case) + ["--output_dir", str(out)]
    status, stderr = run_case(task, args, how, capsys, monkeypatch)
    assert status == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    pattern = expected.replace("{d}", re.escape(str(d)))
    assert re.fullmatch("error: " + pattern, last), last
    assert not out.exists(), sorted(os.listdir(out))  # nothing half-written: the folder is not even created
    assert not (d / "UNPICKLED").exists() and not (d / "RAN").exists()  # no pickle loaded, no model code run
