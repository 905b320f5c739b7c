"""CNN backbones in the image recipe (ResNet, ConvNeXt, EfficientNet; tiny models built from config): train,
evaluate, predict, explain (Grad-CAM), predict.py and pipeline() agree, LoRA on their convolutions (adapter and
merged), freezing and layer-wise learning rates by stage, ONNX export through the parity gate."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from shared.core.errors import DataError
from shared.core.runner import run_recipe
from shared.training.tiny_models import TINY_IMAGE_BUILDERS
from tests.helpers import IMAGE_SAMPLE

ARCHS = ["resnet", "convnext", "efficientnet"]
SIZE = 24  # not the processors' 32: the saved processor must say what training did
QUIET = ["--bf16", "false", "--bootstrap_resamples", "0", "--seed", "0"]
FOLDERS = IMAGE_SAMPLE / "folders"
# Where each tiny model's parameters live: its stem, stage 0, stage 1 (EfficientNet: blocks 1 and 2, one stage)
STEM = {"resnet": "resnet.embedder.", "convnext": "convnext.embeddings.", "efficientnet": "efficientnet.embeddings."}
STAGES = {"resnet": ("resnet.encoder.stages.0.", "resnet.encoder.stages.1."),
          "convnext": ("convnext.encoder.stages.0.", "convnext.encoder.stages.1."),
          "efficientnet": ("efficientnet.encoder.blocks.0.",
                           ("efficientnet.encoder.blocks.1.", "efficientnet.encoder.blocks.2."))}
GRID = {"resnet": 3, "convnext": 3, "efficientnet": 6}  # the last feature map at 24 px: strides 8, 8 and 4


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def probs_of(rows, classes=("normal", "opacity")):
    return np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])


def train(model, out, *extra):
    return run_recipe("image_classification", [
        "--model_name_or_path", model, "--output_dir", str(out), "--do_train", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "16", "--learning_rate", "1e-2", "--image_size", str(SIZE), *QUIET, *extra])


def pipeline_probs(model_dir, paths, classes=("normal", "opacity")):
    from transformers import pipeline

    classify = pipeline("image-classification", model=str(model_dir))
    scores = [{p["label"]: p["score"] for p in top} for top in classify([Image.open(p) for p in paths], top_k=2)]
    return np.array([[s[c] for c in classes] for s in scores])


@pytest.fixture(scope="module")
def tiny_cnns(tmp_path_factory):
    return {arch: TINY_IMAGE_BUILDERS[arch](tmp_path_factory.mktemp(f"tiny_{arch}")) for arch in ARCHS}


@pytest.fixture(scope="module", params=ARCHS)
def trained(request, tiny_cnns, tmp_path_factory):
    """One small run per architecture, configured by a YAML file: train, evaluate (calibrated), predict with image
    paths, explain 2 images."""
    import yaml

    arch = request.param
    folder = tmp_path_factory.mktemp(f"{arch}_run")
    config = {"do_eval": True, "do_predict": True, "train_dir": str(FOLDERS / "train"),
              "validation_dir": str(FOLDERS / "validation"), "test_dir": str(FOLDERS / "test"),
              "write_image_paths": True, "explain": 2}
    (folder / "run.yaml").write_text(yaml.safe_dump(config))
    results = train(tiny_cnns[arch], folder / "model", "--config", str(folder / "run.yaml"))
    return arch, folder / "model", results


# ------------------------------------------------------------------------------------------------ end to end
def test_train_evaluate_predict_and_pipeline_agree(trained, tmp_path):
    arch, out, results = trained
    assert results["test_samples"] == 16 and results["eval_samples"] == 16 and results["train_samples"] == 48
    config = json.loads((out / "config.json").read_text())
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert config["model_type"] == arch and config["id2label"] == {"0": "normal", "1": "opacity"}
    assert processor["size"] == {"height": SIZE, "width": SIZE} and not processor.get("do_center_crop")
    rows = read_csv(out / "test_predictions.csv")
    expected = probs_of(rows)
    assert np.ptp(expected[:, 1]) > 1e-4  # the images get different probabilities: agreement below means something
    np.testing.assert_allclose(pipeline_probs(out, [r["image"] for r in rows]), expected, atol=1e-4)

    # A non-square image: training resizes the whole image (no crop), and so must the saved processor (ConvNeXt's,
    # which ResNet checkpoints ship too, would resize the short side and crop the middle).
    scans = tmp_path / "scans"
    scans.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (24, 60, 3), dtype=np.uint8)
    pixels[:, :20] = 0  # the left third dark: a crop of the middle sees another image
    Image.fromarray(pixels).save(scans / "wide.png")
    run_recipe("image_classification", ["--model_dir", str(out), "--input", str(scans), "--output_dir",
                                        str(tmp_path / "predicted")], entry="predict")
    predicted = probs_of(read_csv(tmp_path / "predicted" / "predictions.csv"))
    np.testing.assert_allclose(pipeline_probs(out, [scans / "wide.png"]), predicted, atol=1e-4)


def test_predict_py_matches_do_predict(trained, tmp_path):
    _, out, _ = trained
    results = run_recipe("image_classification", [
        "--model_dir", str(out), "--input", str(FOLDERS / "test"), "--output_dir", str(tmp_path / "p"),
        "--write_image_paths"], entry="predict")
    assert results["examples"] == 16 and results["macro_f1"] == pytest.approx(
        json.loads((out / "all_results.json").read_text())["test_macro_f1"])
    assert (tmp_path / "p" / "predictions.csv").read_text() == (out / "test_predictions.csv").read_text()


def test_grad_cam_explanations(trained):
    arch, out, _ = trained
    explained = json.loads((out / "test_explanations.json").read_text())
    assert [e["row"] for e in explained] == [0, 1]
    for item in explained:
        heat = np.array(item["heat_map"])
        assert item["method"] == "Grad-CAM" and heat.shape == (GRID[arch], GRID[arch])
        assert heat.max() == pytest.approx(1.0, abs=1e-4) and heat.min() >= 0 and np.ptp(heat) > 0
        assert (out / "test_explanations" / f"row_{item['row']}.png").stat().st_size > 0


@pytest.mark.parametrize("trained", ["efficientnet"], indirect=True)  # "same" padding, squeeze-excite, SiLU
def test_onnx_export_passes_the_parity_gate_and_predicts_like_pytorch(trained, tmp_path):
    _, out, _ = trained
    export = tmp_path / "onnx"
    info = run_recipe("export_onnx.py", ["--model_dir", str(out), "--input", str(FOLDERS / "validation"),
                                         "--output_dir", str(export)])
    saved = json.loads((export / "export.json").read_text())
    assert info["image_size"] == SIZE and saved["parity"]["changed_decisions"] == 0
    assert saved["parity"]["max_abs_logit_difference"] < 1e-4
    run_recipe("image_classification", ["--model_dir", str(export), "--backend", "onnx", "--input",
                                        str(FOLDERS / "test"), "--output_dir", str(tmp_path / "o"),
                                        "--batch_size", "5"], entry="predict")
    np.testing.assert_allclose(probs_of(read_csv(tmp_path / "o" / "predictions.csv")),
                               probs_of(read_csv(out / "test_predictions.csv")), atol=1e-5)


# ------------------------------------------------------------------------------------------------ LoRA
@pytest.mark.parametrize("arch, targets, kinds", [
    ("resnet", {"convolution"}, {torch.nn.Conv2d}),
    ("convnext", {"pwconv1", "pwconv2"}, {torch.nn.Linear}),
    ("efficientnet", {"expand_conv", "project_conv", "top_conv"}, {torch.nn.Conv2d}),
])
def test_default_lora_targets_and_what_stays_trained(tiny_cnns, arch, targets, kinds):
    from transformers import AutoModelForImageClassification

    from shared.core.args import ModelArguments
    from shared.training.lora import apply_lora

    model = AutoModelForImageClassification.from_pretrained(tiny_cnns[arch])
    convolutions = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    peft_model = apply_lora(model, ModelArguments(model_name_or_path=tiny_cnns[arch], use_lora=True))
    adapted = {name.removeprefix("base_model.model.").removesuffix(".lora_A")
               for name, _ in peft_model.named_modules() if name.endswith(".lora_A")}
    assert adapted and {name.rsplit(".", 1)[-1] for name in adapted} == targets
    base = dict(peft_model.get_base_model().named_modules())
    assert {type(base[name].base_layer) for name in adapted} == kinds
    if arch == "resnet":  # every ResNetConvLayer's convolution: stem, blocks and the shortcut
        assert adapted == convolutions
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any(".classifier." in n and "modules_to_save" in n for n in trainable)  # the head, fully
    batch_norm = [n for n in trainable if "modules_to_save" in n and ("normalization" in n or "_bn" in n)]
    assert bool(batch_norm) == (arch != "convnext")  # batch norm is trained and saved; ConvNeXt has none
    assert not any("pwconv1.base_layer" in n or "convolution.base_layer" in n for n in trainable)


def test_lora_adapter_on_a_cnn_with_batch_norm_reloads_to_the_same_predictions(tiny_cnns, tmp_path):
    """ResNet's batch norm updates its running statistics while training (also under LoRA): they are saved with
    the adapter, else the reloaded folder would normalise with the checkpoint's and predict otherwise."""
    out = tmp_path / "lora"
    results = train(tiny_cnns["resnet"], out, "--use_lora", "--lora_r", "4", "--do_predict",
                    "--train_dir", str(FOLDERS / "train"), "--test_dir", str(FOLDERS / "test"))
    assert 0 < results["train_trainable_parameters"] < results["train_total_parameters"]
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    from safetensors.torch import load_file

    saved = load_file(str(out / "adapter_model.safetensors"))
    assert any("convolution.lora_A" in k for k in saved) and any("classifier" in k for k in saved)
    assert any("normalization" in k and k.endswith("running_mean") for k in saved)
    expected = probs_of(read_csv(out / "test_predictions.csv"))
    run_recipe("image_classification", ["--model_dir", str(out), "--input", str(FOLDERS / "test"),
                                        "--output_dir", str(tmp_path / "again")], entry="predict")
    np.testing.assert_allclose(probs_of(read_csv(tmp_path / "again" / "predictions.csv")), expected, atol=1e-5)


def test_merged_lora_cnn_loads_in_pipeline(tiny_cnns, tmp_path):
    out = tmp_path / "merged"
    train(tiny_cnns["efficientnet"], out, "--use_lora", "--merge_lora", "--do_predict", "--write_image_paths",
          "--train_dir", str(FOLDERS / "train"), "--test_dir", str(FOLDERS / "test"))
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    from safetensors.torch import load_file

    merged = load_file(str(out / "model.safetensors"))
    assert not any("lora" in k or "modules_to_save" in k for k in merged)
    base = load_file(os.path.join(tiny_cnns["efficientnet"], "model.safetensors"))
    for key in ("efficientnet.encoder.top_conv.weight", "efficientnet.encoder.blocks.1.expansion.expand_conv.weight",
                "classifier.weight", "efficientnet.encoder.top_bn.running_var"):
        assert not torch.equal(merged[key], base[key]), key  # adapters merged in; the head and batch norm trained
    rows = read_csv(out / "test_predictions.csv")
    np.testing.assert_allclose(pipeline_probs(out, [r["image"] for r in rows]), probs_of(rows), atol=1e-4)


# ------------------------------------------------------------------------------------------------ freezing / decay
def _named(arch, tiny_cnns):
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(tiny_cnns[arch])
    return model, dict(model.named_parameters())


def _where(arch, name):
    """0: stem, 1: stage 0, 2: stage 1, 3: above the stages (head, final norm, EfficientNet's top conv)."""
    for depth, prefixes in enumerate((STEM[arch], *STAGES[arch])):
        if name.startswith(prefixes):
            return depth
    return 3


@pytest.mark.parametrize("arch", ARCHS)
def test_freeze_layers_freezes_the_stem_and_bottom_stages(tiny_cnns, arch):
    from shared.core.args import ModelArguments
    from shared.training.optim import freeze, num_encoder_layers

    model, named = _named(arch, tiny_cnns)
    assert num_encoder_layers(model) == 2  # EfficientNet's 3 blocks are 2 stages
    assert freeze(model, ModelArguments(model_name_or_path="m", freeze_layers=1)) == 1
    frozen = {n for n, p in named.items() if not p.requires_grad}
    assert frozen == {n for n in named if _where(arch, n) <= 1}
    assert any(_where(arch, n) == 0 for n in frozen) and any(_where(arch, n) == 1 for n in frozen)

    model, named = _named(arch, tiny_cnns)
    freeze(model, ModelArguments(model_name_or_path="m", freeze_embeddings=True))  # the stem only
    assert {n for n, p in named.items() if not p.requires_grad} == {n for n in named if _where(arch, n) == 0}


@pytest.mark.parametrize("arch", ARCHS)
def test_layerwise_learning_rates_go_down_by_stage(tiny_cnns, arch):
    from shared.training.optim import layerwise_lr_groups

    model, named = _named(arch, tiny_cnns)
    groups = layerwise_lr_groups(model, 1.0, 0.5, 0.01)
    lr = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(lr) == len(named)
    for name, param in named.items():  # head 1, stage 1: 0.5, stage 0: 0.25, stem: 0.125
        assert lr[id(param)] == pytest.approx(0.5 ** (3 - _where(arch, name))), name
    assert sorted({round(v, 6) for v in lr.values()}) == [0.125, 0.25, 0.5, 1.0]


def test_frozen_stages_stay_as_pretrained_through_a_run(tiny_cnns, tmp_path):
    """End to end (--freeze_layers 1 --layerwise_lr_decay 0.5): the stem's and stage 0's weights are saved as they
    were; stage 1 and the head trained."""
    from safetensors.torch import load_file

    out = tmp_path / "frozen"
    results = train(tiny_cnns["resnet"], out, "--train_dir", str(FOLDERS / "train"), "--freeze_layers", "1",
                    "--layerwise_lr_decay", "0.5")
    before = load_file(os.path.join(tiny_cnns["resnet"], "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    weights = [k for k in before if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    unchanged = {k for k in weights if torch.equal(before[k], after[k])}
    assert unchanged == {k for k in weights if _where("resnet", k) <= 1}
    frozen = sum(before[k].numel() for k in unchanged)
    assert results["train_trainable_parameters"] == results["train_total_parameters"] - frozen


# ------------------------------------------------------------------------------------------------ image size
def test_convnext_too_small_for_its_stages_is_one_line(tiny_cnns, tmp_path):
    with pytest.raises(DataError, match=r"--image_size 4 is too small for ConvNeXt: .* at least 8"):
        run_recipe("image_classification", [
            "--model_name_or_path", tiny_cnns["convnext"], "--output_dir", str(tmp_path / "o"), "--do_train",
            "--train_dir", str(FOLDERS / "train"), "--image_size", "4", *QUIET], raise_errors=True)
