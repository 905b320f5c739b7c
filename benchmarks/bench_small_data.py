#!/usr/bin/env python
"""Small, imbalanced training sets: each recipe's defaults against a plain-Trainer baseline, in one run.

    python benchmarks/bench_small_data.py                                   # every data set, 300 and 1,000, seed 42
    python benchmarks/bench_small_data.py --datasets medical_abstracts ncbi_disease --sizes 300 --seeds 1 2

For every (data set, training size, seed) the script draws a seeded subset of the training split (a class whose
share is above 15% stays as drawn; the rarest class is cut to 10% of the subset when it is more common than 15%, so
every single-label subset has a minority class under 15%), keeps the full validation and test splits (the chest
X-ray folders have no validation split: 200 seeded training images outside the subset stand in), and trains:

- the recipe with its defaults (it gets the validation split, as a user with one would give it);
- a plain ``Trainer`` configured like the matching transformers example (``run_classification.py``, ``run_ner.py``,
  ``run_image_classification.py``): ``TrainingArguments`` defaults (batch 8, lr 5e-5, 3 epochs, linear decay, fp32),
  texts padded / truncated to 128 tokens, NER labels on first subwords, images through the processor per step.
  Like those scripts it does no model selection on the validation split.

Both are scored on the same test split with the same code (``shared.evaluation.metrics`` / seqeval): macro-F1 (text,
images; multi-label Hallmarks of Cancer: macro-F1 at 0.5) or strict entity F1 (NER), with bootstrap 95% CIs, whether the
run collapsed (every test example given the same answer while the gold answers differ: one class, one label set, or
no entity), training samples/s and their ratio. Writes ``benchmarks/results/small_data.{json,md}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
TEXT_MODEL = SHARED / "models" / "all-MiniLM-L6-v2"
IMAGE_MODEL = SHARED / "models" / "dinov2-small"
MINORITY_SHARE, MINORITY_CAP = 0.15, 0.10

DATASETS = {
    "medical_abstracts": ("text", DATA / "text_classification" / "medical_abstracts"),
    "hallmarks_of_cancer": ("text", DATA / "text_classification" / "hallmarks_of_cancer"),
    "ncbi_disease": ("ner", DATA / "ner" / "ncbi_disease"),
    "anatem": ("ner", DATA / "ner" / "anatem"),
    "pneumoniamnist": ("image", DATA / "images" / "pneumoniamnist" / "pneumoniamnist.npz"),
    "chest_xray": ("image", DATA / "images" / "chest_xray"),
}
IMAGE_SIZE = {"pneumoniamnist": 56, "chest_xray": 112}  # what bench_image.py and the image README use


# ------------------------------------------------------------------------------------------------ subsets
def imbalanced_subset(labels: list, n: int, seed: int) -> list[int]:
    """Indices of a seeded subset of ``n`` rows whose rarest class is under 15% (cut to 10% when the data has it
    above 15%). ``labels[i]`` is a class name, or None for rows without one class (NER sentences, multi-label)."""
    rng = np.random.default_rng(seed)
    if n >= len(labels):
        return list(range(len(labels)))
    if labels[0] is None:
        return sorted(rng.choice(len(labels), n, replace=False).tolist())
    _, inverse = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    counts = np.bincount(inverse)
    rarest = int(counts.argmin())
    rare_rows = np.flatnonzero(inverse == rarest)
    others = np.flatnonzero(inverse != rarest)
    n_rare = round(n * counts[rarest] / len(labels))
    if n_rare / n > MINORITY_SHARE:
        n_rare = round(n * MINORITY_CAP)
    picked = np.concatenate([rng.choice(rare_rows, n_rare, replace=False), rng.choice(others, n - n_rare, replace=False)])
    return sorted(picked.tolist())


def share_of_rarest(labels: list) -> float | None:
    if not labels or labels[0] is None:
        return None
    _, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    return float(counts.min() / counts.sum())


# ------------------------------------------------------------------------------------------------ text
def read_text_split(folder: Path, split: str) -> list[dict]:
    csv_path, jsonl_path = folder / f"{split}.csv", folder / f"{split}.jsonl"
    if csv_path.exists():
        with open(csv_path, encoding="utf-8", newline="") as f:
            return [{"text": row["text"], "label": row["label"]} for row in csv.DictReader(f)]
    with open(jsonl_path, encoding="utf-8") as f:
        return [{"text": r["text"], "labels": r["labels"]} for r in map(json.loads, f) if r]


def write_jsonl(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def text_baseline(train: list[dict], test: list[dict], seed: int, out: str) -> dict:
    """run_classification.py's defaults: padded to 128 tokens, batch 8, lr 5e-5, 3 epochs, fp32; multi-label with
    BCE and a 0.5 threshold, as its ``problem_type`` does."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments
    from transformers import default_data_collator

    multi = "labels" in train[0]
    names = sorted({n for r in train for n in r["labels"]}) if multi else sorted({r["label"] for r in train})
    index = {n: i for i, n in enumerate(names)}
    tokenizer = AutoTokenizer.from_pretrained(TEXT_MODEL)
    model = AutoModelForSequenceClassification.from_pretrained(
        TEXT_MODEL, num_labels=len(names), id2label=dict(enumerate(names)), label2id=index,
        problem_type="multi_label_classification" if multi else "single_label_classification")

    def gold(rows):
        if not multi:
            return np.array([index[r["label"]] for r in rows])
        out = np.zeros((len(rows), len(names)), dtype=np.float32)
        for i, r in enumerate(rows):
            out[i, [index[n] for n in r["labels"] if n in index]] = 1
        return out

    def encode(rows):
        enc = tokenizer([r["text"] for r in rows], padding="max_length", max_length=128, truncation=True)
        return Dataset.from_dict({**enc, "label": gold(rows).tolist()})

    args = TrainingArguments(output_dir=out, per_device_train_batch_size=8, per_device_eval_batch_size=64,
                             num_train_epochs=3, seed=seed, report_to="none", save_strategy="no",
                             use_cpu=not torch.cuda.is_available(), disable_tqdm=True, logging_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=encode(train), data_collator=default_data_collator)
    metrics = trainer.train().metrics
    logits = trainer.predict(encode(test)).predictions
    return {"gold": gold(test), "logits": logits, "multi_label": multi, "train_runtime": metrics["train_runtime"],
            "samples_per_s": len(train) * 3 / metrics["train_runtime"]}


def text_subset(name: str, n: int, seed: int, folder: Path) -> dict:
    source = DATASETS[name][1]
    train = read_text_split(source, "train")
    multi = "labels" in train[0]
    picked = [train[i] for i in imbalanced_subset([None if multi else r["label"] for r in train], n, seed)]
    write_jsonl(picked, folder / "train.jsonl")
    files = ["--train_file", str(folder / "train.jsonl")]
    for split in ("validation", "test"):
        write_jsonl(read_text_split(source, split), folder / f"{split}.jsonl")
        files += [f"--{split}_file", str(folder / f"{split}.jsonl")]
    if multi:
        files += ["--label_column", "labels"]
    return {"train": picked, "test": read_text_split(source, "test"), "files": files,
            "rarest": share_of_rarest(None if multi else [r["label"] for r in picked]), "multi_label": multi}


# ------------------------------------------------------------------------------------------------ NER
def ner_subset(name: str, n: int, seed: int, folder: Path) -> dict:
    from shared.formats.conll import read_conll

    source = DATASETS[name][1]
    sentences = read_conll(source / "train.tsv").sentences
    picked = [sentences[i] for i in imbalanced_subset([None] * len(sentences), n, seed)]
    with open(folder / "train.tsv", "w", encoding="utf-8") as f:
        for s in picked:
            f.write("".join(f"{tok}\t{tag}\n" for tok, tag in zip(s.tokens, s.tags)) + "\n")
    return {"train_path": str(folder / "train.tsv"), "test_path": str(source / "test.tsv"),
            "files": ["--train_file", str(folder / "train.tsv"), "--validation_file", str(source / "devel.tsv"),
                      "--test_file", str(source / "test.tsv")], "rarest": None}


# ------------------------------------------------------------------------------------------------ images
def image_subset(name: str, n: int, seed: int, folder: Path) -> dict:
    from shared.images.readers import read_images

    source = DATASETS[name][1]
    if name == "pneumoniamnist":
        train = read_images(str(source), "train")
        validation, test = read_images(str(source), "validation"), read_images(str(source), "test")
        picked = train.select(imbalanced_subset(train.labels, n, seed))
    else:
        train = read_images(str(source / "train"), "train")
        test = read_images(str(source / "test"), "test")
        chosen = imbalanced_subset(train.labels, n, seed)
        rest = sorted(set(range(len(train))) - set(chosen))
        held = np.random.default_rng(seed + 1).choice(rest, min(200, len(rest)), replace=False)
        picked, validation = train.select(chosen), train.select(sorted(held.tolist()))
    files = []
    if isinstance(picked.sources[0], np.ndarray):
        path = folder / "subset.npz"
        np.savez(path, **{f"{prefix}_{kind}": values for prefix, images in
                          (("train", picked), ("val", validation), ("test", test))
                          for kind, values in (("images", np.stack(images.sources)),
                                               ("labels", np.array([int(label) for label in images.labels])))})
        files = ["--train_file", str(path)]
    else:
        for split, images in (("train", picked), ("validation", validation), ("test", test)):
            path = folder / f"{split}.csv"
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["image", "label"])
                writer.writerows(zip(images.sources, images.labels))
            files += [f"--{split}_file", str(path)]
    return {"train": picked, "test": test, "files": files + ["--image_size", str(IMAGE_SIZE[name])],
            "rarest": share_of_rarest(picked.labels)}


def image_baseline(train, test, seed: int, out: str) -> dict:
    """run_image_classification.py's defaults (batch 8, lr 5e-5, 3 epochs, fp32, the processor per step)."""
    import datasets
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification, Trainer, TrainingArguments

    from shared.images import decode as image_decode
    from shared.images import readers as image_formats

    names = image_formats.label_names_for([train, test])
    label2id = {n: i for i, n in enumerate(names)}
    processor = AutoImageProcessor.from_pretrained(IMAGE_MODEL)

    def to_dataset(images):
        pil = [image_decode.open_image(s) for s in images.sources]
        ds = datasets.Dataset.from_dict({"image": pil,
                                         "label": image_formats.encode_image_labels(images, label2id).tolist()},
                                        features=datasets.Features({"image": datasets.Image(),
                                                                    "label": datasets.Value("int64")}))
        ds.set_transform(lambda b: {**b, "pixel_values": processor([im.convert("RGB") for im in b["image"]],
                                                                   return_tensors="pt")["pixel_values"]})
        return ds

    def collate(examples):
        return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
                "labels": torch.tensor([e["label"] for e in examples])}

    model = AutoModelForImageClassification.from_pretrained(
        IMAGE_MODEL, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id,
        ignore_mismatched_sizes=True)
    args = TrainingArguments(output_dir=out, num_train_epochs=3, per_device_train_batch_size=8,
                             per_device_eval_batch_size=64, remove_unused_columns=False, report_to="none",
                             save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=seed,
                             use_cpu=not torch.cuda.is_available())
    test_ds = to_dataset(test)
    trainer = Trainer(model=model, args=args, train_dataset=to_dataset(train), data_collator=collate)
    metrics = trainer.train().metrics
    logits = trainer.predict(test_ds).predictions
    return {"gold": np.array(test_ds["label"]), "logits": logits, "multi_label": False,
            "train_runtime": metrics["train_runtime"], "samples_per_s": len(train) * 3 / metrics["train_runtime"]}


# ------------------------------------------------------------------------------------------------ scoring
def score_classifier(found: dict, seed: int) -> dict:
    from shared.evaluation.metrics import classifier_metrics, sigmoid, softmax

    multi, gold = found["multi_label"], found["gold"]
    probs = sigmoid(found["logits"]) if multi else softmax(found["logits"])
    metrics = classifier_metrics(gold, probs, multi, resamples=1000, seed=seed)
    predicted = {tuple(row) for row in (probs >= 0.5).astype(int)} if multi else set(probs.argmax(-1).tolist())
    answers = {tuple(row) for row in gold.astype(int)} if multi else set(gold.tolist())
    return {"metric": metrics["macro_f1"], "ci": (metrics["macro_f1_ci_low"], metrics["macro_f1_ci_high"]),
            "collapsed": len(predicted) == 1 and len(answers) > 1}


def run_baseline(task: str, subset: dict, seed: int, out: str) -> dict:
    import transformers

    transformers.set_seed(seed)
    if task == "ner":
        from bench_ner import run_baseline as ner_baseline

        from shared.ner.metrics import entity_metrics_ci

        settings = argparse.Namespace(seed=seed, epochs=3.0, max_train_samples=None, max_test_samples=None)
        found = ner_baseline(str(TEXT_MODEL), subset["train_path"], subset["test_path"], settings, out,
                             return_tags=True)
        gold, pred = found.pop("gold_tags"), found.pop("predicted_tags")
        ci = entity_metrics_ci(gold, pred, resamples=1000, seed=seed, names=("f1",))["f1"]
        return {"metric": found["test_f1"], "ci": ci,
                "collapsed": not any(t != "O" for s in pred for t in s) and any(t != "O" for s in gold for t in s),
                "samples_per_s": found["samples_per_s"], "train_runtime": found["train_runtime"]}
    found = (text_baseline if task == "text" else image_baseline)(subset["train"], subset["test"], seed, out)
    return {**score_classifier(found, seed), "samples_per_s": found["samples_per_s"],
            "train_runtime": found["train_runtime"]}


def run_recipe_defaults(task: str, subset: dict, seed: int, out: str, extra: list[str]) -> dict:
    from shared.core.runner import run_recipe

    recipe = {"text": "text_classification", "ner": "ner", "image": "image_classification"}[task]
    results = run_recipe(recipe, ["--model_name_or_path", str(IMAGE_MODEL if task == "image" else TEXT_MODEL),
                                  "--output_dir", out, *subset["files"], "--do_train", "--do_eval", "--do_predict",
                                  "--seed", str(seed), *extra])
    key = "test_f1" if task == "ner" else "test_macro_f1"
    collapsed = results.get("test_predicted_entities" if task == "ner" else "test_predicted_classes")
    seen = results["train_samples"] * results["epoch"]
    return {"metric": results[key], "ci": (results[f"{key}_ci_low"], results[f"{key}_ci_high"]),
            "collapsed": collapsed is not None and collapsed <= (0 if task == "ner" else 1),
            "samples_per_s": seen / (results["train_runtime"] + results.get("train_decode_runtime", 0.0)),
            "train_runtime": results["train_runtime"], "epochs": results["epoch"],
            "derived": results.get("train_derived_defaults", "")}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[300, 1000])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--systems", nargs="+", default=["baseline", "recipe"], choices=["baseline", "recipe"])
    parser.add_argument("--recipe_args", nargs=argparse.REMAINDER, default=[], help="extra flags for every recipe run")
    parser.add_argument("--name", default="small_data", help="results file name under benchmarks/results/")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    import transformers

    rows = []
    for name in args.datasets:
        task, source = DATASETS[name]
        if not source.exists() or not (IMAGE_MODEL if task == "image" else TEXT_MODEL).exists():
            print(f"skipping {name}: {source} or its model not found (needs ../shared)", file=sys.stderr)
            continue
        for size in args.sizes:
            for seed in args.seeds:
                with tempfile.TemporaryDirectory(prefix="bench-small-") as tmp:
                    folder = Path(tmp)
                    subset = {"text": text_subset, "ner": ner_subset, "image": image_subset}[task](
                        name, size, seed, folder)
                    row = {"dataset": name, "size": size, "seed": seed, "rarest_class_share": subset["rarest"]}
                    for system in args.systems:
                        started = time.time()
                        if system == "baseline":
                            row[system] = run_baseline(task, subset, seed, str(folder / system))
                        else:
                            row[system] = run_recipe_defaults(task, subset, seed, str(folder / system),
                                                              args.recipe_args)
                        row[system]["wall_s"] = time.time() - started
                        print(f"{name} {size} seed {seed} {system}: {row[system]['metric']:.3f} "
                              f"({row[system]['wall_s']:.0f} s)", flush=True)
                rows.append(row)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    header = (f"Small-data benchmark, {time.strftime('%Y-%m-%d')}; {device}; torch {torch.__version__}, "
              f"transformers {transformers.__version__}; recipe extra args: {' '.join(args.recipe_args) or 'none'}")
    lines = [header, "", "| data | train | seed | rarest class | metric | baseline | recipe | difference | "
             "collapsed (baseline / recipe) | speed ratio | recipe epochs |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        b, r = row.get("baseline"), row.get("recipe")
        metric = "strict F1" if DATASETS[row["dataset"]][0] == "ner" else "macro-F1"

        def cell(found):
            return f"{found['metric']:.3f} ({found['ci'][0]:.3f}–{found['ci'][1]:.3f})" if found else ""

        share = "" if row["rarest_class_share"] is None else f"{100 * row['rarest_class_share']:.1f}%"
        diff = f"{100 * (r['metric'] - b['metric']):+.1f}" if b and r else ""
        collapsed = " / ".join("yes" if found and found["collapsed"] else "no" for found in (b, r))
        ratio = f"{r['samples_per_s'] / b['samples_per_s']:.2f}×" if b and r else ""
        epochs = f"{r['epochs']:g}" if r else ""
        lines.append(f"| {row['dataset']} | {row['size']} | {row['seed']} | {share} | {metric} | {cell(b)} | "
                     f"{cell(r)} | {diff} | {collapsed} | {ratio} | {epochs} |")
    both = [row for row in rows if "baseline" in row and "recipe" in row]
    if both:
        mean = np.mean([row["recipe"]["metric"] - row["baseline"]["metric"] for row in both])
        lines += ["", f"Mean difference (recipe − baseline): {100 * mean:+.1f} points over {len(both)} runs; "
                      f"collapsed runs: baseline {sum(row['baseline']['collapsed'] for row in both)}, "
                      f"recipe {sum(row['recipe']['collapsed'] for row in both)}."]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.name}.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2, default=str))
    (results / f"{args.name}.md").write_text(table)
    return rows


if __name__ == "__main__":
    main()
