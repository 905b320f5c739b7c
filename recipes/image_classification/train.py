"""Fine-tune an image classifier (ViT, DeiT, DINOv2, BEiT, Swin, ...) on medical images.

Inputs: class folders (``--train_dir``), MedMNIST ``.npz`` (``--train_file x.npz``: its ``val_*``/``test_*``
arrays serve ``--do_eval``/``--do_predict`` unless other files are given), CSV/JSONL tables with an image-path
column, saved or Hub datasets. Images are decoded, converted to RGB and resized ONCE into a uint8 tensor; training
augments on the fly (crop, flip, rotation, brightness/contrast), evaluation never does.

    python recipes/image_classification/train.py --config recipes/image_classification/configs/sample.yaml

Outputs in ``--output_dir``: the model + image processor (loads with ``pipeline("image-classification", ...)``),
``all_results.json`` (``eval_``/``test_`` metrics with bootstrap 95% CIs), ``test_predictions.csv``,
ROC and confusion-matrix PNGs, and a model card (``README.md``).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:
    import shared  # noqa: F401  (installed with `pip install -e .`)
except ImportError:  # running from a clone without installing: use the repository's shared/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import transformers  # noqa: E402
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, Trainer, TrainingArguments  # noqa: E402

from shared.args import (DataArguments, ModelArguments, classification_config, load_for_training,  # noqa: E402
                         load_pretrained, main_guard, parse_args, recipe_defaults, setup_logging)
from shared.augment import AugmentConfig, Augmenter, PixelDataset  # noqa: E402
from shared.distributed import full_state_dict  # noqa: E402
from shared.errors import DataError  # noqa: E402
from shared.formats import images as image_formats  # noqa: E402
from shared.imbalance import class_weights, make_loss_func, oversample, positive_weights  # noqa: E402
from shared.lora import apply_lora, count_parameters, save_model  # noqa: E402
from shared.metrics import (  # noqa: E402
    add_ci,
    bootstrap_ci,
    classification_metrics,
    classification_report_dict,
    multilabel_metrics,
    predict_classes,
    sigmoid,
    softmax,
    tune_thresholds,
)
from shared.optim import freeze_encoder_layers, freeze_input_embeddings, optimizer_cls_and_kwargs  # noqa: E402
from shared.resume import EpochSeededSampling, data_seed, resolve_checkpoint, train_with_resume  # noqa: E402
from shared.reporting import (  # noqa: E402
    atomic_write_json,
    atomic_write_text,
    plot_confusion_matrix,
    plot_roc_curves,
    prefixed,
    save_results,
    write_model_card,
)
from shared.splits import carve_splits, file_groups, splits_to_carve  # noqa: E402

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
HEADLINE = ["accuracy", "balanced_accuracy", "macro_f1", "auroc", "auprc", "sensitivity", "specificity"]
HEADLINE_MULTI = ["micro_f1", "macro_f1", "auroc", "auprc", "subset_accuracy"]


@dataclass
class ImageModelArguments(ModelArguments):
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Train and predict at this square size (pixels). Lower is much faster (28 px MedMNIST needs no "
            "224 px); position embeddings are interpolated once and the saved processor uses the same size. "
            "Default: the image processor's size."
        },
    )


@dataclass
class ImageDataArguments(DataArguments):
    train_dir: str | None = field(default=None, metadata={"help": "Training images, one subfolder per class."})
    validation_dir: str | None = field(default=None, metadata={"help": "Validation images, one subfolder per class."})
    test_dir: str | None = field(default=None, metadata={"help": "Test images, one subfolder per class."})
    image_column: str = field(default="image", metadata={"help": "Table column with the image path (relative to the table)."})
    label_column: str = field(default="label", metadata={"help": "Table column with the label (or a list of labels)."})
    label_separator: str | None = field(
        default=None, metadata={"help": "Split table labels on this string (e.g. ';') for multi-label data."}
    )
    skip_bad_images: bool = field(
        default=False,
        metadata={"help": "Skip unreadable/corrupt images (counted in the results) instead of stopping with an error."},
    )
    augment: bool = field(default=True, metadata={"help": "Augment training images on the fly (never evaluation)."})
    crop_scale_min: float = field(default=0.8, metadata={"help": "Random resized crop keeps at least this image area."})
    hflip: float = field(default=0.5, metadata={"help": "Horizontal flip probability (0 where laterality matters)."})
    vflip: float = field(default=0.0, metadata={"help": "Vertical flip probability."})
    rotation: float = field(default=10.0, metadata={"help": "Maximum random rotation in degrees."})
    brightness: float = field(default=0.1, metadata={"help": "Brightness jitter (multiply by 1 +- this)."})
    contrast: float = field(default=0.1, metadata={"help": "Contrast jitter (scale around the mean by 1 +- this)."})
    decision_threshold: float | None = field(
        default=None,
        metadata={"help": "Binary tasks: predict the positive (second) class when its probability >= this "
                  "(default 0.5). Multi-label tasks: default thresholds are tuned for F1 on validation data."},
    )
    write_image_paths: bool = field(
        default=False,
        metadata={"help": "Put image paths in test_predictions.csv (off: paths may identify patients)."},
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("train_dir", "validation_dir", "test_dir"):
            path = getattr(self, name)
            if path is not None and not os.path.isdir(path):
                raise DataError(f"--{name} is not a folder", path=path)
            file_name = name.replace("_dir", "_file")
            if path is not None and getattr(self, file_name) is not None:
                raise DataError(f"give --{name} or --{file_name}, not both")
        if self.num_folds is not None and self.test_dir is not None:
            raise DataError("--num_folds scores a fold of the training data as the test split: drop --test_dir")
        if self.validation_split_percentage is not None and self.validation_dir is not None:
            raise DataError("give --validation_dir or --validation_split_percentage, not both")
        if not 0 < self.crop_scale_min <= 1:
            raise DataError(f"--crop_scale_min must be in (0, 1], got {self.crop_scale_min}")
        if self.decision_threshold is not None and not 0 < self.decision_threshold < 1:
            raise DataError(f"--decision_threshold must be in (0, 1), got {self.decision_threshold}")

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(
            crop_scale=(self.crop_scale_min, 1.0), hflip=self.hflip, vflip=self.vflip, rotation=self.rotation,
            brightness=self.brightness, contrast=self.contrast,
        )


# ------------------------------------------------------------------------------------------------------- data
def read_splits(data_args: ImageDataArguments, training_args: TrainingArguments) -> dict[str, image_formats.ImageSet]:
    """Read (not yet decode) the splits the run needs. An ``.npz`` train file alone also provides val/test."""
    wanted = {"train": training_args.do_train, "validation": training_args.do_eval, "test": training_args.do_predict}
    given = {
        "train": data_args.train_dir or data_args.train_file,
        "validation": data_args.validation_dir or data_args.validation_file,
        "test": data_args.test_dir or data_args.test_file,
    }
    npz = data_args.train_file if data_args.train_file and data_args.train_file.endswith(".npz") else None
    table_kwargs = dict(image_column=data_args.image_column, label_column=data_args.label_column,
                        label_separator=data_args.label_separator)
    splits = {}
    hub_needed = []
    for split in SPLITS:
        if not wanted[split]:
            continue
        path = given[split] or npz
        if path:
            splits[split] = image_formats.read_images(path, split, **table_kwargs)
        elif data_args.dataset_name:
            hub_needed.append(split)
    if hub_needed:
        from shared.formats.tables import load_splits

        loaded = load_splits(data_args, {s: None for s in hub_needed})
        for split in hub_needed:
            if split in loaded:
                dataset, source = loaded[split]
                splits[split] = image_formats.read_hub_split(dataset, source, data_args.image_column,
                                                             data_args.label_column)
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_predict_samples}
    for split, images in splits.items():
        if limits[split] is not None and limits[split] < len(images):
            splits[split] = images.select(range(limits[split]))
    # Validation / a cross-validation test fold cut from the training data (stratified; --group_column of a table).
    carve = splits_to_carve(data_args, training_args, splits)
    for split in SPLITS:
        if wanted[split] and split not in splits and split not in carve:
            if split in hub_needed:
                raise DataError(f"dataset '{data_args.dataset_name}' has no {split} split")
            flag = {"train": "--train_dir/--train_file", "validation": "--validation_dir/--validation_file",
                    "test": "--test_dir/--test_file"}[split]
            raise DataError(f"--do_{'eval' if split == 'validation' else 'predict' if split == 'test' else 'train'} "
                            f"needs {flag} (or a .npz --train_file, or --dataset_name)")
    if carve:
        train, groups = splits["train"], None
        if data_args.group_column:
            if data_args.train_file is None or data_args.train_file.endswith(".npz"):
                raise DataError("--group_column names a column of a table training file (CSV/JSONL/parquet); image "
                                "folders, .npz files and hub datasets have no such column")
            groups = file_groups(data_args.train_file, data_args.group_column)[: len(train)]
        labels = None if train.multi_label else train.labels
        for split, idx in carve_splits(len(train), data_args, carve, training_args.seed, labels, groups).items():
            splits[split] = train.select(idx)
    if "train" in splits and not splits["train"].labeled:
        raise DataError("training data needs labels", path=splits["train"].origin)
    if "validation" in splits and not splits["validation"].labeled:
        raise DataError("validation data needs labels", path=splits["validation"].origin)
    kinds = {s.multi_label for s in splits.values() if s.labeled}
    if len(kinds) > 1:
        raise DataError("some splits are multi-label and others single-label; use one label format")
    return splits


# ------------------------------------------------------------------------------------------------------ model
def set_image_size(model: nn.Module, image_size: int) -> None:
    """Make a ViT-style model run natively at ``image_size``: interpolate its position embeddings ONCE.

    Cheaper than ``interpolate_pos_encoding=True`` on every forward pass, and the saved config then describes the
    model as trained, so ``from_pretrained``/``pipeline`` need nothing special. Models without absolute position
    embeddings (Swin, ConvNeXt, ...) accept other sizes as they are.
    """
    config = model.config
    patch = getattr(config, "patch_size", None)
    old_size = getattr(config, "image_size", None)
    if isinstance(patch, (list, tuple)):
        patch = patch[0]
    if isinstance(old_size, (list, tuple)):
        old_size = old_size[0]
    if patch and image_size % patch:
        raise DataError(f"--image_size {image_size} must be a multiple of the model's patch size {patch}")
    embeddings = getattr(model.base_model, "embeddings", None)
    position = getattr(embeddings, "position_embeddings", None)
    if not isinstance(position, nn.Parameter) or position.ndim != 3 or not patch or not old_size:
        if old_size and old_size != image_size:
            logger.info("%s has no absolute position embeddings to resize; using it at %d px as is",
                        type(model).__name__, image_size)
        return
    if old_size == image_size:
        return
    old_grid, new_grid = old_size // patch, image_size // patch
    extra = position.shape[1] - old_grid * old_grid  # [CLS] (and distillation) tokens keep their embeddings
    if extra < 0:
        raise DataError(f"cannot resize position embeddings of {type(model).__name__} (unexpected shape)")
    dim = position.shape[-1]
    with torch.no_grad():
        grid = position[:, extra:].reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2).float()
        # Antialias when shrinking (e.g. DINOv2's 37x37 grid to 4x4 at 56 px): each remaining position averages
        # its neighbourhood instead of sampling a few isolated pretrained positions.
        grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False,
                             antialias=new_grid < old_grid)
        grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim).to(position.dtype)
        embeddings.position_embeddings = nn.Parameter(torch.cat([position[:, :extra], grid], dim=1))
    for module in (embeddings, getattr(embeddings, "patch_embeddings", None)):
        if module is not None and hasattr(module, "image_size"):
            module.image_size = (image_size, image_size)
        if module is not None and hasattr(module, "num_patches"):
            module.num_patches = new_grid * new_grid
    config.image_size = image_size
    logger.info("position embeddings resized from %d px to %d px", old_size, image_size)


def load_trained_model(model_dir: str) -> nn.Module:
    """Load what this recipe saved: a plain model folder, or a LoRA adapter + head over its base model.

    An adapter folder's config describes the model as trained (e.g. at ``--image_size`` 56), while the base
    checkpoint has its original position embeddings: load the base at its own size, interpolate exactly as in
    training (the embeddings were frozen under LoRA), then attach the adapter.
    """
    import json

    adapter_config = os.path.join(model_dir, "adapter_config.json")
    if not os.path.exists(adapter_config):
        return AutoModelForImageClassification.from_pretrained(model_dir)
    from peft import PeftModel

    with open(adapter_config, encoding="utf-8") as f:
        base = json.load(f)["base_model_name_or_path"]
    config = AutoConfig.from_pretrained(model_dir)
    trained_size = getattr(config, "image_size", None)
    base_size = getattr(AutoConfig.from_pretrained(base), "image_size", trained_size)
    config.image_size = base_size
    model = AutoModelForImageClassification.from_pretrained(base, config=config, ignore_mismatched_sizes=True)
    if trained_size and trained_size != base_size:
        set_image_size(model, trained_size)
    return PeftModel.from_pretrained(model, model_dir)


def processor_size(processor) -> int:
    """The square size the processor feeds the model (crop size if it crops, else the resize size)."""
    for attr in ("crop_size", "size"):
        size = getattr(processor, attr, None) or {}
        if attr == "crop_size" and not getattr(processor, "do_center_crop", False):
            continue
        if isinstance(size, int):
            return size
        if "height" in size:
            return int(size["height"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"])
    return 224


def configure_processor(processor, image_size: int, resample: int) -> None:
    """Make the saved processor do what training did: resize to ``image_size`` squared, no crop, same filter."""
    processor.size = {"height": image_size, "width": image_size}
    if hasattr(processor, "do_center_crop"):
        processor.do_center_crop = False
    if hasattr(processor, "crop_size"):
        processor.crop_size = {"height": image_size, "width": image_size}
    processor.resample = resample
    processor.do_convert_rgb = True


def normalization(processor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if getattr(processor, "do_normalize", True) and getattr(processor, "image_mean", None) is not None:
        mean, std = processor.image_mean, processor.image_std
        mean = tuple(mean) if isinstance(mean, (list, tuple)) else (mean,) * 3
        std = tuple(std) if isinstance(std, (list, tuple)) else (std,) * 3
        return mean, std
    return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


# -------------------------------------------------------------------------------------------------- evaluation
def score(labels, logits, multi_label: bool, thresholds, resamples: int, seed: int):
    """(metrics with bootstrap CIs, probabilities, report) for one labelled split."""
    if multi_label:
        probs = sigmoid(logits)
        metric_fn = lambda idx: multilabel_metrics(labels[idx], probs[idx], thresholds)  # noqa: E731
    else:
        probs = softmax(logits)
        metric_fn = lambda idx: classification_metrics(labels[idx], probs[idx], thresholds)  # noqa: E731
    metrics = metric_fn(np.arange(len(labels)))
    if resamples:
        metrics = add_ci(metrics, bootstrap_ci(metric_fn, len(labels), resamples, seed=seed))
    return metrics, probs


def write_predictions(path: str, images: image_formats.ImageSet, kept: list[int], probs, label_names, multi_label,
                      thresholds, labels, with_paths: bool) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["index"] + (["image"] if with_paths else []) + (["label"] if labels is not None else [])
    header += ["prediction"] + [f"prob_{name}" for name in label_names]
    writer.writerow(header)
    if multi_label:
        predicted = [";".join(label_names[j] for j in np.flatnonzero(row >= thresholds)) for row in probs]
    else:
        predicted = [label_names[c] for c in predict_classes(probs, thresholds)]
    for row, index in enumerate(kept):
        cells = [index]
        if with_paths:
            source = images.sources[index]
            cells.append(source if isinstance(source, str) else images.refs[index][0])
        if labels is not None:
            gold = labels[row]
            cells.append(";".join(label_names[j] for j in np.flatnonzero(gold)) if multi_label else label_names[gold])
        cells.append(predicted[row])
        cells += [f"{p:.6f}" for p in probs[row]]
        writer.writerow(cells)
    atomic_write_text(path, buffer.getvalue())


# -------------------------------------------------------------------------------------------------------- main
def main(args: list[str] | None = None) -> dict:
    defaults = {
        **recipe_defaults(),
        "learning_rate": 5e-5,
        "num_train_epochs": 3,
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
        "warmup_steps": 0.1,
        "weight_decay": 0.01,
        "remove_unused_columns": False,  # our items are exactly {pixel_values, labels}
        "dataloader_num_workers": 0,  # images are already in memory as tensors
    }
    model_args, data_args, training_args = parse_args(
        ImageModelArguments, ImageDataArguments, TrainingArguments, defaults=defaults, args=args
    )
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise DataError("nothing to do: pass at least one of --do_train, --do_eval, --do_predict")
    setup_logging(training_args)  # counts and sizes only: never image paths or pixels
    # --resume_from_checkpoint as a folder (true: the newest complete one); a bad one fails before any work
    checkpoint = resolve_checkpoint(training_args) if training_args.do_train else None
    logger.info("device %s, bf16 %s", training_args.device, training_args.bf16)
    transformers.set_seed(training_args.seed)

    # 1. Data: read and validate everything before any model is loaded or anything is written.
    splits = read_splits(data_args, training_args)
    multi_label = any(s.multi_label for s in splits.values())
    config = load_pretrained(AutoConfig, model_args)
    if training_args.do_train:
        # Classes come from the training data only: a label seen only in validation/test is an error (below).
        label_names = image_formats.label_names_for([splits["train"]])
        if not multi_label and len(label_names) < 2:
            raise DataError(f"need at least 2 classes, found {label_names}", path=splits["train"].origin)
    else:  # evaluate a fine-tuned model with its own labels
        label_names = [config.id2label[i] for i in range(len(config.id2label))]
        multi_label = multi_label or config.problem_type == "multi_label_classification"
    label2id = {name: i for i, name in enumerate(label_names)}
    known_as = "the labels in the training data" if training_args.do_train else "the model's labels"
    encoded = {s: image_formats.encode_labels(images, label2id, known_as) if images.labeled else None
               for s, images in splits.items()}

    # 2. Model with a fresh head for our labels, its processor, and the training resolution.
    processor = load_pretrained(AutoImageProcessor, model_args)
    adapter_only = os.path.exists(os.path.join(model_args.model_name_or_path, "adapter_config.json"))
    if adapter_only and not training_args.do_train:  # evaluate a LoRA run of this recipe: base + adapter + head
        model = load_trained_model(model_args.model_name_or_path)
    elif training_args.do_train:
        model = load_for_training(AutoModelForImageClassification, model_args,
                                  classification_config(model_args, label_names, multi_label), training_args.device,
                                  ignore_mismatched_sizes=True)  # a checkpoint's own head (e.g. ImageNet's) is replaced
    else:  # evaluate a fine-tuned model with its own head and labels
        model = load_pretrained(AutoModelForImageClassification, model_args, config=config)
    image_size = model_args.image_size or processor_size(processor)
    set_image_size(model, image_size)
    resample = int(getattr(processor, "resample", 2) or 2)
    configure_processor(processor, image_size, resample)
    mean, std = normalization(processor)

    # 3. Decode every image once (RGB, resized); bad images stop here or are skipped and counted.
    decoded = {s: image_formats.decode_images(images, image_size, data_args.skip_bad_images, resample)
               for s, images in splits.items()}
    labels = {s: (None if encoded[s] is None else encoded[s][d.kept]) for s, d in decoded.items()}
    augmenter = Augmenter(data_args.augment_config()) if data_args.augment else None
    datasets = {
        s: PixelDataset(d.pixels, labels[s], mean, std, augmenter if s == "train" else None,
                        seed=data_seed(training_args))
        for s, d in decoded.items()
    }
    for split, d in decoded.items():
        logger.info("%s: %d images at %d px%s", split, len(d.kept), image_size,
                    f" ({len(d.bad)} unreadable skipped)" if d.bad else "")

    # 4. Adaptation: layer freezing, LoRA, class imbalance, layer-wise LR decay.
    freeze_encoder_layers(model, model_args.freeze_layers)
    if model_args.freeze_embeddings:
        freeze_input_embeddings(model)
    if model_args.use_lora:
        model = apply_lora(model, model_args)
    trainable, total = count_parameters(model)
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)
    loss_func = None
    if training_args.do_train and (model_args.class_weighting != "none" or model_args.focal_gamma > 0):
        if multi_label:
            weights = positive_weights(labels["train"], model_args.class_weighting)
        else:
            weights = class_weights(labels["train"], len(label_names), model_args.class_weighting)
        loss_func = make_loss_func(weights, model_args.focal_gamma, multi_label)
    if training_args.do_train and model_args.oversample:
        datasets["train"] = oversample(datasets["train"], labels["train"], training_args.seed)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=datasets.get("train"),
        eval_dataset=datasets.get("validation"),
        compute_loss_func=loss_func,
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(model, training_args, model_args.layerwise_lr_decay),
        callbacks=[EpochSeededSampling()],  # a resumed run trains in the same order (shared/resume.py)
    )

    # 5. Train, then evaluate/predict with full metrics.
    results: dict = {}
    # Under torchrun / accelerate launch every process runs this script: only the main one writes files.
    is_main = trainer.is_world_process_zero()
    if is_main:
        os.makedirs(training_args.output_dir, exist_ok=True)
    if training_args.do_train:
        train_result = train_with_resume(trainer, checkpoint)
        train_metrics = dict(train_result.metrics)
        train_metrics.update(train_samples=len(datasets["train"]), train_trainable_parameters=trainable,
                             train_total_parameters=total, train_skipped_images=len(decoded["train"].bad))
        results.update(train_metrics)
        state_dict = full_state_dict(trainer)  # every process takes part (FSDP gathers the shards); None otherwise
        if is_main:
            save_results(training_args.output_dir, "train", train_metrics)
            save_model(trainer.model, training_args.output_dir, model_args.merge_lora, state_dict=state_dict)
            processor.save_pretrained(training_args.output_dir)

    thresholds = data_args.decision_threshold
    probs_by_split = {}
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split not in datasets:
            continue
        logits = trainer.predict(datasets[split]).predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        if multi_label and split == "validation" and thresholds is None:
            thresholds = tune_thresholds(labels[split], sigmoid(logits))
        split_thresholds = thresholds if thresholds is not None else (0.5 if multi_label else None)
        if labels[split] is not None:
            metrics, probs = score(labels[split], logits, multi_label, split_thresholds,
                                   data_args.bootstrap_resamples, training_args.seed)
        else:
            metrics, probs = {}, sigmoid(logits) if multi_label else softmax(logits)
        metrics.update(samples=len(decoded[split].kept), skipped_images=len(decoded[split].bad))
        metrics = prefixed(metrics, prefix)
        results.update(metrics)
        probs_by_split[split] = probs
        if not is_main:
            continue
        save_results(training_args.output_dir, prefix, metrics)
        if split == "test":
            write_predictions(os.path.join(training_args.output_dir, "test_predictions.csv"), splits[split],
                              decoded[split].kept, probs, label_names, multi_label,
                              split_thresholds, labels[split], data_args.write_image_paths)
        if labels[split] is not None:
            plot_roc_curves(labels[split], probs, label_names,
                            os.path.join(training_args.output_dir, f"{prefix}_roc.png"), title=f"ROC ({split})")
            if not multi_label:
                report = classification_report_dict(labels[split], probs, label_names, split_thresholds)
                atomic_write_json(os.path.join(training_args.output_dir, f"{prefix}_report.json"), report)
                plot_confusion_matrix(report["confusion_matrix"], label_names,
                                      os.path.join(training_args.output_dir, f"{prefix}_confusion_matrix.png"),
                                      title=f"Confusion matrix ({split})")
    if multi_label and thresholds is not None and is_main:
        atomic_write_json(os.path.join(training_args.output_dir, "thresholds.json"),
                          dict(zip(label_names, np.atleast_1d(thresholds).tolist())))

    # 6. Model card: data counts, metrics with CIs, how it was trained. No images, no paths.
    if training_args.do_train and is_main:
        summary = {}
        for split, images in splits.items():
            counts: dict[str, int] = {}
            if labels[split] is not None:
                for row in labels[split]:
                    for j in (np.flatnonzero(row) if multi_label else [row]):
                        counts[label_names[j]] = counts.get(label_names[j], 0) + 1
            summary[split] = {"examples": len(decoded[split].kept), "labels": counts}
        write_model_card(
            training_args.output_dir,
            title=f"Medical image classifier ({', '.join(label_names)})",
            base_model=model_args.model_name_or_path,
            pipeline_tag="image-classification",
            task_description=("Multi-label" if multi_label else "Single-label")
            + f" image classification into {len(label_names)} classes at {image_size}x{image_size} px.",
            data_summary=summary,
            metrics=results,
            headline_metrics=HEADLINE_MULTI if multi_label else HEADLINE,
            training={
                "epochs": training_args.num_train_epochs,
                "learning_rate": training_args.learning_rate,
                "batch_size": training_args.per_device_train_batch_size * training_args.world_size,
                "image_size": image_size,
                "augmentation": data_args.augment_config() if data_args.augment else "none",
                "lora": f"r={model_args.lora_r}, alpha={model_args.lora_alpha}" if model_args.use_lora else "no",
                "trainable_parameters": f"{trainable:,} of {total:,}",
                "class_weighting": model_args.class_weighting,
                "bf16": training_args.bf16,
                "seed": training_args.seed,
            },
            limitations=[
                "Trained on resized images; fine detail lost at low resolution is invisible to the model.",
                "Decision threshold: "
                + (f"{thresholds}" if thresholds is not None and not multi_label else "argmax / 0.5 (see thresholds.json for multi-label)"),
            ],
        )
    return results


if __name__ == "__main__":
    main_guard(main)()
