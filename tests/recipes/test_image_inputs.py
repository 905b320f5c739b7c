"""How the image recipe, its predict.py and serve.py read files (issue #32): DICOM files without an extension or a
preamble are images like any other; an unreadable image stops train.py before the model loads; a decompression
bomb is one line in train.py and predict.py and a 413 from the service."""

import re
import shutil

import pytest

from shared.core.runner import run_recipe
from tests.helpers import assert_one_line, run_cli
from tests.images.test_dicom import make_dicom, ramp, without_preamble
from tests.images.test_readers import bomb_png

QUIET = ["--bf16", "false", "--bootstrap_resamples", "0", "--report_to", "none"]
TOO_LARGE = r"the image has more than \d+ pixels \(Pillow's Image\.MAX_IMAGE_PIXELS, its guard against " \
            r"decompression bombs\); downsample it first"


@pytest.fixture(scope="module")
def pacs_export(tmp_path_factory):
    """Class folders as a PACS export writes them: per class a .dcm file, one named like an image number without an
    extension and one named by its UID without the 128-byte preamble; and a plain folder of the same."""
    root = tmp_path_factory.mktemp("pacs")
    (root / "plain").mkdir()
    for label, low in (("normal", 0), ("opacity", 2000)):
        folder = root / "train" / label
        folder.mkdir(parents=True)
        made = make_dicom(folder / "a.dcm", ramp(low=low, high=low + 2000))
        shutil.copy(made, folder / "IM0001")
        without_preamble(made, folder / "1.2.826.0.1.3680043.2.1125.9")
        for f in folder.iterdir():
            shutil.copy(f, root / "plain" / f"{label}_{f.name}")
    return root


@pytest.fixture(scope="module")
def pacs_model(tiny_vit, pacs_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("pacs_model") / "model"
    results = run_recipe("image_classification", [
        "--model_name_or_path", tiny_vit, "--train_dir", pacs_export / "train", "--test_dir", pacs_export / "train",
        "--output_dir", out, "--do_train", "--do_predict", "--num_train_epochs", "1", "--image_size", "32", *QUIET])
    return out, results


def test_dicom_without_extension_or_preamble_is_trained_on_and_predicted(pacs_model, pacs_export, tmp_path):
    out, results = pacs_model
    assert results["train_samples"] == results["test_samples"] == 6  # 2 before: the .dcm files only
    assert results["train_skipped_images"] == results["test_skipped_images"] == 0
    for name, data in (("classes", pacs_export / "train"), ("plain", pacs_export / "plain")):
        predicted = run_recipe("image_classification", ["--model_dir", out, "--input", data, "--output_dir",
                                                        tmp_path / name], entry="predict")
        assert predicted["examples"] == 6 and predicted["skipped_images"] == 0, name


def test_a_bad_image_stops_train_py_before_the_model_loads_and_a_bomb_is_one_line(tiny_vit, tmp_path):
    """The model folder here has no weights: its error would come first if the model loaded before the images."""
    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny_vit, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    data = tmp_path / "data"
    for label in ("normal", "opacity"):
        (data / label).mkdir(parents=True)
        make_dicom(data / label / "a.dcm", ramp())
    bomb_png(data / "opacity" / "bomb.png")
    proc = run_cli("image_classification", ["--model_name_or_path", no_weights, "--train_dir", data,
                                            "--output_dir", tmp_path / "out", "--do_train", "--image_size", "32",
                                            *QUIET])
    assert_one_line(proc.returncode, proc.stderr, rf"{data}/opacity/bomb\.png: cannot read image: {TOO_LARGE}",
                    tmp_path / "out")


def test_predict_py_says_a_bomb_in_one_line(pacs_model, pacs_export, tmp_path, capsys):
    data = tmp_path / "plain"
    shutil.copytree(pacs_export / "plain", data)
    bomb_png(data / "zz_bomb.png")
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_recipe("image_classification", ["--model_dir", pacs_model[0], "--input", data, "--output_dir",
                                            tmp_path / "pred"], entry="predict")
    assert_one_line(info.value.code, capsys.readouterr().err, rf"{data}/zz_bomb\.png: cannot read image: {TOO_LARGE}",
                    tmp_path / "pred")


def test_service_answers_a_bomb_with_413_and_reads_a_dicom_without_preamble(serve, pacs_model, pacs_export,
                                                                              tmp_path):
    import httpx

    url = serve("--model_dir", pacs_model[0])
    bomb = bomb_png(tmp_path / "bomb.png").read_bytes()
    assert len(bomb) < 1_000_000
    response = httpx.post(f"{url}/predict", content=bomb, headers={"content-type": "image/png"}, timeout=60)
    assert response.status_code == 413, response.text
    assert re.fullmatch(TOO_LARGE, response.json()["error"]), response.text
    dicom = (pacs_export / "train" / "opacity" / "1.2.826.0.1.3680043.2.1125.9").read_bytes()
    response = httpx.post(f"{url}/predict", content=dicom, headers={"content-type": "application/dicom"})
    assert response.status_code == 200 and set(response.json()["probabilities"]) == {"normal", "opacity"}
