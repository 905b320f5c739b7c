"""Benchmark: the relation recipe against a plain-Trainer baseline on DDI 2013, in one run, same data, model, machine.

The baseline is a plain ``Trainer`` with what relation extraction cannot do without, entity markers: each candidate
pair's sentence with ``[E1] ... [/E1]`` / ``[E2] ... [/E2]`` (the recipe's own marked sentences, so both see the same
pairs), the markers added to the tokenizer and the embeddings resized, ``AutoModelForSequenceClassification``, texts
truncated at 128 tokens (the markers may be cut off), no class weighting, and ``TrainingArguments`` defaults:
batch 8, AdamW at lr 5e-5, linear decay, fp32, random batches. The recipe runs with its own defaults (class weights
by inverse square root frequency, the first third of the encoder frozen, batch 8 grouped by length, lr 1e-4, sentences
fitted around the pair), on the same training pairs.

Both are scored on the same test pairs with the same code: precision, recall and F1 micro-averaged over the four
positive types (mechanism, effect, advise, int; the DDI convention), bootstrap 95% CIs over documents. Training
pairs/s = pairs x epochs / ``train_runtime``. Writes ``benchmarks/results/relations_<timestamp>.{json,md}``.

    # the measurement of the recipe README: the whole corpus, one epoch each (on 2 CPU cores, about 35 minutes)
    python benchmarks/bench_relations.py --epochs 1
    # quick check
    python benchmarks/bench_relations.py --max_train_pairs 2000 --max_test_pairs 1000 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from shared.concepts.i2b2 import NO_RELATION  # noqa: E402
from shared.concepts.markers import add_marker_tokens  # noqa: E402
from shared.concepts.relations import read_relation_split  # noqa: E402
from shared.core.runner import run_recipe  # noqa: E402
from shared.evaluation.metrics import positive_micro_metrics  # noqa: E402

SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
DDI = os.path.join(SHARED, "data", "relations", "ddi")
MODEL = os.path.join(SHARED, "models", "all-MiniLM-L6-v2")


def run_baseline(args, out: str) -> dict:
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer
    from transformers import TrainingArguments, set_seed

    set_seed(args.seed)
    train = read_relation_split(os.path.join(DDI, "train"))
    test = read_relation_split(os.path.join(DDI, "test"))
    train = train.select(range(min(len(train), args.max_train_pairs or len(train))))
    test = test.select(range(min(len(test), args.max_test_pairs or len(test))))
    labels = [NO_RELATION, *sorted(set(train.labels) - {NO_RELATION})]
    label2id = {name: i for i, name in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    add_marker_tokens(tokenizer)

    def encode(pairs):
        enc = tokenizer([" ".join(w) for w in pairs.words], truncation=True, max_length=128)
        return datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                           "labels": [label2id[name] for name in pairs.labels]})

    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    model.resize_token_embeddings(len(tokenizer))
    training_args = TrainingArguments(
        output_dir=out, num_train_epochs=args.epochs, seed=args.seed, use_cpu=not torch.cuda.is_available(),
        save_strategy="no", report_to="none", disable_tqdm=True, logging_strategy="epoch",
        # everything else at its default: batch 8, lr 5e-5, AdamW, linear schedule, fp32, random batches
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=encode(train), processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer))
    metrics = trainer.train().metrics
    logits = trainer.predict(encode(test)).predictions
    gold = np.array([label2id[name] for name in test.labels])
    scores = positive_micro_metrics(gold, logits, 0, args.bootstrap_resamples, args.seed, test.groups)
    return {"train_pairs": len(train), "test_pairs": len(test), "train_runtime": metrics["train_runtime"],
            "pairs_per_s": len(train) * args.epochs / metrics["train_runtime"],
            **{f"test_{k}": v for k, v in scores.items()}}


def run_ours(args, out: str) -> dict:
    extra = ["--max_train_samples", str(args.max_train_pairs)] if args.max_train_pairs else []
    extra += ["--max_predict_samples", str(args.max_test_pairs)] if args.max_test_pairs else []
    results = run_recipe("relation_extraction", [
        "--model_name_or_path", args.model, "--train_file", os.path.join(DDI, "train"),
        "--test_file", os.path.join(DDI, "test"), "--output_dir", out, "--do_train", "--do_predict",
        "--num_train_epochs", str(args.epochs), "--seed", str(args.seed),
        "--bootstrap_resamples", str(args.bootstrap_resamples), *extra, *args.recipe_args])
    return {"train_pairs": results["train_samples"], "test_pairs": results["test_samples"],
            "train_runtime": results["train_runtime"],
            "pairs_per_s": results["train_samples"] * args.epochs / results["train_runtime"],
            **{k: v for k, v in results.items() if k.startswith(("test_f1", "test_precision", "test_recall"))}}


def cell(row: dict, name: str) -> str:
    return f"{row[name]:.3f} ({row[name + '_ci_low']:.3f}–{row[name + '_ci_high']:.3f})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--max_train_pairs", type=int, default=None, help="first N training pairs (all)")
    parser.add_argument("--max_test_pairs", type=int, default=None, help="first N test pairs (all)")
    parser.add_argument("--epochs", type=float, default=3.0, help="epochs for both (the Trainer's and recipe's 3)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bootstrap_resamples", type=int, default=1000)
    parser.add_argument("--recipe_args", nargs=argparse.REMAINDER, default=[], help="extra recipe flags (last)")
    parser.add_argument("--results_dir", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args(argv)
    for path in (args.model, DDI):
        if not os.path.isdir(path):
            sys.exit(f"error: {path}: not found (the DDI corpus and the model are in ../shared)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="bench-rel-") as tmp:
        base = run_baseline(args, os.path.join(tmp, "baseline"))
        ours = run_ours(args, os.path.join(tmp, "recipe"))
    setup = {"model": os.path.basename(os.path.normpath(args.model)), "epochs": args.epochs,
             "max_train_pairs": args.max_train_pairs, "max_test_pairs": args.max_test_pairs, "seed": args.seed,
             "recipe_args": args.recipe_args, "torch": torch.__version__, "threads": torch.get_num_threads(),
             "cpu": platform.processor() or platform.machine(),
             "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    lines = [f"Relation benchmark (DDI 2013): {setup['model']}, {args.epochs:g} epoch(s), {base['train_pairs']} "
             f"training pairs, {base['test_pairs']} test pairs, {setup['threads']} threads", "",
             "| run | training pairs/s | speed ratio | test F1 (positive micro, 95% CI) | precision | recall |",
             "|---|---|---|---|---|---|"]
    for name, row in (("plain Trainer, markers, no class weighting", base), ("recipe (defaults)", ours)):
        lines.append(f"| {name} | {row['pairs_per_s']:.1f} | {row['pairs_per_s'] / base['pairs_per_s']:.2f} | "
                     f"{cell(row, 'test_f1')} | {cell(row, 'test_precision')} | {cell(row, 'test_recall')} |")
    table = "\n".join(lines) + "\n"
    print(table)
    os.makedirs(args.results_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(args.results_dir, f"relations_{stamp}.json"), "w", encoding="utf-8") as f:
        json.dump({"setup": setup, "baseline": base, "recipe": ours}, f, indent=2)
    with open(os.path.join(args.results_dir, f"relations_{stamp}.md"), "w", encoding="utf-8") as f:
        f.write(table)


if __name__ == "__main__":
    main()
