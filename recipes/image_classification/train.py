#!/usr/bin/env python
"""Fine-tune an image classifier (ViT, DeiT, DINOv2, BEiT, Swin, ...; ResNet, ConvNeXt, EfficientNet) on medical images.

    python recipes/image_classification/train.py --config recipes/image_classification/configs/sample.yaml
    python recipes/image_classification/train.py --model_name_or_path <folder> --train_dir xray/train \\
        --validation_dir xray/val --test_dir xray/test --output_dir out --do_train --do_eval --do_predict

Inputs: class folders (--train_dir), MedMNIST .npz (--train_file x.npz: its val_*/test_* arrays serve --do_eval /
--do_predict unless other files are given), CSV/JSONL tables with an image-path column, saved or Hub datasets;
images may be DICOM (.dcm) and 16-bit, mapped to 8 bits by one window for the run (--window; pixel_mapping.json).
Images are decoded, converted to RGB and resized ONCE into a uint8 tensor; training augments on the fly (crop,
flip, rotation, brightness/contrast), evaluation never does.

Steps, the same in every recipe: 1 arguments -> 2 logging, output folder, checkpoint -> 3 seed -> 4 data -> 5 labels
-> 6 model -> 7 preprocessing (decoding) -> 8 Trainer -> 9 train -> 10 evaluate -> 11 predict -> 12 save.

Outputs in --output_dir: the model and image processor (loads with pipeline("image-classification")),
all_results.json (+ train_/eval_/test_results.json), {eval,test}_report.json, {eval,test}_confusion_matrix.png,
{eval,test}_roc.png, {eval,test}_reliability.png, test_predictions.csv, thresholds.json (multi-label), pixel_mapping.json,
test_explanations/ + test_explanations.json (--explain N: heat maps over the images, sensitive) and the model card
README.md. With a validation split the probabilities are calibrated (temperature scaling folded into the head).
With --conformal_alpha every prediction also gets a conformal prediction set (the prediction_set column; coverage
and set size in the results; docs/prediction-sets-and-subgroups.md). With --subgroup_columns the labelled splits are
also scored per group of a column of the table of images, or of a DICOM header keyword (PatientSex, Manufacturer):
{eval,test}_subgroups.png, a table in {eval,test}_report.json and the model card.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field

try:
    import shared.core.args  # noqa: F401  (this project's package, and through it torch and transformers)
except ImportError as error:
    print(f"error: this project is not installed ({error}): install it as its README.md says, torch first, then "
          "`pip install -e .`", file=sys.stderr)
    raise SystemExit(2) from None

import numpy as np
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, Trainer

from shared.core.args import ClassifierModelArguments, DataArguments, TrainingArguments, main_guard, parse_args
from shared.core.args import recipe_defaults, start_run
from shared.core.errors import DataError
from shared.core.outputs import remove_earlier_results
from shared.core.resume import EpochSeededSampling, data_seed, train_with_resume
from shared.data.labels import label_counts, names_in, require_classes
from shared.data.overlap import images_also_in_train, warn_shared_examples
from shared.data.splits import carve_splits, check_split_sources, sample_limit, splits_to_carve, table_groups
from shared.data.tables import LabelledTableArguments, drop_unlabelled_rows, has_column, load_splits, read_table
from shared.evaluation.calibration import calibrate, saved_calibration
from shared.evaluation.conformal import SET_HEADLINE, ConformalArguments, plan_conformal, saved_conformal
from shared.evaluation.forward import predict_in_order
from shared.evaluation.metrics import MULTI_LABEL_HEADLINE, SINGLE_LABEL_HEADLINE, selection_macro_f1, sigmoid, softmax
from shared.evaluation.metrics import tune_thresholds
from shared.evaluation.reports import decision_thresholds, prefixed, save_all_results, saved_thresholds
from shared.evaluation.reports import score_and_report, subgroup_section, training_card, write_model_card
from shared.evaluation.reports import write_predictions
from shared.evaluation.subgroups import SubgroupArguments, require_subgroup_columns
from shared.images.augment import AugmentConfig, Augmenter, PixelDataset
from shared.images.backbone import configure_processor, normalization, processor_size, reload_at_trained_size
from shared.images.backbone import set_image_size
from shared.images.cache import automatic_cache_dir
from shared.images.decode import decode_images
from shared.images.pixels import PixelMapping, dicom_attribute, dicom_groups, fit_pixel_mapping, is_dicom, parse_window
from shared.images.readers import encode_image_labels, label_names_for, read_hub_split, read_images
from shared.tasks import task_record
from shared.training.adaptive import Derived, adapt_to_training_data, keep_best_epoch
from shared.training.imbalance import oversample, training_loss
from shared.training.lora import count_parameters, save_trained
from shared.training.models import classification_config, load_pretrained, model_for_run, trained_labels
from shared.training.optim import optimizer_cls_and_kwargs
from shared.trust.explain import explain_image_predictions

logger = logging.getLogger(__name__)


@dataclass
class ImageModelArguments(ClassifierModelArguments):
    image_size: int | None = field(
        default=None,
        metadata={"help": "Train and predict at this square size (pixels); position embeddings are interpolated once "
                          "and the saved processor uses the same size. Default: the image processor's size."},
    )


@dataclass
class ImageDataArguments(LabelledTableArguments, DataArguments):
    train_dir: str | None = field(default=None, metadata={"help": "Training images, one subfolder per class."})
    validation_dir: str | None = field(default=None, metadata={"help": "Validation images, one subfolder per class."})
    test_dir: str | None = field(default=None, metadata={"help": "Test images, one subfolder per class."})
    image_column: str = field(default="image", metadata={"help": "Table column with the image path (relative to the table)."})
    label_column: str = field(
        default="label",
        metadata={"help": "Table column with the label; a list of labels per row (a JSON list, or names split on "
                          "--label_separator) makes the task multi-label."},
    )
    label_separator: str | None = field(
        default=None, metadata={"help": "Split table label cells on this string (e.g. ';') for multi-label data."}
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
    image_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Decode images once into this folder (a raw uint8 file per split, read image by image) "
                          "instead of memory: for data larger than RAM, reused by later runs on the same files, "
                          "shared by all processes. It holds image content: keep it where the data may live. "
                          "Default: memory while the decoded images fit 256 MB (and a quarter of the free memory), "
                          "else ~/.cache/medical-finetuning-recipes/decoded_images (said in the log)."},
    )
    window: str | None = field(
        default=None,
        metadata={"help": "DICOM / 16-bit images: map CENTER,WIDTH (after the modality LUT, e.g. Hounsfield units) "
                          "to 8 bits, or a CT preset: lung, mediastinum, soft_tissue, bone, brain. Default: a DICOM "
                          "file's own window, else the 0.5-99.5th percentiles of the training images (saved in "
                          "pixel_mapping.json and used by evaluation and predict.py)."},
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
        if self.label_separator == "":
            raise DataError("--label_separator is empty")
        if self.window is not None:
            parse_window(self.window)
        cache = self.image_cache_dir
        if cache is not None and (not cache.strip() or (os.path.exists(cache) and not os.path.isdir(cache))):
            raise DataError("--image_cache_dir must be a folder (it is created if missing)", path=cache)
        if cache is not None and os.path.isdir(cache) and not os.access(cache, os.W_OK | os.X_OK):
            raise DataError("--image_cache_dir is not writable", path=cache)

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(
            crop_scale=(self.crop_scale_min, 1.0), hflip=self.hflip, vflip=self.vflip, rotation=self.rotation,
            brightness=self.brightness, contrast=self.contrast,
        )


# This recipe's defaults; the command line and --config override every one (see the README for why each holds).
RECIPE_DEFAULTS = {
    **recipe_defaults(),
    "learning_rate": 5e-5,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "warmup_steps": 0.1,  # a float below 1 is a fraction of the training steps
    "weight_decay": 0.01,
    "remove_unused_columns": False,  # our items are exactly {pixel_values, labels}
    "dataloader_num_workers": 0,  # images are already in memory as tensors
}
WHERE_FROM = {"train": "--train_dir/--train_file (or --dataset_name)",
              "validation": "--validation_dir/--validation_file (or a .npz --train_file, or --dataset_name)",
              "test": "--test_dir/--test_file (or a .npz --train_file, or --dataset_name)"}


def read_splits(data_args: ImageDataArguments, wanted: list[str]) -> dict:
    """Read (not yet decode) the splits the run needs. An ``.npz`` train file alone also provides val/test."""
    given = {"train": data_args.train_dir or data_args.train_file,
             "validation": data_args.validation_dir or data_args.validation_file,
             "test": data_args.test_dir or data_args.test_file}
    npz = data_args.train_file if data_args.train_file and data_args.train_file.endswith(".npz") else None
    splits, from_hub = {}, []
    for split in wanted:
        if given[split] or npz:
            splits[split] = read_images(given[split] or npz, split, image_column=data_args.image_column,
                                        label_column=data_args.label_column, label_separator=data_args.label_separator,
                                        delimiter=data_args.delimiter, encoding=data_args.encoding,
                                        drop_unlabelled_rows=data_args.drop_unlabelled_rows)
        elif data_args.dataset_name:
            from_hub.append(split)
    for split, table in load_splits(data_args, {s: None for s in from_hub}).items():
        splits[split] = read_hub_split(table.dataset, table.source, data_args.image_column, data_args.label_column)
    for split, images in splits.items():
        limit = sample_limit(data_args, split)
        if limit is not None and limit < len(images):
            splits[split] = images.select(range(limit))
    return splits


def subgroup_values(images, columns: list[str], data_args: ImageDataArguments) -> dict[str, list]:
    """--subgroup_columns of one split, per image: a column of its table of paths (the row each image came from, so
    carved and shortened splits match), or else a DICOM header keyword of its file (PatientSex, Manufacturer; a header
    without it is the '(missing)' group). Read for the subgroup report only, never fed to the model."""
    from pydicom.datadict import tag_for_keyword

    table, row_of = None, {}
    if os.path.isfile(images.origin) and not images.origin.endswith(".npz"):
        table = read_table(images.origin, data_args.delimiter, data_args.encoding)
        if data_args.drop_unlabelled_rows:
            table = drop_unlabelled_rows(table, data_args.label_column)  # the rows read_images kept
        row_of = {table.where(i): i for i in range(len(table))}
    values = {}
    for column in columns:
        if table is not None and has_column(table, column):
            cells = table[column]
            values[column] = [cells[row_of[ref]] for ref in images.refs]
            continue
        if tag_for_keyword(column) is None or not all(isinstance(s, str) and is_dicom(s) for s in images.sources):
            raise DataError(f"--subgroup_columns: '{column}' is neither a column of a table of images nor a DICOM "
                            "header keyword of DICOM images (e.g. PatientSex, Manufacturer)", path=images.origin)
        cells = []
        for source in images.sources:
            try:
                cells.append(dicom_attribute(source, column))
            except DataError:  # no such attribute in this header
                cells.append(None)
        values[column] = cells
    return values


def training_groups(data_args: ImageDataArguments, train) -> list[str]:
    """--group_column: a column of a table training file, or a DICOM attribute of every training image (PatientID,
    StudyInstanceUID, ...), read only to keep each group in one split and never written."""
    table = data_args.train_file if data_args.train_file and not data_args.train_file.endswith(".npz") else None
    rows = read_table(table, data_args.delimiter, data_args.encoding) if table else None
    if rows is not None and data_args.drop_unlabelled_rows:
        rows = drop_unlabelled_rows(rows, data_args.label_column)  # the rows read_images kept
    if rows is not None and has_column(rows, data_args.group_column):
        return table_groups(rows, data_args.group_column)[: len(train)]
    if not any(is_dicom(source) for source in train.sources[:1]):
        raise DataError(f"--group_column '{data_args.group_column}' is not a column of a table training file "
                        "(CSV/JSONL/parquet), and the training images are not DICOM files whose attribute it could be",
                        path=table or train.origin)
    return dicom_groups(train.sources, data_args.group_column, train.origin)


@main_guard
def main(args: list[str] | None = None) -> dict[str, float]:
    # 1. Arguments: command line > --config > RECIPE_DEFAULTS.
    model_args, data_args, training_args, set_args, subgroup_args = parse_args(
        ImageModelArguments, ImageDataArguments, TrainingArguments, ConformalArguments, SubgroupArguments,
        defaults=RECIPE_DEFAULTS, args=args, description=__doc__)

    # 2. Logging (metadata only), the output folder and the checkpoint to resume from, before any data is read;
    # 3. the seed, before anything random (both in shared/core/args.py: start_run).
    run = start_run(training_args)

    # 4. Data: read and validate every split before the model is loaded; carve validation / a test fold out of the
    # training data where asked (stratified by label; --group_column of a table keeps each patient in one split).
    splits = read_splits(data_args, run.splits)
    carve = splits_to_carve(data_args, training_args, splits)
    check_split_sources(run.splits, [*splits, *carve], WHERE_FROM)
    split_rows = {}
    if carve:
        train, groups = splits["train"], None
        if data_args.group_column:
            groups = training_groups(data_args, train)
        strata = None if train.multi_label else train.labels
        for split, idx in carve_splits(len(train), data_args, carve, training_args.seed, strata, groups).items():
            splits[split], split_rows[split] = train.select(idx), idx
    for split in ("train", "validation"):
        if split in splits and not splits[split].labeled:
            raise DataError(f"{split} data needs labels", path=splits[split].origin)
    if len({s.multi_label for s in splits.values() if s.labeled}) > 1:
        raise DataError("some splits are multi-label and others single-label; use one label format")
    also_in_train = images_also_in_train({split: images.sources for split, images in splits.items()})
    warn_shared_examples(also_in_train, {split: len(images) for split, images in splits.items()}, "images",
                         "the same file or the same bytes")

    # 5. Labels: the classes of the training data (or of the model folder when only evaluating / predicting).
    if "train" in splits:
        multi_label = splits["train"].multi_label
        label_names = require_classes(label_names_for([splits["train"]]), multi_label, splits["train"].origin)
        if not multi_label:  # an .npz names classes by id: every one must occur in the training images themselves
            require_classes(sorted(names_in(splits["train"].labels)), multi_label, splits["train"].origin)
    else:
        label_names, multi_label = trained_labels(load_pretrained(AutoConfig, model_args))
    known_as = "the training data" if "train" in splits else "the model's labels"
    if data_args.decision_threshold is not None and not multi_label and len(label_names) != 2:
        raise DataError(f"--decision_threshold applies to binary and multi-label tasks; this one has "
                        f"{len(label_names)} classes (predicted by argmax)")
    label2id = {name: i for i, name in enumerate(label_names)}
    encoded = {split: encode_image_labels(images, label2id, known_as)
               for split, images in splits.items() if images.labeled}
    # --subgroup_columns: table columns or DICOM header keywords of the labelled splits, read for the report only
    require_subgroup_columns({}, subgroup_args.columns, [data_args.image_column, data_args.label_column], multi_label)
    group_values = {split: subgroup_values(splits[split], subgroup_args.columns, data_args)
                    for split in ("validation", "test") if split in encoded and subgroup_args.columns}
    logger.info("%s task with %d labels", "multi-label" if multi_label else "single-label", len(label_names))

    # 6. Model and image processor: a fresh head over the labels (training), or the fine-tuned folder as saved; the
    # position embeddings are resized once to the training resolution. The processor loads here, the model at the
    # end of step 7: every image is decoded before it, so an unreadable one stops the run before the model loads.
    processor = load_pretrained(AutoImageProcessor, model_args)
    image_size = model_args.image_size or processor_size(processor)

    # 7. Preprocessing: every image decoded once (RGB, resized); bad images stop here or are skipped and counted.
    resample = int(getattr(processor, "resample", 2) or 2)
    processor = configure_processor(processor, image_size, resample)  # the processor saved: what training does
    mean, std = normalization(processor)
    if "train" in splits:  # DICOM / 16-bit values -> 8 bits by one rule for the run, saved with the model
        mapping = fit_pixel_mapping(splits["train"].sources, data_args.window)
    else:
        mapping = (PixelMapping.given(data_args.window) if data_args.window
                   else PixelMapping.load(model_args.model_name_or_path))
    if mapping.window is not None:  # 8-bit data has nothing to map
        logger.info("pixel mapping above 8 bits: %s", mapping.describe())
    decoded, decode_seconds = {}, {}
    cache_dir = data_args.image_cache_dir or automatic_cache_dir(sum(map(len, splits.values())),
                                                                 (3, image_size, image_size))
    for split, images in splits.items():
        start = time.perf_counter()
        decoded[split] = decode_images(images, image_size, data_args.skip_bad_images, resample, mapping, cache_dir)
        decode_seconds[split] = time.perf_counter() - start
    label_ids = {split: encoded[split][d.kept] for split, d in decoded.items() if split in encoded}

    def subgroups(split: str) -> dict | None:  # the decoded (kept) images' values
        if split not in group_values:
            return None
        return {c: [values[i] for i in decoded[split].kept] for c, values in group_values[split].items()}
    # --conformal_alpha: the validation images that calibrate prediction sets, apart from the temperature's; a split
    # too small for the alpha fails here, before the model loads (shared/evaluation/conformal.py)
    set_plan = plan_conformal(set_args, label_ids.get("validation"), multi_label, label_names,
                              training_args.do_train, training_args.seed)
    augmenter = Augmenter(data_args.augment_config()) if data_args.augment else None
    pixels = {split: PixelDataset(d.pixels, label_ids.get(split), mean, std,
                                  augmenter if split == "train" else None, seed=data_seed(training_args))
              for split, d in decoded.items()}
    for split, d in decoded.items():
        logger.info("%s: %d images at %d px%s%s", split, len(d.kept), image_size,
                    f" ({len(d.bad)} unreadable skipped)" if d.bad else "",
                    ", read from the image cache" if d.cache_hit else (", decoded into the image cache"
                                                                       if cache_dir else ""))

    # The model of step 6, loaded only now that every image has been read (a bad one stopped the run above).
    model, frozen_layers = model_for_run(
        AutoModelForImageClassification, model_args, classification_config(model_args, label_names, multi_label),
        training_args, resize=lambda m: set_image_size(m, image_size), prepare_base=reload_at_trained_size,
        ignore_mismatched_sizes=True)  # a checkpoint's own head (e.g. ImageNet's) is replaced
    trainable, total = count_parameters(model)
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)

    # 8. Trainer: the batch size, epochs and class weighting the training data calls for where the user set none
    # (shared/training/adaptive.py); class imbalance through compute_loss_func (weighted / focal loss) or oversampling;
    # the best epoch on validation kept.
    loss_func, derived = None, Derived()
    if training_args.do_train:
        if model_args.oversample:
            pixels["train"] = oversample(pixels["train"], label_ids["train"], training_args.seed)
            logger.info("oversampled training set: %d images", len(pixels["train"]))
        derived = adapt_to_training_data(training_args, model_args, len(pixels["train"]),
                                         RECIPE_DEFAULTS["num_train_epochs"],
                                         None if multi_label else label_ids["train"], len(label_names))
        loss_func = training_loss(label_ids["train"], len(label_names), model_args.class_weighting,
                                  model_args.focal_gamma, multi_label,
                                  label_smoothing=training_args.label_smoothing_factor)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=pixels.get("train"),
        eval_dataset=pixels.get("validation"),
        compute_loss_func=loss_func,
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(model, training_args, model_args.layerwise_lr_decay),
        callbacks=[EpochSeededSampling()],  # a resumed run trains in the same order (shared/core/resume.py)
    )
    output_dir, is_main = training_args.output_dir, trainer.is_world_process_zero()
    if is_main:
        remove_earlier_results(output_dir, run.earlier_results)

    def predict_logits(split: str) -> np.ndarray:
        def collate(items):
            return {"pixel_values": torch.stack([item["pixel_values"] for item in items])}

        return np.stack(predict_in_order(trainer.model, pixels[split], collate, training_args.per_device_eval_batch_size))

    def probabilities(logits: np.ndarray) -> np.ndarray:
        return sigmoid(logits) if multi_label else softmax(logits)

    def uncalibrated(logits: np.ndarray) -> np.ndarray | None:
        """The probabilities the head gave before calibration (for the before/after metrics), or None."""
        return probabilities(calibration.undo(logits)) if calibration else None

    best_epoch = keep_best_epoch(trainer, "validation" in pixels, "macro_f1", lambda model: selection_macro_f1(
        label_ids["validation"], probabilities(predict_logits("validation")), multi_label), run.checkpoint)

    # 9. Train.
    results: dict[str, float] = {}
    if training_args.do_train:
        results.update(train_with_resume(trainer, run.checkpoint).metrics)
        results.update(train_samples=len(pixels["train"]), train_trainable_parameters=trainable,
                       train_total_parameters=total, train_skipped_images=len(decoded["train"].bad),
                       train_decode_runtime=decode_seconds["train"],  # the one-off decoding, before train_runtime
                       train_batch_size=training_args.per_device_train_batch_size,
                       **(best_epoch.results() if best_epoch else {}))

    def counts(split: str) -> dict[str, int]:
        return {"samples": len(decoded[split].kept), "skipped_images": len(decoded[split].bad),
                **({"images_also_in_train": also_in_train[split]} if split in also_in_train else {})}

    # 10. Evaluate on validation: temperature scaling is fitted there and folded into the head
    # (shared/evaluation/calibration.py), then multi-label decision thresholds are tuned on the calibrated
    # probabilities (never on test); with --conformal_alpha the temperature sees only its part of the split and the
    # prediction sets are calibrated on the other (shared/evaluation/conformal.py).
    thresholds = data_args.decision_threshold
    if multi_label and thresholds is None:
        thresholds = saved_thresholds(trainer.model.config, label_names)
    elif thresholds is None and not training_args.do_train:  # a binary threshold the folder was trained with
        thresholds = getattr(trainer.model.config, "decision_threshold", None)
    calibration = None if training_args.do_train else saved_calibration(trainer.model.config)  # already in the head
    conformal = None if training_args.do_train else saved_conformal(trainer.model.config)
    if "validation" in pixels:
        logits = predict_logits("validation")
        if training_args.do_train and model_args.calibration == "temperature":
            fit_rows = set_plan.temperature_rows if set_plan else np.arange(len(logits))
            calibration = calibrate(trainer, logits[fit_rows], label_ids["validation"][fit_rows], multi_label,
                                    len(label_names))
            logits = calibration.apply(logits) if calibration else logits  # what the head now gives
        probs = probabilities(logits)
        if multi_label and training_args.do_train and data_args.decision_threshold is None:
            thresholds = tune_thresholds(label_ids["validation"], probs)
        if set_plan:
            conformal = set_plan.fit(probs, label_ids["validation"])
        metrics = score_and_report(output_dir if is_main else None, "eval", label_ids["validation"], probs, label_names,
                                   multi_label, thresholds, uncalibrated=uncalibrated(logits), conformal=conformal,
                                   set_rows=set_plan.temperature_rows if set_plan else None,
                                   subgroups=subgroups("validation"), subgroup_min_size=subgroup_args.subgroup_min_size)
        results.update(prefixed({**metrics, **counts("validation")}, "eval"))

    # 11. Predict on test: the predictions file always; metrics with bootstrap CIs, report and plots when labelled.
    if "test" in pixels:
        logits = predict_logits("test")
        probs = probabilities(logits)
        labelled = "test" in label_ids
        if labelled:
            metrics = score_and_report(output_dir if is_main else None, "test", label_ids["test"], probs, label_names,
                                       multi_label, thresholds, data_args.bootstrap_resamples, training_args.seed,
                                       uncalibrated=uncalibrated(logits), conformal=conformal, subgroups=subgroups("test"),
                                       subgroup_min_size=subgroup_args.subgroup_min_size)
            results.update(prefixed({**metrics, **counts("test")}, "test"))
        if is_main:
            images, kept = splits["test"], decoded["test"].kept
            rows = np.asarray(split_rows["test"])[kept] if "test" in split_rows else kept  # a fold: training rows
            paths = [s if isinstance(s, str) else images.refs[i][0] for i, s in ((i, images.sources[i]) for i in kept)]
            write_predictions(output_dir, rows, probs, label_names, multi_label, thresholds, data_args.label_separator,
                              gold=[images.labels[i] for i in kept] if labelled else None,
                              extra={"image": paths} if data_args.write_image_paths else None,
                              prediction_sets=conformal.named(probs, label_names) if conformal else None)
            if data_args.explain:  # heat-map overlays: image content, sensitive like the inputs
                explain_image_predictions(output_dir, "test", trainer.model, pixels["test"], decoded["test"].pixels,
                                          rows, probs, label_names, multi_label, thresholds, data_args.explain)

    # 12. Save: the model (plain, merged LoRA, or adapter + head) and processor, results and the model card. Every
    # process takes part in gathering FSDP-sharded weights (None otherwise); only the main one writes.
    cuts = decision_thresholds(label_names, thresholds) if multi_label else None  # config.json + thresholds.json
    if training_args.do_train:
        save_trained(trainer, output_dir, model_args, processor,
                     config_updates={**task_record("image_classification", image_column=data_args.image_column,
                                                   label_column=data_args.label_column,
                                                   label_separator=data_args.label_separator),
                                     **({"decision_thresholds": cuts} if cuts else {}),
                                     "decision_threshold": None if multi_label else data_args.decision_threshold,
                                     "augmentation": data_args.augment_config().saved() if data_args.augment else None,
                                     "calibration": calibration.saved() if calibration else None,
                                     "conformal": conformal.saved() if conformal else None})
        if is_main:
            mapping.save(output_dir)
    if is_main:
        save_all_results(output_dir, results, thresholds=cuts)
        write_model_card(
            output_dir,
            title=f"Medical image classifier ({', '.join(label_names)})",
            base_model=model_args.model_name_or_path,
            pipeline_tag="image-classification",
            task_description=("Multi-label" if multi_label else "Single-label")
            + f" image classification into {len(label_names)} classes at {image_size}x{image_size} px.",
            data_summary={split: {"examples": len(d.kept), **({"labels": label_counts(label_ids[split], label_names)}
                                                              if split in label_ids else {})}
                          for split, d in decoded.items()},
            metrics=results,
            sections=subgroup_section(output_dir, "test") if subgroup_args.columns else None,
            headline_metrics=(MULTI_LABEL_HEADLINE if multi_label else SINGLE_LABEL_HEADLINE)
            + (SET_HEADLINE if conformal else []),
            training=training_card(training_args, model_args, frozen_layers, trainable, total, derived, best_epoch,
                                   calibration, image_size=image_size,
                                   **({"prediction_sets": conformal.describe()} if conformal else {}),
                                   **{"pixel mapping (DICOM, 16-bit)": mapping.describe()},
                                   augmentation=data_args.augment_config() if data_args.augment else "none"),
            limitations=[
                "Trained on resized images; fine detail lost at low resolution is invisible to the model.",
                "Decision threshold: " + (f"{thresholds}" if thresholds is not None and not multi_label
                                          else "argmax / 0.5 (see thresholds.json for multi-label)"),
            ],
        )
        logger.info("results, predictions and model written to %s", output_dir)
    return results


if __name__ == "__main__":
    main()
