"""End to end: recipes/image_classification/train.py with a tiny ViT on every input format (and DINOv2 on
PneumoniaMNIST when ../shared is present)."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from shared.core.errors import DataError
from shared.core.runner import load_recipe, run_recipe
from tests.helpers import IMAGE_SAMPLE, ROOT, real_asset, run_cli

RECIPE = os.path.join(ROOT, "recipes", "image_classification")
SAMPLE = str(IMAGE_SAMPLE)
image_train = load_recipe("image_classification")


def run(model, out, *extra, raise_errors=False):
    args = ["--model_name_or_path", model, "--output_dir", str(out), "--num_train_epochs", "2",
            "--per_device_train_batch_size", "16", "--learning_rate", "1e-3", "--bootstrap_resamples", "20",
            "--seed", "0", *extra]
    return run_recipe("image_classification", args, raise_errors=raise_errors)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_folders_end_to_end_outputs_and_pipeline(tiny_vit, tmp_path):
    out = tmp_path / "out"
    results = run(tiny_vit, out, "--do_train", "--do_eval", "--do_predict",
                  "--train_dir", f"{SAMPLE}/folders/train", "--validation_dir", f"{SAMPLE}/folders/validation",
                  "--test_dir", f"{SAMPLE}/folders/test")
    saved = json.loads((out / "all_results.json").read_text())
    for key in ("test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_auroc", "test_auprc",
                "test_sensitivity", "test_specificity", "test_accuracy_ci_low", "eval_auroc", "train_loss"):
        assert key in saved, key
    assert saved["test_accuracy_ci_low"] <= saved["test_accuracy"] <= saved["test_accuracy_ci_high"]
    assert results["test_samples"] == 16
    for name in ("test_roc.png", "test_confusion_matrix.png", "eval_roc.png", "README.md", "test_report.json",
                 "preprocessor_config.json", "config.json"):
        assert (out / name).exists(), name
    rows = read_csv(out / "test_predictions.csv")
    assert len(rows) == 16 and set(rows[0]) == {"row", "label", "prediction", "prob_normal", "prob_opacity"}
    assert all(abs(float(r["prob_normal"]) + float(r["prob_opacity"]) - 1) < 1e-4 for r in rows)
    accuracy = np.mean([r["label"] == r["prediction"] for r in rows])
    assert abs(accuracy - saved["test_accuracy"]) < 1e-9
    assert "image" not in rows[0]  # no paths unless asked
    card = (out / "README.md").read_text()
    assert "opacity" in card and "auroc" in card and SAMPLE not in card
    # calibrated on validation, before/after reported, folded into the head (pipeline below reads it)
    assert saved["eval_nll"] <= saved["eval_nll_uncalibrated"] + 1e-9 and "test_ece_ci_low" in saved
    assert (out / "test_reliability.png").exists() and (out / "eval_reliability.png").exists()
    assert json.loads((out / "config.json").read_text())["calibration"]["fitted_on_validation_examples"] == 16
    assert "temperature scaling" in card

    # The output folder is a standard image-classification model: pipeline agrees with the recipe.
    from transformers import pipeline

    classify = pipeline("image-classification", model=str(out))
    image = Image.open(f"{SAMPLE}/folders/test/opacity/000.png")
    top = classify(image, top_k=2)
    by_name = {p["label"]: p["score"] for p in top}
    row = rows[8]  # test folder order: normal/000..007, then opacity/000..
    assert row["row"] == "8" and row["label"] == "opacity"
    assert abs(by_name["opacity"] - float(row["prob_opacity"])) < 1e-4  # float32 in both


def test_npz_alone_serves_all_splits_grayscale_to_rgb(tiny_vit, tmp_path, monkeypatch):
    seen = {}
    import shared.images.decode

    original = shared.images.decode.decode_images

    def spy(images, size, *rest):
        decoded = original(images, size, *rest)
        seen[images.refs[0][0].split("[")[1]] = decoded.pixels
        return decoded

    monkeypatch.setattr(image_train, "decode_images", spy)
    results = run(tiny_vit, tmp_path / "o", "--do_train", "--do_eval", "--do_predict",
                  "--train_file", f"{SAMPLE}/sample.npz", "--image_size", "16")
    assert results["eval_samples"] == 16 and results["test_samples"] == 16 and results["train_samples"] == 48
    assert set(seen) == {"train_images]", "val_images]", "test_images]"}
    pixels = seen["train_images]"]
    assert pixels.shape[1:] == (3, 16, 16) and torch.equal(pixels[:, 0], pixels[:, 2])  # gray copied to RGB
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    processor = json.loads((tmp_path / "o" / "preprocessor_config.json").read_text())
    assert config["image_size"] == 16 and processor["size"] == {"height": 16, "width": 16}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_tables(tiny_vit, tmp_path, fmt):
    results = run(tiny_vit, tmp_path / "o", "--do_train", "--do_predict", "--train_file", f"{SAMPLE}/train.{fmt}",
                  "--test_file", f"{SAMPLE}/test.{fmt}", "--num_train_epochs", "1", "--write_image_paths")
    assert results["test_samples"] == 16
    rows = read_csv(tmp_path / "o" / "test_predictions.csv")
    assert rows[0]["image"].endswith(".png")


def test_multilabel_npz(tiny_vit, tmp_path):
    results = run(tiny_vit, tmp_path / "o", "--do_train", "--do_eval", "--do_predict",
                  "--train_file", f"{SAMPLE}/sample_multilabel.npz", "--num_train_epochs", "1")
    assert "test_micro_f1" in results and "test_subset_accuracy" in results
    assert json.loads((tmp_path / "o" / "config.json").read_text())["problem_type"] == "multi_label_classification"
    assert set(json.loads((tmp_path / "o" / "thresholds.json").read_text())) == {"0", "1", "2"}


def test_augmentation_train_only_and_eval_identical_across_runs(tiny_vit, tmp_path, monkeypatch):
    calls = []
    from shared.images.augment import Augmenter

    original = Augmenter.__call__

    def counting(self, images, generator=None):
        calls.append(images.shape)
        return original(self, images, generator)

    monkeypatch.setattr(Augmenter, "__call__", counting)
    common = ["--do_eval", "--do_predict", "--train_file", f"{SAMPLE}/sample.npz"]
    run(tiny_vit, tmp_path / "a", *common, "--do_train", "--num_train_epochs", "1")
    assert len(calls) == 48  # every training image once, in the one epoch; no eval/test image
    calls.clear()
    # Evaluate the trained model twice: identical outputs, and the augmenter is never called.
    first = run(str(tmp_path / "a"), tmp_path / "b", *common)
    second = run(str(tmp_path / "a"), tmp_path / "c", *common)
    assert calls == []
    assert (tmp_path / "b" / "test_predictions.csv").read_text() == (tmp_path / "c" / "test_predictions.csv").read_text()
    assert first["test_accuracy"] == second["test_accuracy"]


def _corrupt_copy(tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(f"{SAMPLE}/folders/train", root)
    (root / "opacity" / "999.png").write_bytes(b"not an image at all")
    return root


def test_corrupt_image_is_an_error_before_training(tiny_vit, tmp_path):
    root = _corrupt_copy(tmp_path)
    with pytest.raises(DataError, match=r"999\.png: cannot read image"):
        run(tiny_vit, tmp_path / "o", "--do_train", "--train_dir", str(root), raise_errors=True)
    assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")  # nothing half-written


def test_corrupt_image_skipped_and_counted(tiny_vit, tmp_path):
    root = _corrupt_copy(tmp_path)
    results = run(tiny_vit, tmp_path / "o", "--do_train", "--do_predict", "--train_dir", str(root),
                  "--test_dir", str(root), "--skip_bad_images", "--num_train_epochs", "1")
    assert results["train_skipped_images"] == 1 and results["test_skipped_images"] == 1
    assert results["train_samples"] == 48 and results["test_samples"] == 48


def test_cli_error_is_one_line(tiny_vit, tmp_path):
    proc = run_cli("image_classification", ["--model_name_or_path", tiny_vit, "--output_dir", str(tmp_path / "o"),
                                            "--do_train", "--train_file", f"{SAMPLE}/sample.npz", "--image_size", "20"],
                   timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: --image_size 20 must be a multiple of the model's patch size 8"


def _reload_probs(model_dir, npz, split="test"):
    """Probabilities of a reloaded model on one npz split, preprocessed exactly like the recipe (no augmentation)."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from shared.core.args import ModelArguments
    from shared.images.augment import PixelDataset
    from shared.images.backbone import reload_at_trained_size
    from shared.images.decode import decode_images
    from shared.images.readers import read_npz
    from shared.training.models import load_trained

    model = load_trained(AutoModelForImageClassification, ModelArguments(model_name_or_path=model_dir),
                         prepare_base=reload_at_trained_size).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    size = processor.size["height"]
    pixels = decode_images(read_npz(npz, split), size, resample=processor.resample).pixels
    dataset = PixelDataset(pixels, mean=processor.image_mean, std=processor.image_std)
    batch = torch.stack([dataset[i]["pixel_values"] for i in range(len(dataset))])
    with torch.no_grad():
        return torch.softmax(model(pixel_values=batch).logits, -1).numpy()


@pytest.mark.parametrize("image_size", ["32", "16"])
def test_lora_save_reload_same_predictions(tiny_vit, tmp_path, image_size):
    out = tmp_path / "lora"
    results = run(tiny_vit, out, "--do_train", "--do_predict", "--train_file", f"{SAMPLE}/sample.npz", "--use_lora",
                  "--num_train_epochs", "1", "--image_size", image_size, "--bf16", "False")
    assert 0 < results["train_trainable_parameters"] < results["train_total_parameters"]
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    from safetensors.torch import load_file

    saved = load_file(str(out / "adapter_model.safetensors"))
    assert any("classifier" in k for k in saved) and any("lora_A" in k for k in saved)  # head saved with adapters
    rows = read_csv(out / "test_predictions.csv")
    expected = np.array([[float(r["prob_0"]), float(r["prob_1"])] for r in rows])
    np.testing.assert_allclose(_reload_probs(str(out), f"{SAMPLE}/sample.npz"), expected, atol=1e-5)
    # The recipe itself evaluates the adapter folder the same way.
    run(str(out), tmp_path / "again", "--do_predict", "--train_file", f"{SAMPLE}/sample.npz", "--bf16", "False")
    again = read_csv(tmp_path / "again" / "test_predictions.csv")
    np.testing.assert_allclose([[float(r["prob_0"]), float(r["prob_1"])] for r in again], expected, atol=1e-5)


def test_lora_merged_folder_loads_in_pipeline(tiny_vit, tmp_path):
    out = tmp_path / "merged"
    run(tiny_vit, out, "--do_train", "--do_predict", "--train_file", f"{SAMPLE}/sample.npz", "--use_lora",
        "--merge_lora", "--num_train_epochs", "1", "--bf16", "False")
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    rows = read_csv(out / "test_predictions.csv")
    expected = np.array([[float(r["prob_0"]), float(r["prob_1"])] for r in rows])
    np.testing.assert_allclose(_reload_probs(str(out), f"{SAMPLE}/sample.npz"), expected, atol=1e-5)
    from transformers import pipeline

    image = Image.fromarray(np.load(f"{SAMPLE}/sample.npz")["test_images"][0])
    scores = {p["label"]: p["score"] for p in pipeline("image-classification", model=str(out))(image, top_k=2)}
    assert abs(scores["1"] - expected[0, 1]) < 1e-3


def test_sample_config_runs(tiny_vit, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # config paths are relative to the project root, like the README's commands
    results = run_recipe("image_classification", [
        "--config", os.path.join(RECIPE, "configs", "sample.yaml"), "--model_name_or_path", tiny_vit,
        "--output_dir", str(tmp_path / "o"), "--num_train_epochs", "1", "--bootstrap_resamples", "10"])
    assert results["test_samples"] == 16 and "eval_auroc" in results


def test_every_config_names_only_known_arguments():
    import yaml

    from shared.core.args import ArgumentParser, TrainingArguments

    parser = ArgumentParser((image_train.ImageModelArguments, image_train.ImageDataArguments, TrainingArguments))
    known = set(parser.by_dest())
    configs = sorted(os.listdir(os.path.join(RECIPE, "configs")))
    assert len(configs) >= 3
    for name in configs:
        with open(os.path.join(RECIPE, "configs", name)) as f:
            assert set(yaml.safe_load(f)) <= known, name


@pytest.mark.slow
def test_pneumoniamnist_dinov2_subset(tmp_path):
    data = real_asset("data", "images", "pneumoniamnist", "pneumoniamnist.npz")
    model = real_asset("models", "dinov2-small")
    recipe = load_recipe("image_classification")
    # The published arrays are ordered by class: take a seeded random subset, written as a MedMNIST npz again.
    arrays, rng = np.load(data), np.random.default_rng(0)
    subset = {}
    for split, n in (("train", 512), ("val", 8), ("test", 200)):
        keep = np.sort(rng.choice(len(arrays[f"{split}_labels"]), n, replace=False))
        subset.update({f"{split}_images": arrays[f"{split}_images"][keep], f"{split}_labels": arrays[f"{split}_labels"][keep]})
    np.savez(tmp_path / "subset.npz", **subset)
    out = tmp_path / "out"
    results = recipe.main([
        "--model_name_or_path", str(model), "--output_dir", str(out), "--train_file", str(tmp_path / "subset.npz"),
        "--do_train", "--do_predict",
        "--image_size", "56", "--num_train_epochs", "1", "--learning_rate", "5e-4", "--use_lora",
        "--class_weighting", "balanced", "--per_device_train_batch_size", "32", "--bootstrap_resamples", "50",
        "--seed", "0",
    ])
    # LoRA (fast: 16 steps) on pretrained features separates the classes; a broken pipeline (labels misaligned
    # with images, wrong normalisation or channel order, position embeddings resized wrongly, head not trained or
    # not saved) stays near AUROC 0.5 (+- ~0.04 on 200 test images).
    assert results["test_samples"] == 200
    assert results["test_auroc"] > 0.7, results  # measured: 0.77 after one epoch
    assert (out / "adapter_model.safetensors").exists()
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == "dinov2" and saved["image_size"] == 56 and saved["id2label"] == {"0": "0", "1": "1"}


def test_defaults_follow_a_small_training_set_and_flags_win(tiny_vit, tmp_path):
    """48 sample images: batch 8, the epochs raised toward the step floor, the best validation epoch kept; the
    same run with the batch and epochs given keeps them."""
    files = ["--train_file", f"{SAMPLE}/train.csv", "--validation_file", f"{SAMPLE}/validation.csv",
             "--do_train", "--do_eval", "--learning_rate", "1e-3", "--bootstrap_resamples", "0"]
    derived = run_recipe("image_classification", ["--model_name_or_path", tiny_vit, "--output_dir",
                                                  str(tmp_path / "derived"), *files])
    assert derived["train_batch_size"] == 8 and derived["epoch"] == 10
    assert derived["eval_macro_f1"] == pytest.approx(derived["train_best_eval_macro_f1"])
    given = run(tiny_vit, tmp_path / "given", *files)
    assert given["train_batch_size"] == 16 and given["epoch"] == 2


def test_a_training_subset_of_one_class_is_refused(tiny_vit, tmp_path):
    """An .npz sorted by label (PneumoniaMNIST's train split is): its first N images may all be one class, while the
    file still names two; training on them would learn one answer. One line, before the model loads."""
    images = np.zeros((8, 6, 6), np.uint8)
    np.savez(tmp_path / "sorted.npz", train_images=images, train_labels=np.array([1] * 6 + [0] * 2))
    with pytest.raises(DataError, match=r"sorted\.npz: training data has a single class; .*--max_train_samples"):
        run(tiny_vit, tmp_path / "o", "--do_train", "--train_file", str(tmp_path / "sorted.npz"),
            "--max_train_samples", "5", raise_errors=True)
    assert not (tmp_path / "o").exists()
