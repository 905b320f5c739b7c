"""Integration: the image recipe on a subset of real PneumoniaMNIST with DINOv2-small (skipped when absent)."""

import json

import numpy as np
from conftest import load_recipe, real_asset


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
