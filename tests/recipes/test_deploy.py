"""Deployment: predict.py for every task and input format gives what train.py --do_predict gives on the same folder;
the ONNX export predicts the same (and its parity gate refuses a graph altered after export); bad input to
predict.py is one line, exit status 2, nothing written."""

import csv
import json
import os
import re
import shutil

import numpy as np
import pytest

from shared.core.runner import run_recipe
from tests.helpers import IMAGE_SAMPLE, NER_SAMPLE, TEXT_SAMPLE, assert_one_line, ner_corpora, run_cli, run_in_process

QUIET = ["--bf16", "false", "--bootstrap_resamples", "0"]
CANARY = "zebra-canary-7f3a"  # a string that must appear in no log and no prediction table


def read_table(path):
    if str(path).endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def same_predictions(expected_csv, got, atol=0.0):
    """The recipe's test_predictions.csv and a predict.py table (CSV or JSONL) hold the same rows and decisions,
    with probabilities equal (or within ``atol``)."""
    expected, actual = read_table(expected_csv), read_table(got)
    assert len(expected) == len(actual) > 0
    for e, a in zip(expected, actual):
        assert int(e["row"]) == int(a["row"])
        prediction = a["prediction"] if isinstance(a["prediction"], str) else json.dumps(a["prediction"])
        assert e["prediction"] == prediction
        probs = [k for k in e if k.startswith("prob_")]
        np.testing.assert_allclose([float(a[k]) for k in probs], [float(e[k]) for k in probs], rtol=0, atol=atol)


def predict(task, model_dir, data, out, *extra):
    return run_recipe(task, ["--model_dir", model_dir, "--input", data, "--output_dir", out, *extra], entry="predict")


# ------------------------------------------------------------------------------------------------ trained folders
@pytest.fixture(scope="module")
def text_folder(tiny_bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("text") / "model"
    run_recipe("text_classification", [
        "--model_name_or_path", tiny_bert_dir, "--train_file", TEXT_SAMPLE / "train.csv", "--validation_file",
        TEXT_SAMPLE / "validation.csv", "--max_train_samples", "60", "--max_eval_samples", "24", "--output_dir", out,
        "--do_train", "--do_eval", "--num_train_epochs", "1", "--max_seq_length", "24", *QUIET])
    return str(out)


@pytest.fixture(scope="module")
def ner_corpus(tmp_path_factory):
    return ner_corpora(tmp_path_factory.mktemp("ner_corpora"))


@pytest.fixture(scope="module")
def ner_folder(tiny_ner_model, tmp_path_factory):
    """A CRF tagger (the case a plain export cannot hold) with windows shorter than the sentences."""
    out = tmp_path_factory.mktemp("ner") / "model"
    run_recipe("ner", [
        "--model_name_or_path", tiny_ner_model, "--train_file", NER_SAMPLE / "train", "--output_dir", out,
        "--do_train", "--use_crf", "--num_train_epochs", "2", "--learning_rate", "5e-3", "--max_seq_length", "32",
        "--stride", "8", "--optim", "adamw_torch", *QUIET])
    return str(out)


@pytest.fixture(scope="module")
def image_folder(tiny_vit, tmp_path_factory):
    out = tmp_path_factory.mktemp("image") / "model"
    run_recipe("image_classification", [
        "--model_name_or_path", tiny_vit, "--train_dir", IMAGE_SAMPLE / "folders" / "train", "--validation_dir",
        IMAGE_SAMPLE / "folders" / "validation", "--output_dir", out, "--do_train", "--do_eval",
        "--num_train_epochs", "1", "--learning_rate", "1e-3", "--decision_threshold", "0.4", *QUIET])
    return str(out)


# ------------------------------------------------------------------------------------------------ predict.py
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_text_predict_matches_do_predict(text_folder, fmt, tmp_path):
    data = tmp_path / f"notes.{fmt}"
    rows = read_table(TEXT_SAMPLE / "test.csv")[:30]
    rows[3]["text"] = " ".join([rows[3]["text"]] * 12)  # longer than a window: read in windows, not truncated
    if fmt == "csv":
        with open(data, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows({"text": r["text"], "label": r["label"]} for r in rows)
    else:
        data.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in rows))
    run_recipe("text_classification", ["--model_name_or_path", text_folder, "--test_file", data, "--output_dir",
                                       tmp_path / "do_predict", "--do_predict", *QUIET])
    results = predict("text_classification", text_folder, data, tmp_path / "predict")
    written = tmp_path / "predict" / ("predictions.csv" if fmt == "csv" else "predictions.jsonl")
    if fmt == "csv":  # byte for byte
        assert written.read_text() == (tmp_path / "do_predict" / "test_predictions.csv").read_text()
    same_predictions(tmp_path / "do_predict" / "test_predictions.csv", written)
    assert results["examples"] == 30 and 0 <= results["macro_f1"] <= 1
    assert results["files"] == [written.name]
    saved = json.loads((tmp_path / "predict" / "predict_results.json").read_text())
    assert saved["backend"] == "pytorch" and "text" not in json.dumps(saved).replace("no input text", "")


@pytest.mark.parametrize("fmt", ["i2b2", "brat", "conll", "json"])
def test_ner_predict_matches_do_predict_in_the_input_format(ner_folder, ner_corpus, fmt, tmp_path):
    data = ner_corpus["test"][fmt]
    run_recipe("ner", ["--model_name_or_path", ner_folder, "--test_file", data, "--output_dir",
                       tmp_path / "do_predict", "--do_predict", *QUIET])
    results = predict("ner", ner_folder, data, tmp_path / "predict")
    expected = {name: (tmp_path / "do_predict" / "test_predictions" / name).read_text()
                for name in os.listdir(tmp_path / "do_predict" / "test_predictions")}
    got = {name: (tmp_path / "predict" / name).read_text() for name in os.listdir(tmp_path / "predict")
           if name != "predict_results.json"}
    assert got == expected and len(got) >= 1
    assert sorted(results["files"]) == sorted(expected) and "f1" in results


@pytest.mark.parametrize("source", ["folders", "test.csv", "sample.npz"])
def test_image_predict_matches_do_predict(image_folder, tiny_vit, source, tmp_path):
    data = IMAGE_SAMPLE / "folders" / "test" if source == "folders" else IMAGE_SAMPLE / source
    flag = "--test_dir" if source == "folders" else "--test_file"
    if source == "sample.npz":  # its classes are "0" and "1": a model of its own (8 px, not the processor's size)
        image_folder = str(tmp_path / "npz_model")
        run_recipe("image_classification", ["--model_name_or_path", tiny_vit, "--train_file", data, "--output_dir",
                                            image_folder, "--do_train", "--num_train_epochs", "1", "--image_size",
                                            "16", *QUIET])
    run_recipe("image_classification", ["--model_name_or_path", image_folder, flag, data, "--output_dir",
                                        tmp_path / "do_predict", "--do_predict", *QUIET])
    predict("image_classification", image_folder, data, tmp_path / "predict")
    assert ((tmp_path / "predict" / "predictions.csv").read_text()
            == (tmp_path / "do_predict" / "test_predictions.csv").read_text())


def test_image_predict_reads_a_plain_folder_and_applies_the_saved_threshold(image_folder, tmp_path):
    plain = tmp_path / "scans"
    plain.mkdir()
    for folder in sorted((IMAGE_SAMPLE / "folders" / "test").iterdir()):
        for image in sorted(folder.iterdir())[:3]:
            shutil.copy(image, plain / f"{folder.name}_{image.name}")
    results = predict("image_classification", image_folder, plain, tmp_path / "predict")
    rows = read_table(tmp_path / "predict" / "predictions.csv")
    assert results["examples"] == len(rows) == 6 and "label" not in rows[0] and "macro_f1" not in results
    config = json.loads((open(os.path.join(image_folder, "config.json"))).read())
    assert config["decision_threshold"] == 0.4
    names = [k[len("prob_"):] for k in rows[0] if k.startswith("prob_")]
    for row in rows:  # binary: the second class when its probability reaches the saved 0.4
        assert row["prediction"] == (names[1] if float(row[f"prob_{names[1]}"]) >= 0.4 else names[0])


def test_predict_on_a_lora_adapter_folder_matches_do_predict(tiny_bert_dir, tmp_path):
    out = tmp_path / "lora"
    run_recipe("text_classification", [
        "--model_name_or_path", tiny_bert_dir, "--train_file", TEXT_SAMPLE / "train.csv", "--max_train_samples", "40",
        "--output_dir", out, "--do_train", "--use_lora", "--num_train_epochs", "1", *QUIET])
    assert (out / "adapter_config.json").is_file()
    data = TEXT_SAMPLE / "validation.csv"
    run_recipe("text_classification", ["--model_name_or_path", out, "--test_file", data, "--output_dir",
                                       tmp_path / "do_predict", "--do_predict", *QUIET])
    predict("text_classification", str(out), data, tmp_path / "predict")
    assert ((tmp_path / "predict" / "predictions.csv").read_text()
            == (tmp_path / "do_predict" / "test_predictions.csv").read_text())


def test_text_predictions_and_logs_hold_no_note_text(text_folder, tmp_path, caplog, capfd):
    data = write_csv(tmp_path / "notes.csv", ["text"], [[f"chest pain {CANARY}"], [f"cough {CANARY} wheeze"]])
    predict("text_classification", text_folder, data, tmp_path / "out")
    for name in os.listdir(tmp_path / "out"):
        assert CANARY not in (tmp_path / "out" / name).read_text()
    out, err = capfd.readouterr()
    assert CANARY not in caplog.text + out + err


# ------------------------------------------------------------------------------------------------ bad input
def write_csv(path, header, rows, newline="\n"):
    path.write_text(newline.join([",".join(header), *[",".join(r) for r in rows]]) + newline, encoding="utf-8")
    return path


def test_predict_bad_input_is_one_line_before_anything_is_written(text_folder, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    # through the real command line: a file without the text column (CRLF, BOM), a misspelt flag
    missing = tmp_path / "notes.csv"
    missing.write_bytes("\ufeffnote,label\r\nchest pain,cardiology\r\n".encode("utf-8"))
    result = run_cli("text_classification", ["--model_dir", text_folder, "--input", missing, "--output_dir", out],
                     entry="predict")
    assert_one_line(result.returncode, result.stderr, r".*notes\.csv: .*'text'.*", out)
    result = run_cli("text_classification", ["--model_dir", text_folder, "--input", missing, "--ouput_dir", out],
                     entry="predict")
    assert_one_line(result.returncode, result.stderr, r"unknown option --ouput_dir.*--output_dir.*", out)
    # in-process, the same one-line errors: a label the model does not know (trailing space), the wrong task's
    # folder, an ONNX backend without an export
    unknown = write_csv(tmp_path / "unknown.csv", ["text", "label"], [["chest pain", "cardiology"],
                                                                       ["cough", "oncology "]], newline="\r\n")
    for model_dir, extra, expected in [
        (text_folder, [], r".*unknown\.csv:3: .*oncology.*"),
        (image_folder, [], r".*image classification model.*recipes/image_classification/predict\.py"),
        (text_folder, ["--backend", "onnx"], r".*no model\.onnx here: export the folder first.*"),
    ]:
        status, err = _predict_status(model_dir, unknown, out, capsys, *extra)
        assert_one_line(status, err, expected, out)


def test_predict_refuses_a_folder_of_other_files_and_replaces_only_its_own(text_folder, tmp_path, capsys):
    data = str(TEXT_SAMPLE / "validation.csv")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    status, err = _predict_status(text_folder, data, other, capsys, "--overwrite_output_dir")
    assert status == 2 and "predict.py did not write" in err and (other / "notes.txt").read_text() == "keep me"
    out = tmp_path / "out"
    predict("text_classification", text_folder, data, out)
    status, err = _predict_status(text_folder, data, out, capsys)
    assert status == 2 and "--overwrite_output_dir" in err
    predict("text_classification", text_folder, str(TEXT_SAMPLE / "test.csv"), out, "--overwrite_output_dir")
    assert json.loads((out / "predict_results.json").read_text())["examples"] == len(read_table(TEXT_SAMPLE / "test.csv"))
    assert not [n for n in os.listdir(tmp_path) if ".partial-" in n]  # the staging folder is gone


def _predict_status(model_dir, data, out, capsys, *extra):
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        predict("text_classification", model_dir, data, out, *extra)
    return info.value.code, capsys.readouterr().err


def test_a_model_folder_cut_short_or_without_weights_is_one_line_in_predict_serve_and_train(text_folder, tiny_bert_dir,
                                                                                           tmp_path, capsys):
    """An interrupted copy or save: SafetensorError tracebacks before; a folder with only config.json was told to pass
    --allow_pickle_weights although it has no .bin either."""
    cut = tmp_path / "cut"
    shutil.copytree(text_folder, cut)
    weights = cut / "model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    damaged = (rf"{re.escape(str(weights))}: model\.safetensors is incomplete or damaged \(incomplete metadata, file "
               r"not fully covered\); copy or save it again")
    data = TEXT_SAMPLE / "test.csv"
    proc = run_cli("text_classification", ["--model_dir", cut, "--input", data, "--output_dir", tmp_path / "out"],
                   entry="predict")
    assert_one_line(proc.returncode, proc.stderr, damaged, tmp_path / "out")
    status, err = run_in_process("serve.py", ["--model_dir", cut], capsys)
    assert_one_line(status, err, damaged, tmp_path / "out")

    pretrained = tmp_path / "pretrained"
    shutil.copytree(tiny_bert_dir, pretrained)
    with (pretrained / "model.safetensors").open("r+b") as f:
        f.truncate(200)
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(pretrained / "config.json", config_only)
    train = ["--train_file", TEXT_SAMPLE / "train.csv", "--output_dir", tmp_path / "out", "--do_train"]
    for model, expected in (
            (pretrained, rf"{re.escape(str(pretrained))}/model\.safetensors: model\.safetensors is incomplete or "
                         r"damaged \(invalid header length\); copy or save it again"),
            (config_only, rf"no weights in {re.escape(str(config_only))} \(expected model\.safetensors\)")):
        status, err = run_in_process("text_classification", ["--model_name_or_path", model, *train], capsys)
        assert_one_line(status, err, expected, tmp_path / "out")


# ------------------------------------------------------------------------------------------------ ONNX
def export(model_dir, data, out, *extra):
    from shared.core.runner import run_recipe as run

    return run("export_onnx.py", ["--model_dir", model_dir, "--input", data, "--output_dir", out, *extra])


@pytest.fixture(scope="module")
def text_export(text_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("text_onnx") / "export"
    info = export(text_folder, TEXT_SAMPLE / "validation.csv", out)
    return str(out), info


def test_onnx_export_of_a_text_classifier_predicts_like_pytorch(text_folder, text_export, tmp_path):
    out, info = text_export
    assert sorted(os.listdir(out)) == ["config.json", "export.json", "model.onnx", "tokenizer.json",
                                       "tokenizer_config.json"]
    saved = json.loads(open(os.path.join(out, "export.json")).read())
    assert saved["parity"]["max_abs_logit_difference"] < 1e-3 and saved["parity"]["changed_decisions"] == 0
    assert saved["labels"] == info["labels"] and saved["max_length"] == 24 and saved["long_text"] == "chunk"
    assert saved["inputs"][:1] == ["input_ids"]
    data = TEXT_SAMPLE / "test.csv"
    predict("text_classification", text_folder, data, tmp_path / "pytorch")
    results = predict("text_classification", out, data, tmp_path / "onnx", "--backend", "onnx",
                      "--batch_size", "7")  # other batches than the export's: dynamic axes
    assert results["backend"] == "onnx" and results["providers"][-1] == "CPUExecutionProvider"
    same_predictions(tmp_path / "pytorch" / "predictions.csv", tmp_path / "onnx" / "predictions.csv", atol=1e-5)


def test_verify_passes_an_export_and_refuses_one_altered_after_export(text_folder, text_export, tmp_path):
    import onnx
    from onnx import numpy_helper

    out, _ = text_export
    data = str(TEXT_SAMPLE / "test.csv")
    report = run_recipe("verify_onnx.py", ["--model_dir", text_folder, "--onnx_dir", out, "--input", data])
    assert report["changed_decisions"] == 0 and report["examples"] == len(read_table(data))
    altered = tmp_path / "altered"
    shutil.copytree(out, altered)
    graph = onnx.load(str(altered / "model.onnx"))
    weights = [w for w in graph.graph.initializer if w.name.endswith("classifier.weight")]
    assert len(weights) == 1
    changed = numpy_helper.to_array(weights[0]).copy()
    changed[0] += 0.05  # a small nudge to one class's weights: decisions may all survive, logits do not
    weights[0].CopyFrom(numpy_helper.from_array(changed, weights[0].name))
    onnx.save(graph, str(altered / "model.onnx"))
    bad = run_cli("verify_onnx.py", ["--model_dir", text_folder, "--onnx_dir", altered, "--input", data])
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert re.fullmatch(r"error: .*altered: ONNX parity failed on \d+ example\(s\): the largest logit difference "
                        r"from PyTorch is [\d.e-]+ \(tolerance 0\.001\)", bad.stderr.strip().splitlines()[-1])


def test_int8_export_is_gated_on_the_metric_and_reports_its_change(text_folder, text_export, tmp_path, monkeypatch):
    import onnxruntime.quantization

    quantize_dynamic = onnxruntime.quantization.quantize_dynamic

    def leaving_scratch(*args, **kwargs):
        # what ONNX Runtime's symbolic shape inference does when it does not complete (the tiny model's completes)
        open("sym_shape_infer_temp.onnx", "wb").close()
        open("bf75f0c4-eefb-11f1-bcc5-02fc00000001.data", "wb").close()
        return quantize_dynamic(*args, **kwargs)

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", leaving_scratch)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "int8"
    info = export(text_folder, TEXT_SAMPLE / "validation.csv", out, "--quantize", "int8")
    assert os.getcwd() == str(cwd) and os.listdir(cwd) == []  # no ONNX Runtime scratch left in the working directory
    assert sorted(os.listdir(out)) == sorted(os.listdir(text_export[0]))  # nor in the export
    parity = info["parity"]
    assert info["quantization"] == "int8" and parity["gate"] == "metric"
    assert parity["metric"] == "macro_f1" and parity["metric_change"] == pytest.approx(
        parity["metric_onnx"] - parity["metric_pytorch"])
    assert os.path.getsize(out / "model.onnx") < 0.5 * os.path.getsize(os.path.join(text_export[0], "model.onnx"))
    results = predict("text_classification", str(out), TEXT_SAMPLE / "validation.csv", tmp_path / "pred",
                      "--backend", "onnx")
    assert results["macro_f1"] == pytest.approx(parity["metric_onnx"])


def test_the_gate_refuses_a_metric_drop_and_changed_decisions():
    from shared.core.errors import DataError
    from shared.deploy.onnx_export import check_parity
    from shared.deploy.predictors import Outputs

    class Fixed:  # a predictor whose outputs are given
        task = "text_classification"

        def __init__(self, labels, logits):
            self.outputs = Outputs([np.asarray(x) for x in logits], labels, np.asarray(logits))

        def predict(self, *inputs):
            return self.outputs

        def score(self, gold, outputs):
            return float(np.mean([g == p for g, p in zip(gold, outputs.labels)]))

    reference = Fixed(["a", "b", "a", "b"], [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    worse = Fixed(["a", "b", "a", "a"], [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.4]])
    gold = ["a", "b", "a", "b"]
    with pytest.raises(DataError, match="int8 quantization lowers macro_f1 from 1.0000 to 0.7500"):
        check_parity(reference, worse, (), gold, quantized=True, max_metric_drop=0.01)
    assert check_parity(reference, worse, (), gold, quantized=True, max_metric_drop=0.3)["metric_change"] == -0.25
    with pytest.raises(DataError, match="changes 25.0% of the predictions"):
        check_parity(reference, worse, (), None, quantized=True)
    with pytest.raises(DataError, match="logit difference from PyTorch is 0.6"):
        check_parity(reference, worse, (), gold, quantized=False)


def test_onnx_export_of_a_crf_tagger_decodes_outside_the_graph(ner_folder, ner_corpus, tmp_path):
    out = tmp_path / "export"
    info = export(ner_folder, ner_corpus["validation"]["i2b2"], out, "--max_examples", "40")
    assert info["crf"] is True and (out / "crf.safetensors").is_file() and info["parity"]["changed_decisions"] == 0
    for fmt in ("brat", "conll"):
        data = ner_corpus["test"][fmt]
        predict("ner", ner_folder, data, tmp_path / f"pytorch_{fmt}")
        predict("ner", str(out), data, tmp_path / f"onnx_{fmt}", "--backend", "onnx")
        for name in os.listdir(tmp_path / f"pytorch_{fmt}"):
            if name != "predict_results.json":
                assert (tmp_path / f"onnx_{fmt}" / name).read_text() == (tmp_path / f"pytorch_{fmt}" / name).read_text()


def test_onnx_export_of_an_image_classifier_predicts_like_pytorch(image_folder, tmp_path):
    out = tmp_path / "export"
    info = export(image_folder, IMAGE_SAMPLE / "folders" / "validation", out)
    assert info["image_size"] == 32 and info["decision_thresholds"] == 0.4 and info["inputs"] == ["pixel_values"]
    data = IMAGE_SAMPLE / "test.csv"
    predict("image_classification", image_folder, data, tmp_path / "pytorch")
    predict("image_classification", str(out), data, tmp_path / "onnx", "--backend", "onnx", "--batch_size", "5")
    same_predictions(tmp_path / "pytorch" / "predictions.csv", tmp_path / "onnx" / "predictions.csv", atol=1e-5)


# ------------------------------------------------------------------------------------------------ HTTP service
def test_service_classifies_notes_and_bounds_requests(serve, text_folder, caplog, capfd):
    import httpx

    url = serve("--model_dir", text_folder, "--max_request_bytes", "2000", "--max_items", "3")
    health = httpx.get(f"{url}/health").json()
    assert health["task"] == "text_classification" and health["backend"] == "pytorch"
    note = f"crushing chest pain radiating to the left arm {CANARY}"
    one = httpx.post(f"{url}/predict", json={"text": note})
    assert one.status_code == 200
    body = one.json()
    assert body["prediction"] in health["labels"] and sum(body["probabilities"].values()) == pytest.approx(1.0)
    # the same answer as predict.py gives for the same note
    expected = TextClassifierFor(text_folder).predict([note])
    assert body["prediction"] == expected.labels[0]
    np.testing.assert_allclose([body["probabilities"][k] for k in health["labels"]], expected.probs[0], atol=1e-6)
    many = httpx.post(f"{url}/predict", json={"texts": [note, "wheeze and cough"]}).json()["results"]
    assert len(many) == 2 and many[0]["prediction"] == body["prediction"]
    for request, status, says in [
        (dict(json={"texts": ["a"] * 4}), 413, "at most 3"),
        (dict(content=b"x" * 2500, headers={"content-type": "application/json"}), 413, "larger than 2000 bytes"),
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, "not valid UTF-8 JSON"),
        (dict(json={"txt": note}), 400, "needs 'text'"),
        (dict(json={"text": note, "extra": 1}), 400, "unknown field"),
        (dict(json={"text": ""}), 400, "not a non-empty string"),
        (dict(content=b"abc", headers={"content-type": "text/plain"}), 415, "JSON body"),
    ]:
        response = httpx.post(f"{url}/predict", **request)
        assert response.status_code == status and says in response.json()["error"]
        assert CANARY not in response.text
    out, err = capfd.readouterr()
    assert CANARY not in caplog.text + out + err  # no request content in any log


def test_service_with_a_token_answers_only_requests_that_carry_it(serve, text_folder, tmp_path, monkeypatch, caplog,
                                                                  capfd):
    import secrets

    import httpx

    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "serve_token"
    token_file.write_text(token + "\n")  # a file written by echo or an editor ends in a newline
    note = {"text": "chest pain on exertion"}
    for source in ("--token_file", "SERVE_TOKEN"):
        if source == "SERVE_TOKEN":
            monkeypatch.setenv("SERVE_TOKEN", token)
            url = serve("--model_dir", text_folder, "--max_request_bytes", "2000")
        else:
            url = serve("--model_dir", text_folder, "--max_request_bytes", "2000", "--token_file", token_file)
        missing = httpx.post(f"{url}/predict", json=note)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "needs a bearer token" in missing.json()["error"]
        for wrong in (f"Bearer {token[:-1]}", f"Bearer {token}x", f"Basic {token}", token, "Bearer",
                      f"Bearer {token[::-1]}"):
            refused = httpx.post(f"{url}/predict", json=note, headers={"Authorization": wrong})
            assert refused.status_code == 401, wrong
            assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        # refused before the body is read: a stranger's oversized body is 401, not 413
        big = httpx.post(f"{url}/predict", content=b"x" * 2500, headers={"content-type": "application/json"})
        assert big.status_code == 401
        for scheme in ("Bearer", "bearer"):
            answer = httpx.post(f"{url}/predict", json=note, headers={"Authorization": f"{scheme} {token}"})
            assert answer.status_code == 200 and "prediction" in answer.json()
        # a liveness probe needs no token and learns nothing of the model; the details need it
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        assert httpx.get(f"{url}/health", headers={"Authorization": "Bearer nope"}).status_code == 401
        health = httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {token}"}).json()
        assert health["task"] == "text_classification" and health["labels"]
    out, err = capfd.readouterr()
    assert token not in caplog.text + out + err  # the token is never logged


def test_serve_refuses_a_bad_token_and_an_open_address_without_one_before_loading_a_model(tmp_path, monkeypatch,
                                                                                        capsys):
    never_loaded = tmp_path / "model"  # does not exist: each check stops before a model is looked at
    serve = ["--model_dir", never_loaded]
    # through the command line: what a deployment runs
    proc = run_cli("serve.py", [*serve, "--host", "0.0.0.0"], timeout=120)
    assert_one_line(proc.returncode, proc.stderr, r"--host 0\.0\.0\.0 listens beyond this machine, and without a "
                    r"token anyone who reaches the port may use the model: give one \(--token_file FILE or the "
                    r"SERVE_TOKEN environment variable\), or pass --allow_unauthenticated", never_loaded)
    files = {"empty": "\n", "short": "abcde\n", "spaced": "two words and more than sixteen\n",
             "good": "0123456789abcdef0123\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    cases = [
        (["--token_file", tmp_path / "absent"], {}, r"token file \S+absent does not exist"),
        (["--token_file", tmp_path / "empty"], {}, r"token file \S+empty is empty"),
        (["--token_file", tmp_path / "short"], {}, r"token file \S+short holds a token of 5 characters; use at least "
                                                   r"16 random ones, e\.g\. .*secrets.*"),
        (["--token_file", tmp_path / "spaced"], {}, r"token file \S+spaced holds characters a bearer token cannot "
                                                    r"carry .*"),
        (["--token_file", tmp_path], {}, r"cannot read token file \S+: Is a directory"),
        ([], {"SERVE_TOKEN": " "}, r"the SERVE_TOKEN environment variable is empty"),
        (["--token_file", tmp_path / "good"], {"SERVE_TOKEN": "0123456789abcdef0123"},
         r"give the token in --token_file or in the SERVE_TOKEN environment variable, not both"),
        (["--token_file", tmp_path / "good", "--allow_unauthenticated", "true"], {},
         r"--allow_unauthenticated, but token file \S+good sets a token: drop one of them"),
        # past the token checks: the (absent) model folder is the next thing looked at
        (["--host", "myhost.example", "--token_file", tmp_path / "good"], {}, r"\S+model: model folder does not exist"),
        (["--host", "0.0.0.0", "--allow_unauthenticated", "true"], {}, r"\S+model: model folder does not exist"),
    ]
    for args, env, expected in cases:
        with monkeypatch.context() as m:
            m.delenv("SERVE_TOKEN", raising=False)
            for key, value in env.items():
                m.setenv(key, value)
            status, err = run_in_process("serve.py", [*serve, *args], capsys)
        assert_one_line(status, err, expected, never_loaded)
        assert "abcde" not in err and "0123456789abcdef" not in err  # no token in any message


def TextClassifierFor(folder):
    from shared.deploy.predictors import TextClassifier

    return TextClassifier(folder)


def test_service_gives_entities_with_character_offsets(serve, ner_folder, ner_corpus):
    import httpx

    from shared.deploy.predictors import EntityTagger

    url = serve("--model_dir", ner_folder)
    note = open(os.path.join(ner_corpus["test"]["brat"], sorted(os.listdir(ner_corpus["test"]["brat"]))[0])).read()
    entities = httpx.post(f"{url}/predict", json={"text": note}).json()["entities"]
    assert entities == EntityTagger(ner_folder).entities(note) and entities
    for entity in entities:
        assert note[entity["start"]:entity["end"]] == entity["text"] and entity["type"] in {"problem", "test",
                                                                                           "treatment"}


def test_service_classifies_an_image_posted_as_its_file_with_the_onnx_backend(serve, image_folder, tmp_path):
    import httpx

    out = tmp_path / "export"
    export(image_folder, IMAGE_SAMPLE / "folders" / "validation", out)
    url = serve("--model_dir", out, "--backend", "onnx")
    image = sorted((IMAGE_SAMPLE / "folders" / "test" / "opacity").iterdir())[0]
    response = httpx.post(f"{url}/predict", content=image.read_bytes(), headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    predict("image_classification", image_folder, image.parent, tmp_path / "pred", "--batch_size", "1")
    row = read_table(tmp_path / "pred" / "predictions.csv")[0]
    assert response.json()["prediction"] == row["prediction"]
    assert response.json()["probabilities"]["opacity"] == pytest.approx(float(row["prob_opacity"]), abs=1e-5)
    bad = httpx.post(f"{url}/predict", content=b"not an image", headers={"content-type": "image/png"})
    assert bad.status_code == 400 and "not an image" in bad.json()["error"]
    assert httpx.post(f"{url}/predict", json={"text": "x"}).status_code == 415
