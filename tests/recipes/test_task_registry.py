"""One task, one path: every folder a recipe or export_onnx.py writes records its task and the inputs it was trained
on (``shared/tasks.py``), and every deployment tool reads them from there, never guessing from the model's head.
Each finding of the issue that introduced the registry is checked here through the real command line."""

import csv
import json
import os
import shutil

import pytest

from shared.core.runner import run_recipe
from shared.tasks import RECORD_KEY, TASKS, folder_record
from tests.helpers import ASSERTION_SAMPLE, IMAGE_SAMPLE, NER_SAMPLE, RELATION_SAMPLE, ROOT, TEXT_SAMPLE
from tests.helpers import assert_one_line
from tests.helpers import build_tiny_ner_model, recipe_case, run_cli

QUIET = ["--bf16", "false", "--bootstrap_resamples", "0"]


def config_of(folder) -> dict:
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def cli_ok(recipe, args, entry="train"):
    done = run_cli(recipe, args, entry=entry)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# ---------------------------------------------------------------------------------------------------- the registry
def test_the_registry_names_every_recipe_and_each_task_has_its_predict_py():
    recipes = {p.parent.name for p in (ROOT / "recipes").glob("*/train.py")}
    assert recipes == set(TASKS)
    for task in TASKS.values():
        assert (ROOT / task.recipe / "predict.py").is_file(), task.name
        assert task.predictor_class().task == task.name
        assert set(task.inputs) >= {f.name for f in __import__("dataclasses").fields(task.input_arguments_class())
                                    if f.name not in ("data_format",)} - {"skip_bad_images", "write_image_paths",
                                                                          "concepts_dir", "delimiter", "encoding",
                                                                          "tta"}
    # --delimiter / --encoding describe the input file given, never what the model was trained on, and --tta is how
    # to predict (its augmentation is the folder's own, saved apart): not recorded


@pytest.mark.parametrize("task", list(TASKS))
def test_every_recipe_records_its_task_in_the_folder_it_trains(task, tiny_bert_dir, tmp_path_factory, tmp_path):
    train, _ = recipe_case(task, tiny_bert_dir, tmp_path_factory)
    run_recipe(task, [*train, "--output_dir", str(tmp_path / "out"), "--do_train"])
    record = folder_record(str(tmp_path / "out"))
    assert record.task.name == task and set(record.inputs) == set(TASKS[task].inputs)
    if task == "ner":
        assert record.inputs["data_format"] == "i2b2"  # what "auto" found, not "auto"
    if task in ("assertion_status", "relation_extraction"):
        assert record.inputs["markers"] and record.inputs["data_format"] == "i2b2"


# ---------------------------------------------------------------------------------------------------- text pairs
def pairs_table(source, target, n=None):
    """The sample notes as (section, text) pairs: a section name per note, the note as the pair's second text."""
    with open(source, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:n]
    sections = ["history", "examination", "plan"]
    with open(target, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["section", "text", "label"])
        for k, row in enumerate(rows):
            writer.writerow([sections[k % 3], row["text"], row["label"]])
    return target


@pytest.fixture(scope="module")
def pairs_folder(tiny_bert_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    train = pairs_table(TEXT_SAMPLE / "train.csv", root / "train.csv", 60)
    out = root / "model"
    run_recipe("text_classification", [
        "--model_name_or_path", tiny_bert_dir, "--train_file", train, "--output_dir", out, "--do_train",
        "--text_column", "section", "--text_pair_column", "text", "--num_train_epochs", "1", "--max_seq_length", "32",
        *QUIET])
    return root, out


def test_a_model_trained_on_pairs_predicts_pairs_with_no_input_flags(pairs_folder, tmp_path):
    root, model = pairs_folder
    inputs = config_of(model)[RECORD_KEY]["inputs"]
    assert inputs["text_column"] == "section" and inputs["text_pair_column"] == "text"
    test = pairs_table(TEXT_SAMPLE / "test.csv", tmp_path / "test.csv")
    cli_ok("text_classification", ["--model_name_or_path", model, "--test_file", test, "--output_dir",
                                    tmp_path / "do_predict", "--do_predict", "--text_column", "section",
                                    "--text_pair_column", "text", *QUIET])
    cli_ok("text_classification", ["--model_dir", model, "--input", test, "--output_dir", tmp_path / "predict"],
           entry="predict")
    assert ((tmp_path / "predict" / "predictions.csv").read_bytes()
            == (tmp_path / "do_predict" / "test_predictions.csv").read_bytes())


def test_a_pair_model_refuses_a_table_without_its_second_column(pairs_folder, tmp_path):
    _, model = pairs_folder
    single = tmp_path / "single.csv"
    single.write_text("section,label\nhistory,cardiology\n")
    out = tmp_path / "out"
    done = run_cli("text_classification", ["--model_dir", model, "--input", single, "--output_dir", out],
                   entry="predict")
    assert_one_line(done.returncode, done.stderr, r".*single\.csv: .*'text'.*", out)


def test_the_service_of_a_pair_model_asks_for_the_second_text(pairs_folder):
    from fastapi.testclient import TestClient

    from shared.core.runner import load_recipe

    _, model = pairs_folder
    app, _ = load_recipe("serve.py").build_app(["--model_dir", str(model)])
    client = TestClient(app)
    alone = client.post("/predict", json={"text": "history"})
    assert alone.status_code == 400 and "trained on pairs (section + text)" in alone.json()["error"]
    pair = client.post("/predict", json={"text": "history", "text_pair": "chest pain on exertion"})
    assert pair.status_code == 200 and pair.json()["prediction"]


# ---------------------------------------------------------------------------------------------------- other tasks
@pytest.fixture(scope="module")
def assertion_folder(tiny_bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("assertion") / "model"
    run_recipe("assertion_status", [
        "--model_name_or_path", tiny_bert_dir, "--train_file", ASSERTION_SAMPLE / "train", "--max_train_samples",
        "32", "--output_dir", out, "--do_train", "--num_train_epochs", "1", *QUIET])
    return out


def test_a_folder_of_another_task_is_refused_in_one_line_naming_where_it_predicts(assertion_folder, tmp_path):
    out = tmp_path / "out"
    done = run_cli("text_classification", ["--model_dir", assertion_folder, "--input", TEXT_SAMPLE / "test.csv",
                                           "--output_dir", out], entry="predict")
    assert_one_line(done.returncode, done.stderr, r".*/model: this folder holds an assertion status model, not a "
                                                  r"text classification one: use recipes/assertion_status/predict\.py",
                    out)
    done = run_cli("relation_extraction", ["--model_dir", assertion_folder, "--input", ASSERTION_SAMPLE / "test",
                                           "--output_dir", out], entry="predict")
    assert_one_line(done.returncode, done.stderr, r".*/model: this folder holds an assertion status model, not a "
                                                  r"relation extraction one: use recipes/assertion_status/predict\.py",
                    out)


def test_a_folder_without_a_task_record_gets_one_line_and_upgrades_by_hand(pairs_folder, tmp_path):
    _, model = pairs_folder
    old = tmp_path / "old"
    shutil.copytree(model, old)
    config = config_of(old)
    del config[RECORD_KEY]
    (old / "config.json").write_text(json.dumps(config))
    test = pairs_table(TEXT_SAMPLE / "test.csv", tmp_path / "test.csv", 5)
    out = tmp_path / "out"
    done = run_cli("text_classification", ["--model_dir", old, "--input", test, "--output_dir", out], entry="predict")
    assert_one_line(done.returncode, done.stderr, r".*/old: config\.json records no task .*add \"recipe\": "
                                                  r"\{\"task\": \"<text_classification\|ner\|.*>\"\} to its "
                                                  r"config\.json", out)
    # the upgrade the line names: the task, and here the pair columns it was trained with
    config[RECORD_KEY] = {"task": "text_classification", "inputs": {"text_column": "section",
                                                                    "text_pair_column": "text"}}
    (old / "config.json").write_text(json.dumps(config))
    cli_ok("text_classification", ["--model_dir", old, "--input", test, "--output_dir", out], entry="predict")
    assert (out / "predictions.csv").is_file()


# ---------------------------------------------------------------------------------------------------- NER raw notes
@pytest.fixture(scope="module")
def i2b2_tagger(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner_i2b2")
    model = build_tiny_ner_model(root / "tiny")
    out = root / "model"
    run_recipe("ner", ["--model_name_or_path", model, "--train_file", NER_SAMPLE / "train", "--max_train_samples",
                       "20", "--output_dir", out, "--do_train", "--num_train_epochs", "1", "--max_seq_length", "32",
                       *QUIET])
    return out


def test_an_i2b2_tagger_reads_a_folder_of_raw_notes_as_i2b2(i2b2_tagger, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in sorted(os.listdir(NER_SAMPLE / "test" / "txt"))[:3]:  # the notes alone, without their concept/
        shutil.copy(NER_SAMPLE / "test" / "txt" / name, raw)
    cli_ok("ner", ["--model_dir", i2b2_tagger, "--input", raw, "--output_dir", tmp_path / "from_raw"], entry="predict")
    cli_ok("ner", ["--model_dir", i2b2_tagger, "--input", NER_SAMPLE / "test", "--output_dir", tmp_path / "gold"],
           entry="predict")
    written = sorted(p.name for p in (tmp_path / "from_raw").rglob("*.con"))
    assert written and written == [n[:-4] + ".con" for n in sorted(os.listdir(raw))]
    for name in written:  # the same notes give the same concepts, with or without gold files beside them
        assert (next((tmp_path / "from_raw").rglob(name)).read_text()
                == next((tmp_path / "gold").rglob(name)).read_text())
    one = next(raw.iterdir())  # a single raw note is not taken for a CoNLL file
    out = tmp_path / "one"
    done = run_cli("ner", ["--model_dir", i2b2_tagger, "--input", one, "--output_dir", out], entry="predict")
    assert_one_line(done.returncode, done.stderr, r".*\.txt: a \.txt file without annotations: give the folder of "
                                                  r"the raw notes \(read as i2b2, as the model was trained\).*", out)


# ---------------------------------------------------------------------------------------------------- LoRA export
def lora_run(task, tiny_bert_dir, tiny_vit, root):
    if task == "text_classification":
        model, data = tiny_bert_dir, ["--train_file", TEXT_SAMPLE / "train.csv", "--max_train_samples", "40"]
        check = TEXT_SAMPLE / "validation.csv"
    elif task == "ner":
        model = build_tiny_ner_model(root / "tiny")
        data = ["--train_file", NER_SAMPLE / "train", "--max_train_samples", "20", "--max_seq_length", "32"]
        check = NER_SAMPLE / "validation"
    elif task == "relation_extraction":  # the marker rows travel in the adapter, then in the graph
        model, data = tiny_bert_dir, ["--train_file", RELATION_SAMPLE / "i2b2" / "train", "--max_train_samples", "80"]
        check = RELATION_SAMPLE / "i2b2" / "validation"
    else:
        model, data = tiny_vit, ["--train_dir", IMAGE_SAMPLE / "folders" / "train"]
        check = IMAGE_SAMPLE / "folders" / "validation"
    out = root / "lora"
    run_recipe(task, ["--model_name_or_path", model, *data, "--output_dir", out, "--do_train", "--use_lora",
                      "--num_train_epochs", "1", "--learning_rate", "1e-3", *QUIET])
    return out, check


@pytest.mark.slow
@pytest.mark.parametrize("task", ["text_classification", "ner", "image_classification", "relation_extraction"])
def test_a_lora_adapter_folder_exports_and_predicts_with_onnx(task, tiny_bert_dir, tiny_vit, tmp_path):
    adapter, check = lora_run(task, tiny_bert_dir, tiny_vit, tmp_path)
    assert (adapter / "adapter_config.json").is_file()
    done = cli_ok("export_onnx.py", ["--model_dir", adapter, "--input", check, "--output_dir", tmp_path / "onnx"])
    assert ".hidden" not in done.stderr and "staging" not in done.stderr
    assert folder_record(str(tmp_path / "onnx")).task.name == task
    for backend, model in (("pytorch", adapter), ("onnx", tmp_path / "onnx")):
        cli_ok(task, ["--model_dir", model, "--backend", backend, "--input", check, "--output_dir",
                      tmp_path / f"predict_{backend}"], entry="predict")
    results = {b: json.loads((tmp_path / f"predict_{b}" / "predict_results.json").read_text())
               for b in ("pytorch", "onnx")}
    assert results["onnx"]["backend"] == "onnx" and results["pytorch"]["examples"] == results["onnx"]["examples"]
    if task == "ner":  # the written files: the same entities
        assert ({p.name: p.read_text() for p in (tmp_path / "predict_pytorch").rglob("*.con")}
                == {p.name: p.read_text() for p in (tmp_path / "predict_onnx").rglob("*.con")})
    else:
        with open(tmp_path / "predict_pytorch" / "predictions.csv") as a, \
                open(tmp_path / "predict_onnx" / "predictions.csv") as b:
            assert [r["prediction"] for r in csv.DictReader(a)] == [r["prediction"] for r in csv.DictReader(b)]


# ---------------------------------------------------------------------------------------------------- one path
def spy(monkeypatch, owners, name, record):
    """Wrap ``name`` in each module of ``owners`` so that every result it returns is appended to ``record``."""
    for owner in owners:
        real = getattr(owner, name)

        def wrapped(*args, _real=real, **kwargs):
            result = _real(*args, **kwargs)
            record.append(result)
            return result
        monkeypatch.setattr(owner, name, wrapped)


@pytest.mark.parametrize("task", ["text_pairs", "ner_i2b2", "image_table"])
def test_the_predictor_encodes_a_file_exactly_as_the_recipes_evaluation_does(task, pairs_folder, i2b2_tagger,
                                                                             tiny_vit, monkeypatch, tmp_path):
    """The model inputs built by ``train.py --do_predict`` and by ``predict.py`` for the same file are equal (token
    ids of every window, or the decoded pixels), as the one reading path of each task makes them."""
    import numpy as np

    import shared.deploy.predictors as predictors
    from shared.core.runner import load_recipe
    from shared.text.data import NoteEncoder

    seen = {"recipe": [], "predict": []}
    if task == "text_pairs":  # both sides call the one NoteEncoder
        recipe, model, data = "text_classification", pairs_folder[1], pairs_table(TEXT_SAMPLE / "test.csv",
                                                                                  tmp_path / "test.csv", 20)
        flags = ["--text_column", "section", "--text_pair_column", "text"]
        owners, name = {"recipe": NoteEncoder, "predict": NoteEncoder}, "__call__"
    elif task == "ner_i2b2":
        recipe, model, data, flags = "ner", i2b2_tagger, NER_SAMPLE / "test", []
        owners, name = {"recipe": load_recipe("ner"), "predict": predictors}, "make_windows"
    else:
        recipe, model, data, flags = "image_classification", tmp_path / "image_model", IMAGE_SAMPLE / "test.csv", []
        run_recipe(recipe, ["--model_name_or_path", tiny_vit, "--train_dir", IMAGE_SAMPLE / "folders" / "train",
                            "--output_dir", model, "--do_train", "--num_train_epochs", "1", *QUIET])
        owners, name = {"recipe": load_recipe(recipe), "predict": predictors}, "decode_images"
    for side in seen:
        spy(monkeypatch, [owners[side]], name, seen[side])
        if side == "recipe":
            run_recipe(recipe, ["--model_name_or_path", model, "--test_file", data, *flags, "--output_dir",
                                tmp_path / "do_predict", "--do_predict", *QUIET])
        else:
            run_recipe(recipe, ["--model_dir", model, "--input", data, "--output_dir", tmp_path / "predict"],
                       entry="predict")
        monkeypatch.undo()
    if task == "text_pairs":
        ids = {side: [w for batch in calls for w in batch["input_ids"]] for side, calls in seen.items()}
    elif task == "ner_i2b2":
        ids = {side: [w.input_ids for windows, _ in calls for w in windows] for side, calls in seen.items()}
    else:
        ids = {side: [np.asarray(d.pixels).tolist() for d in calls] for side, calls in seen.items()}
    assert ids["recipe"] and ids["recipe"] == ids["predict"]

