"""Benchmark: the image recipe against a plain-Trainer baseline, in one run, on the same data and model.

The baseline is configured like transformers' ``examples/pytorch/image-classification/run_image_classification.py``:
PIL images in a ``datasets.Dataset``, the model's image processor applied per step (``set_transform``: resize,
center crop to the processor's size, e.g. 224 px), fp32. (Its torchvision augmentation is left out: torchvision
does not import with the CPU torch here; that only makes the baseline faster.) The recipe decodes and resizes once
to ``--image_size``, augments in torch and trains with bf16 autocast where the CPU supports it.

Prints one markdown table row per (dataset, system): training images/s (recipe: including its one-off decoding),
the speed ratio, test accuracy and AUROC. Needs ../shared/data and ../shared/models (skips datasets not found).

    python benchmarks/bench_image.py --datasets pneumoniamnist --max_train_samples 512 --max_test_samples 200
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile

import numpy as np
import torch

from shared.core.runner import run_recipe
from shared.evaluation.metrics import classification_metrics, softmax
from shared.images import decode as image_decode
from shared.images import readers as image_formats

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

DATA = os.path.join(ROOT, "..", "shared", "data", "images")
DATASETS = {
    "pneumoniamnist": {"train": ["--train_file", f"{DATA}/pneumoniamnist/pneumoniamnist.npz"], "image_size": 56},
    "chest_xray": {"train": ["--train_dir", f"{DATA}/chest_xray/train", "--test_dir", f"{DATA}/chest_xray/test"],
                   "image_size": 112},
}


def subset(images: image_formats.ImageSet, n: int | None, seed: int) -> image_formats.ImageSet:
    """A seeded random subset (the npz/folder order is sorted by class, so 'first n' would be one class)."""
    if n is None or n >= len(images):
        return images
    return images.select(sorted(np.random.default_rng(seed).choice(len(images), n, replace=False).tolist()))


def read_subsets(spec, args) -> dict:
    """The seeded train and test subsets both systems use."""
    out = {}
    for split in ("train", "test"):
        path = spec["train"][1] if spec["train"][0] == "--train_file" else spec["train"][{"train": 1, "test": 3}[split]]
        limit = args.max_train_samples if split == "train" else args.max_test_samples
        out[split] = subset(image_formats.read_images(path, split), limit, args.seed)
    return out


def subset_files(subsets: dict, folder: str) -> list[str]:
    """The subsets as files the recipe reads like any user's data: a MedMNIST .npz, or CSV tables of image paths."""
    train, test = subsets["train"], subsets["test"]
    if not isinstance(train.sources[0], str):  # arrays from an .npz
        path = os.path.join(folder, "subset.npz")
        np.savez(path, **{f"{prefix}_{kind}": values for prefix, images in (("train", train), ("test", test))
                          for kind, values in (("images", np.stack(images.sources)),
                                               ("labels", np.array([int(label) for label in images.labels])))})
        return ["--train_file", path]
    files = []
    for split, images in (("train", train), ("test", test)):
        path = os.path.join(folder, f"{split}.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "label"])
            writer.writerows(zip(images.sources, images.labels))
        files += [f"--{split}_file", path]
    return files


def run_ours(name, spec, args, out):
    """The recipe, in-process, on the same images as the baseline (written as files it reads)."""
    os.makedirs(out, exist_ok=True)
    data = subset_files(read_subsets(spec, args), out)
    extra = ["--use_lora", "--learning_rate", str(args.lora_learning_rate)] if args.lora else []
    results = run_recipe("image_classification", [
        "--model_name_or_path", args.model, "--output_dir", os.path.join(out, "run"), *data, "--do_train",
        "--do_predict", "--image_size", str(args.image_size or spec["image_size"]), "--num_train_epochs",
        str(args.epochs), "--learning_rate", str(args.learning_rate), "--per_device_train_batch_size",
        str(args.batch_size), "--class_weighting", "balanced", "--bootstrap_resamples", "0", "--seed", str(args.seed),
        *extra,
    ])
    images_seen = results["train_samples"] * args.epochs
    train_s = results["train_runtime"] + results["train_decode_runtime"]  # the one-off decoding counts too
    return {"images_per_s": images_seen / train_s, "accuracy": results["test_accuracy"],
            "auroc": results["test_auroc"], "train_s": train_s}


def run_baseline(name, spec, args, out):
    """run_image_classification.py's recipe: PIL images, processor per step in set_transform, fp32 Trainer."""
    import datasets
    from transformers import AutoImageProcessor, AutoModelForImageClassification, Trainer, TrainingArguments

    subsets = read_subsets(spec, args)
    train_set, test_set = subsets["train"], subsets["test"]
    names = image_formats.label_names_for([train_set, test_set])
    label2id = {n: i for i, n in enumerate(names)}

    def to_dataset(images):
        pil = [image_decode.open_image(s) for s in images.sources]  # like load_dataset("imagefolder")
        return datasets.Dataset.from_dict({"image": pil,
                                           "label": image_formats.encode_image_labels(images, label2id).tolist()},
                                          features=datasets.Features({"image": datasets.Image(),
                                                                      "label": datasets.Value("int64")}))

    processor = AutoImageProcessor.from_pretrained(args.model)

    def transform(batch):
        batch["pixel_values"] = processor([im.convert("RGB") for im in batch["image"]], return_tensors="pt")["pixel_values"]
        return batch

    train_ds, test_ds = to_dataset(train_set), to_dataset(test_set)
    train_ds.set_transform(transform)
    test_ds.set_transform(transform)

    def collate(examples):
        return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
                "labels": torch.tensor([e["label"] for e in examples])}

    model = AutoModelForImageClassification.from_pretrained(
        args.model, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id,
        ignore_mismatched_sizes=True,
    )
    training_args = TrainingArguments(
        output_dir=out, num_train_epochs=args.epochs, learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64, remove_unused_columns=False,
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=args.seed,
        use_cpu=not torch.cuda.is_available(), bf16=False,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_ds, data_collator=collate)
    train_result = trainer.train()
    logits = trainer.predict(test_ds).predictions
    metrics = classification_metrics(np.array(test_ds["label"]), softmax(logits))
    return {
        "images_per_s": train_result.metrics["train_samples_per_second"],
        "accuracy": metrics["accuracy"],
        "auroc": metrics["auroc"],
        "train_s": train_result.metrics["train_runtime"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(ROOT, "..", "shared", "models", "dinov2-small"))
    parser.add_argument("--datasets", default="pneumoniamnist,chest_xray")
    parser.add_argument("--systems", default="recipe,baseline")
    parser.add_argument("--image_size", type=int, default=None, help="Recipe image size (default per dataset).")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--lora", action="store_true", help="Recipe with LoRA instead of a full fine-tune.")
    parser.add_argument("--lora_learning_rate", type=float, default=5e-4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_test_samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="Also write the rows to this JSON file.")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.model):
        sys.exit(f"model folder not found: {args.model}")
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    print(f"torch threads: {torch.get_num_threads()}; epochs {args.epochs}; train subset {args.max_train_samples}; "
          f"test subset {args.max_test_samples}", flush=True)
    print("| dataset | system | train images/s | speed-up | test accuracy | test AUROC | train s |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for name in args.datasets.split(","):
        spec = DATASETS[name]
        if not os.path.exists(spec["train"][1]):
            print(f"| {name} | skipped: data not found | | | | | |")
            continue
        found = {}
        for system in args.systems.split(","):
            with tempfile.TemporaryDirectory() as out:
                found[system] = (run_ours if system == "recipe" else run_baseline)(name, spec, args, out)
        base = found.get("baseline", {}).get("images_per_s")
        for system, r in found.items():
            label = f"recipe{' LoRA' if args.lora else ''} {args.image_size or spec['image_size']}px bf16" \
                if system == "recipe" else "baseline 224px fp32"
            ratio = f"{r['images_per_s'] / base:.1f}x" if base else ""
            print(f"| {name} | {label} | {r['images_per_s']:.1f} | {ratio} | {r['accuracy']:.3f} | {r['auroc']:.3f} "
                  f"| {r['train_s']:.0f} |", flush=True)
            rows.append({"dataset": name, "system": label, **r})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
