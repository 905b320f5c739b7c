"""What many tests share: paths, the real assets beside the project, tiny-model corpora and the command line.

Recipes are run in-process with :func:`shared.core.runner.run_recipe` (the one way tests, notebooks and benchmarks call
a recipe) and as a user runs them with :func:`run_cli` (the command line, in a process of its own).
"""

from __future__ import annotations

import glob
import os
import re
import sys
from pathlib import Path

import pytest

from tests import forked_cli

ROOT = Path(__file__).resolve().parents[1]
SHARED_ASSETS = ROOT.parent / "shared"  # real public data and weights beside the project (absent in a user's clone)
NER_SAMPLE = ROOT / "recipes" / "ner" / "sample_data"
TEXT_SAMPLE = ROOT / "recipes" / "text_classification" / "sample_data"
IMAGE_SAMPLE = ROOT / "recipes" / "image_classification" / "sample_data"
ASSERTION_SAMPLE = ROOT / "recipes" / "assertion_status" / "sample_data"
RELATION_SAMPLE = ROOT / "recipes" / "relation_extraction" / "sample_data"

TOY_CORPUS = [
    "patient presents with chest pain and shortness of breath",
    "no evidence of pneumonia on chest x-ray",
    "started on metformin for type 2 diabetes",
    "mri of the brain shows no acute infarct",
    "the patient denies fever , cough or haemoptysis",
    "blood pressure 140/90 , heart rate 88 , oxygen saturation 95%",
    "history of hypertension , hyperlipidaemia and atrial fibrillation",
    "abdominal pain with nausea and vomiting for two days",
    "productive cough , wheeze and reduced peak flow",
    "sudden onset left-sided weakness and slurred speech",
]


def real_asset(*parts: str) -> Path:
    """A path under ../shared, or skip the test when the folder is absent (fresh clones have none)."""
    path = SHARED_ASSETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data/model not available: {path}")
    return path


def run_cli(recipe: str | os.PathLike, args: list[str], timeout: int = 600, entry: str = "train"):
    """Run a recipe as a user would, ``python recipes/<recipe>/train.py ...``: CompletedProcess. The process is a
    fork of a server that has imported torch and transformers once (tests/forked_cli.py): seconds saved a command."""
    from shared.core.runner import recipe_file

    return forked_cli.run([sys.executable, str(recipe_file(recipe, entry)), *map(str, args)], cwd=ROOT,
                          timeout=timeout)


def assert_one_line(status: int, stderr: str, expected: str, out) -> None:
    """Exit status 2, no traceback, the last stderr line ``error: <expected regex>``, and ``out`` never created."""
    assert status == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch("error: " + expected, last), last
    assert not out.exists()  # nothing written, the folder not even created


def run_in_process(task, args, capsys):
    """(exit status, stderr) of a recipe run in-process that is expected to stop with a user error."""
    capsys.readouterr()
    from shared.core.runner import run_recipe

    with pytest.raises(SystemExit) as info:
        run_recipe(task, args)
    return info.value.code, capsys.readouterr().err


def ner_sample_corpus() -> list[str]:
    """Every line of the bundled synthetic notes (the tiny NER tokenizer's training text)."""
    texts = []
    for path in sorted(glob.glob(os.path.join(NER_SAMPLE, "**", "*.txt"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            texts.extend(f.read().split("\n"))
    return texts


def build_tiny_ner_model(out_dir: str | os.PathLike, max_position_embeddings: int = 128) -> str:
    """A randomly initialised 2-layer BERT (hidden 32) + a 300-word WordPiece tokenizer trained on the sample notes:
    the vocabulary is small on purpose, so many words split into several subwords (alignment code paths)."""
    from shared.training.tiny_models import build_tiny_bert

    return str(build_tiny_bert(out_dir, ner_sample_corpus(), vocab_size=300,
                               max_position_embeddings=max_position_embeddings))


# Small runs of every recipe (tests of multi-process runs, model options, ...).
EVAL = ["--per_device_eval_batch_size", "4", "--bootstrap_resamples", "20", "--bf16", "false", "--seed", "3"]


def recipe_case(task, tiny_bert_dir, tmp_path_factory):
    """(arguments that train the reference model, arguments that evaluate + predict a model folder)."""
    if task == "text_classification":
        data = ["--validation_file", str(TEXT_SAMPLE / "validation.csv"), "--test_file", str(TEXT_SAMPLE / "test.csv"),
                "--max_eval_samples", "13", "--max_predict_samples", "13"]
        train = ["--model_name_or_path", str(tiny_bert_dir), "--train_file", str(TEXT_SAMPLE / "train.csv"),
                 "--max_train_samples", "45", "--per_device_train_batch_size", "8", "--num_train_epochs", "1"]
    elif task == "ner":
        model = build_tiny_ner_model(str(tmp_path_factory.mktemp("ner_bert")))
        # 40 training / 16 validation / 21 test sentences (whole notes); 32-subword windows: long ones are split
        data = ["--validation_file", str(NER_SAMPLE / "validation"), "--test_file", str(NER_SAMPLE / "test"),
                "--max_eval_samples", "13", "--max_predict_samples", "13", "--max_seq_length", "32", "--stride", "8"]
        train = ["--model_name_or_path", model, "--train_file", str(NER_SAMPLE / "train"), "--max_train_samples", "40",
                 "--per_device_train_batch_size", "8", "--num_train_epochs", "2", "--learning_rate", "5e-3",
                 "--optim", "adamw_torch"]
    elif task in ("assertion_status", "relation_extraction"):
        sample = ASSERTION_SAMPLE if task == "assertion_status" else RELATION_SAMPLE / "i2b2"
        data = ["--validation_file", str(sample / "validation"), "--test_file", str(sample / "test"),
                "--max_eval_samples", "13", "--max_predict_samples", "13"]
        # the first 64 problem concepts hold every assertion of the evaluated validation concepts
        train = ["--model_name_or_path", str(tiny_bert_dir), "--train_file", str(sample / "train"),
                 "--max_train_samples", "64", "--per_device_train_batch_size", "8", "--num_train_epochs", "1",
                 "--learning_rate", "1e-3"]
    else:
        from shared.training.tiny_models import build_tiny_vit

        model = build_tiny_vit(tmp_path_factory.mktemp("mp_vit"))
        data = ["--validation_dir", str(IMAGE_SAMPLE / "folders" / "validation"), "--test_dir", str(IMAGE_SAMPLE / "folders" / "test"),
                "--max_eval_samples", "13", "--max_predict_samples", "13"]
        train = ["--model_name_or_path", model, "--train_dir", str(IMAGE_SAMPLE / "folders" / "train"),
                 "--per_device_train_batch_size", "8", "--num_train_epochs", "1", "--learning_rate", "1e-3"]
    return train + data + EVAL, data + EVAL


def ner_corpora(root) -> dict[str, dict[str, str]]:
    """The sample notes (a few of them) in each format: i2b2 folders, BRAT folders, CoNLL and JSON lines files under
    ``root``: ``{split: {format: path}}``."""
    import json
    import shutil

    from shared.formats.i2b2 import read_i2b2

    root = Path(root)
    out = {}
    for split, n in (("train", 8), ("validation", 2), ("test", 2)):
        notes = read_i2b2(os.path.join(NER_SAMPLE, split))[:n]
        i2b2_dir = root / "i2b2" / split
        brat_dir = root / "brat" / split
        os.makedirs(i2b2_dir)
        os.makedirs(brat_dir)
        conll_lines, json_lines = [], []
        for note in notes:
            shutil.copy(note.txt_path, i2b2_dir)
            shutil.copy(note.con_path, i2b2_dir)
            # BRAT: the same text, concepts as character offsets
            starts, pos = [], 0
            for line in note.text.split("\n"):
                offs, p = [], 0
                for tok in line.split():
                    p = line.index(tok, p)
                    offs.append(pos + p)
                    p += len(tok)
                starts.append(offs)
                pos += len(line) + 1
            ann = []
            for k, c in enumerate(note.concepts, start=1):
                s = starts[c.line - 1][c.start]
                e = starts[c.line - 1][c.end] + len(note.lines[c.line - 1][c.end])
                ann.append(f"T{k}\t{c.type} {s} {e}\t{note.text[s:e]}")
            (brat_dir / f"{note.doc_id}.txt").write_text(note.text)
            (brat_dir / f"{note.doc_id}.ann").write_text("".join(a + "\n" for a in ann))
            for toks, tags in zip(note.lines, note.line_tags()):
                if toks:
                    conll_lines += [f"{t}\t{g}" for t, g in zip(toks, tags)] + [""]
                    json_lines.append(json.dumps({"tokens": toks, "ner_tags": tags}))
        os.makedirs(root / "conll", exist_ok=True)
        os.makedirs(root / "json", exist_ok=True)
        (root / "conll" / f"{split}.tsv").write_text("\n".join(conll_lines) + "\n")
        (root / "json" / f"{split}.jsonl").write_text("\n".join(json_lines) + "\n")
        out[split] = {"i2b2": str(i2b2_dir), "brat": str(brat_dir), "conll": str(root / "conll" / f"{split}.tsv"),
                      "json": str(root / "json" / f"{split}.jsonl")}
    return out
