#!/usr/bin/env python
"""Text classification recipe vs a plain-Trainer baseline, in one run on one machine.

    python benchmarks/bench_text_classification.py                      # Medical Abstracts + MiniLM from ../shared
    python benchmarks/bench_text_classification.py --max_train_samples 300 --epochs 1   # quick check

The baseline is configured like transformers' `examples/pytorch/text-classification/run_classification.py`
defaults: fp32, batch 8, inputs padded to max length 128, no length grouping, TrainingArguments' defaults
otherwise (lr 5e-5, linear schedule, AdamW). The recipe runs with its own defaults. Both train for the same
number of epochs on the same data, read the same way (the first 128 tokens: the recipe runs with
--long_text truncate, its default being to read whole notes in windows, measured in bench_long_text.py), and are
scored on the same test split. Reported: training samples/s of
both, their ratio, and test macro-F1 / accuracy of both. Results go to benchmarks/results/ (JSON + markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from shared.core.runner import run_recipe

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def run_baseline(model_dir: str, data_dir: Path, epochs: float, max_train: int | None, output_dir: str, seed: int):
    import numpy as np
    import pandas as pd
    import torch
    from datasets import Dataset
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments
    from transformers import default_data_collator

    train = pd.read_csv(data_dir / "train.csv").astype({"label": str})
    test = pd.read_csv(data_dir / "test.csv").astype({"label": str})
    if max_train:
        train = train.head(max_train)
    labels = sorted(train["label"].unique())
    label2id = {l: i for i, l in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    )

    def encode(frame):
        enc = tokenizer(list(frame["text"]), padding="max_length", max_length=128, truncation=True)
        enc["label"] = [label2id[l] for l in frame["label"]]
        return Dataset.from_dict(dict(enc))

    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=8, per_device_eval_batch_size=8, num_train_epochs=epochs,
        seed=seed, report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
        logging_strategy="no",
    )
    trainer = Trainer(model=model, args=args, train_dataset=encode(train), data_collator=default_data_collator,
                      processing_class=tokenizer)
    metrics = trainer.train().metrics
    logits = trainer.predict(encode(test)).predictions
    gold = np.array([label2id[l] for l in test["label"]])
    pred = logits.argmax(-1)
    return {
        "train_samples_per_second": metrics["train_samples_per_second"],
        "train_runtime": metrics["train_runtime"],
        "test_macro_f1": f1_score(gold, pred, average="macro"),
        "test_accuracy": accuracy_score(gold, pred),
    }


def run_ours(model_dir: str, data_dir: Path, epochs: float, max_train: int | None, output_dir: str, seed: int, extra):
    args = [
        "--model_name_or_path", model_dir, "--output_dir", output_dir, "--train_file", str(data_dir / "train.csv"),
        "--test_file", str(data_dir / "test.csv"), "--do_train", "--do_predict", "--num_train_epochs", str(epochs),
        "--seed", str(seed), "--bootstrap_resamples", "1000",
        "--long_text", "truncate",  # the baseline's input (128 tokens): the same work; bench_long_text.py compares modes
        *extra,
    ]
    if max_train:
        args += ["--max_train_samples", str(max_train)]
    results = run_recipe("text_classification", args)
    return {k: results[k] for k in (
        "train_samples_per_second", "train_runtime", "test_macro_f1", "test_accuracy",
        "test_macro_f1_ci_low", "test_macro_f1_ci_high",
    )}


def text_benchmark_parser(description: str) -> argparse.ArgumentParser:
    """The options every text benchmark takes (this one and bench_long_text.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=str(SHARED / "models" / "all-MiniLM-L6-v2"))
    parser.add_argument("--data", default=str(SHARED / "data" / "text_classification" / "medical_abstracts"))
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=42)
    return parser


def main() -> None:
    parser = text_benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="Also write the rows to this JSON file (used by run_all.py).")
    parser.add_argument("--recipe_args", nargs=argparse.REMAINDER, default=[], help="extra flags for the recipe")
    args = parser.parse_args()
    for path in (args.model, args.data):
        if not os.path.exists(path):
            sys.exit(f"error: {path} not found (the benchmark needs ../shared beside the project)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    data_dir = Path(args.data)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Baseline first, recipe second, in the same process: same machine state, same library versions.
        rows["baseline (run_classification.py defaults)"] = run_baseline(
            args.model, data_dir, args.epochs, args.max_train_samples, f"{tmp}/baseline", args.seed
        )
        rows["recipe (defaults, --long_text truncate)"] = run_ours(
            args.model, data_dir, args.epochs, args.max_train_samples, f"{tmp}/recipe", args.seed, args.recipe_args
        )
    base = rows["baseline (run_classification.py defaults)"]["train_samples_per_second"]
    for row in rows.values():
        row["speedup"] = row["train_samples_per_second"] / base
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    header = (
        f"Medical Abstracts, {Path(args.model).name}, {args.epochs:g} epoch(s), "
        f"train samples {args.max_train_samples or 'all'}; {device}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}; {time.strftime('%Y-%m-%d')}"
    )
    lines = [header, "", "| run | train samples/s | speedup | test macro-F1 | test accuracy |", "|---|---|---|---|---|"]
    for name, row in rows.items():
        ci = f" ({row['test_macro_f1_ci_low']:.3f}–{row['test_macro_f1_ci_high']:.3f})" if "test_macro_f1_ci_low" in row else ""
        lines.append(f"| {name} | {row['train_samples_per_second']:.1f} | {row['speedup']:.2f}× | "
                     f"{row['test_macro_f1']:.3f}{ci} | {row['test_accuracy']:.3f} |")
    table = "\n".join(lines)
    print("\n" + table)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "text_classification.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    (out / "text_classification.md").write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
