"""The NER -> assertion -> relation chain, recipes/pipeline.py and its service: raw notes in, the same concepts,
assertions and relations as each stage's predict.py run through files, in three output formats, from folders or
tables, PyTorch or ONNX; long notes through the NER windows; the models' types checked against each other first;
work per request capped; mistakes one line; nothing of a note logged."""

from __future__ import annotations

import filecmp
import json
import os
import shutil

import pytest

from shared.core.runner import run_recipe
from shared.formats.brat import read_brat
from tests.helpers import ASSERTION_SAMPLE, NER_SAMPLE, RELATION_SAMPLE, assert_one_line, run_cli

CANARY = "zebra-canary-7f3a"


@pytest.fixture(scope="module")
def raw_notes(tmp_path_factory):
    """The assertion sample's test notes as raw text only (no .con, no .ast)."""
    folder = tmp_path_factory.mktemp("raw_notes")
    for name in sorted(os.listdir(ASSERTION_SAMPLE / "test")):
        if name.endswith(".txt"):
            shutil.copy(ASSERTION_SAMPLE / "test" / name, folder / name)
    return folder


def chain(ner, out, notes, *extra):
    return run_recipe("pipeline.py", ["--ner_model", ner, "--input", notes, "--output_dir", out, *map(str, extra)])


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_the_chain_gives_what_each_stage_gives_through_files(chain_ner_folder, assertion_folder, relation_folder,
                                                             raw_notes, tmp_path):
    models = ["--assertion_model", assertion_folder, "--relation_model", relation_folder]
    results = chain(chain_ner_folder, tmp_path / "i2b2", raw_notes, *models, "--output_format", "i2b2")
    assert results["notes"] == len(os.listdir(raw_notes)) and results["concepts"] > 0
    assert results["assertions"] and sum(results["assertions"].values()) == results["concept_types"]["problem"]
    assert sum(results["relations"].values()) > 0  # the tiny relation model finds some
    # the NER stage alone, through its own predict.py: the same concepts
    run_recipe("ner", ["--model_dir", chain_ner_folder, "--input", raw_notes, "--output_dir", tmp_path / "ner"],
               entry="predict")
    # each later stage through its own predict.py on the chain's concepts: the same assertions and relations
    run_recipe("assertion_status", ["--model_dir", assertion_folder, "--input", raw_notes, "--concepts_dir",
                                    tmp_path / "i2b2", "--output_dir", tmp_path / "ast"], entry="predict")
    run_recipe("relation_extraction", ["--model_dir", relation_folder, "--input", raw_notes, "--concepts_dir",
                                       tmp_path / "i2b2", "--output_dir", tmp_path / "rel"], entry="predict")
    for name in sorted(os.listdir(raw_notes)):
        stem = name[:-4]
        assert filecmp.cmp(tmp_path / "i2b2" / f"{stem}.con", tmp_path / "ner" / f"{stem}.con", shallow=False)
        assert filecmp.cmp(tmp_path / "i2b2" / f"{stem}.ast", tmp_path / "ast" / f"{stem}.ast", shallow=False)
        assert filecmp.cmp(tmp_path / "i2b2" / f"{stem}.rel", tmp_path / "rel" / f"{stem}.rel", shallow=False)
        assert filecmp.cmp(tmp_path / "i2b2" / name, raw_notes / name, shallow=False)

    # the same facts as JSON lines and as BRAT
    chain(chain_ner_folder, tmp_path / "jsonl", raw_notes, *models)
    chain(chain_ner_folder, tmp_path / "brat", raw_notes, *models, "--output_format", "brat", "--notes_per_batch", 1)
    notes = read_jsonl(tmp_path / "jsonl" / "notes.jsonl")
    docs = {doc.doc_id: doc for doc in read_brat(tmp_path / "brat")}
    assert [n["note"] for n in notes] == sorted(docs)
    for note in notes:
        doc = docs[note["note"]]
        assert [(e.id, e.type, e.start, e.end, e.text) for e in doc.entities] == [
            (c["id"], c["type"], c["start"], c["end"], c["text"]) for c in note["concepts"]]
        for concept in note["concepts"]:
            assert doc.text[concept["start"]:concept["end"]] == concept["text"]
        attributes = [x for x in doc.items if isinstance(x, str) and x.startswith("A")]
        assert [a.split("\t")[1] for a in attributes] == [f"Assertion {c['id']} {c['assertion']}"
                                                          for c in note["concepts"] if "assertion" in c]
        relations = [x.split("\t")[1] for x in doc.items if isinstance(x, str) and x.startswith("R")]
        assert relations == [f"{r['type']} Arg1:{r['arg1']} Arg2:{r['arg2']}" for r in note["relations"]]


def test_a_table_and_a_long_note_reach_every_stage(chain_ner_folder, assertion_folder, raw_notes, tmp_path):
    """A JSONL table with a text and an id column; a note of one line far longer than the NER window (32 tokens)
    is read in windows to its end."""
    first = (raw_notes / sorted(os.listdir(raw_notes))[0]).read_text(encoding="utf-8").splitlines()[0]
    table = tmp_path / "notes.jsonl"
    rows = [{"note_id": "short", "body": first}, {"note_id": "long", "body": " ".join([first] * 12)}]
    table.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    chain(chain_ner_folder, tmp_path / "out", table, "--assertion_model", assertion_folder, "--text_column", "body",
          "--id_column", "note_id")
    short, long = read_jsonl(tmp_path / "out" / "notes.jsonl")
    assert (short["note"], long["note"]) == ("short", "long") and short["concepts"]
    # every copy of the sentence, the last ones far past the first window, has its concepts, and every problem
    # concept its assertion (the tagger reads each word in context, so the counts per copy may differ slightly)
    size = len(first) + 1
    assert {c["start"] // size for c in long["concepts"]} == set(range(12))
    assert all(("assertion" in c) == (c["type"] == "problem") for c in short["concepts"] + long["concepts"])


def test_an_annotated_i2b2_folder_is_read_as_its_raw_notes(chain_ner_folder, tmp_path):
    """i2b2's txt/ + concept/ layout: the notes of txt/, their annotations not read."""
    results = chain(chain_ner_folder, tmp_path / "out", NER_SAMPLE / "test")
    assert results["notes"] == len(list((NER_SAMPLE / "test" / "txt").glob("*.txt")))


def test_the_onnx_chain_gives_the_pytorch_facts(chain_ner_folder, assertion_folder, relation_folder, raw_notes,
                                                tmp_path):
    exports = {}
    for name, folder, data in [("ner", chain_ner_folder, ASSERTION_SAMPLE / "test"),
                               ("assertion", assertion_folder, ASSERTION_SAMPLE / "test"),
                               ("relation", relation_folder, RELATION_SAMPLE / "i2b2" / "test")]:
        exports[name] = tmp_path / f"{name}_onnx"
        run_recipe("export_onnx.py", ["--model_dir", folder, "--input", data, "--output_dir", exports[name]])
    chain(chain_ner_folder, tmp_path / "pytorch", raw_notes, "--assertion_model", assertion_folder,
          "--relation_model", relation_folder)
    results = chain(exports["ner"], tmp_path / "onnx", raw_notes, "--assertion_model", exports["assertion"],
                    "--relation_model", exports["relation"], "--backend", "onnx")
    assert results["backend"] == "onnx"
    assert read_jsonl(tmp_path / "onnx" / "notes.jsonl") == read_jsonl(tmp_path / "pytorch" / "notes.jsonl")


def test_the_models_types_are_checked_before_any_weights_load(chain_ner_folder, assertion_folder,
                                                              brat_relation_folder, raw_notes, tmp_path):
    out = tmp_path / "out"
    cases = [
        (["--assertion_model", assertion_folder, "--type_map", "problem=disease"],
         r"the assertion model works on problem concepts, but the NER model gives no problem \(it gives disease, "
         r"test, treatment\): rename its types with --type_map NER_TYPE=MODEL_TYPE,\.\.\."),
        (["--type_map", "Disease=problem"], r"--type_map renames Disease, which the NER model does not give .*"),
        (["--type_map", "problem"], r"--type_map: 'problem' is not NER_TYPE=MODEL_TYPE"),
        (["--relation_model", assertion_folder], r".*holds an assertion status model, not a relation extraction "
                                                 r"one.*"),
    ]
    for extra, expected in cases:
        result = run_cli("pipeline.py", ["--ner_model", chain_ner_folder, "--input", raw_notes, "--output_dir", out,
                                         *extra])
        assert_one_line(result.returncode, result.stderr, expected, out)
    # a BRAT relation model pairs the entity types of its training notes: renaming one away is caught too
    result = run_cli("pipeline.py", ["--ner_model", chain_ner_folder, "--relation_model", brat_relation_folder,
                                     "--type_map", "test=lab", "--input", raw_notes, "--output_dir", out])
    assert_one_line(result.returncode, result.stderr, r"the relation model works on problem, test, treatment "
                                                      r"concepts, but the NER model gives no test .*", out)
    results = chain(chain_ner_folder, out, raw_notes, "--relation_model", brat_relation_folder, "--output_format",
                    "brat")
    assert results["notes"] > 0


@pytest.mark.parametrize("case, make, args, expected", [
    ("a single .txt note", lambda d: d / "a.txt", [], r".*a\.txt: give the folder that holds the \.txt notes.*"),
    ("a folder without notes", lambda d: d, [], r".*: no \.txt notes in the folder .*"),
    ("a missing text column", lambda d: d / "t.csv", ["--text_column", "note"], r".*t\.csv: column 'note' not found .*"),
    ("an empty note", lambda d: d / "e.csv", [], r".*e\.csv:3: empty or missing text in column 'text'"),
    ("a repeated id", lambda d: d / "t.csv", ["--id_column", "id"], r".*t\.csv:3: note id 'n1' is not unique \(line 2 has it too\).*"),
    ("a misspelt flag", lambda d: d / "t.csv", ["--output_fromat", "brat"], r".*--output_fromat.*--output_format.*"),
    ("a wrong output format", lambda d: d / "t.csv", ["--output_format", "xml"], r".*xml.*"),
])
def test_mistakes_are_one_line_before_anything_is_written(case, make, args, expected, chain_ner_folder, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("Denies chest pain .\n", encoding="utf-8")
    (data / "t.csv").write_text("id,text\nn1,Denies chest pain .\nn1,Has cough .\n", encoding="utf-8")
    (data / "e.csv").write_text("id,text\nn1,Denies chest pain .\nn2,\n", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    source = make(empty if case == "a folder without notes" else data)
    out = tmp_path / "out"
    result = run_cli("pipeline.py", ["--ner_model", chain_ner_folder, "--input", source, "--output_dir", out, *args])
    assert_one_line(result.returncode, result.stderr, expected, out)


def test_a_reused_output_folder_needs_overwrite_and_no_note_is_logged(chain_ner_folder, assertion_folder, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "n1.txt").write_text(f"Patient denies chest pain and {CANARY} .\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["--ner_model", chain_ner_folder, "--assertion_model", assertion_folder, "--input", notes,
            "--output_dir", out]
    first = run_cli("pipeline.py", args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert CANARY not in first.stdout + first.stderr
    assert CANARY not in (out / "predict_results.json").read_text()
    again = run_cli("pipeline.py", args)
    assert again.returncode == 2 and "--overwrite_output_dir" in again.stderr.strip().splitlines()[-1]
    assert run_cli("pipeline.py", [*args, "--overwrite_output_dir"]).returncode == 0


def test_the_chain_service_answers_notes_and_caps_the_work_of_one_request(serve, chain_ner_folder, assertion_folder,
                                                                          relation_folder, raw_notes, caplog, capfd):
    import httpx

    from shared.deploy.chain import Chain

    note = (raw_notes / sorted(os.listdir(raw_notes))[0]).read_text(encoding="utf-8") + f"{CANARY}\n"
    url = serve("--ner_model", chain_ner_folder, "--assertion_model", assertion_folder, "--relation_model",
                relation_folder, "--max_words", "400", "--max_windows", "40", "--max_pairs", "60")
    health = httpx.get(f"{url}/health").json()
    assert health["task"] == "pipeline" and set(health["labels"]) == {"problem", "test", "treatment"}
    answer = httpx.post(f"{url}/predict", json={"text": note}).json()
    expected = Chain.from_folders(chain_ner_folder, assertion_folder, relation_folder).annotate([note])[0].as_json()
    assert answer == {k: v for k, v in expected.items() if k != "note"} and answer["concepts"]
    many = httpx.post(f"{url}/predict", json={"texts": [note, note]}).json()["results"]
    assert many == [answer, answer]
    one_line = " ".join([note.splitlines()[0]] * 8)  # two problems a copy: 16 on one line, 120 problem pairs
    for body, status, says in [
        ({"text": "chest pain " * 300}, 413, "at most 400 (--max_words)"),
        ({"texts": [note] * 30}, 413, "(--max_"),
        ({"text": one_line}, 413, "(--max_pairs)"),
        ({"text": note, "concepts": []}, 400, "unknown field"),
        ({"texts": []}, 400, "non-empty list"),
    ]:
        response = httpx.post(f"{url}/predict", json=body)
        assert response.status_code == status and says in response.json()["error"], response.text
        assert CANARY not in response.text
    out, err = capfd.readouterr()
    assert CANARY not in caplog.text + out + err
