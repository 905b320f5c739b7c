#!/usr/bin/env python
"""Whole notes vs truncation in the text recipe, in one run on one machine: --long_text truncate / chunk.

    python benchmarks/bench_long_text.py                          # Medical Abstracts + MiniLM from ../shared, 3 epochs
    python benchmarks/bench_long_text.py --max_train_samples 200 --epochs 1   # quick check
    python benchmarks/bench_long_text.py --data ../shared/data/text_classification/hallmarks_of_cancer \
        --recipe_args --label_column labels --class_weighting inverse_sqrt    # multi-label abstracts

Rows (the recipe's defaults otherwise, same seed, same data): truncate at 128 tokens (the recipe before
--long_text); chunk into 128-token windows, training on every window, each note predicted from the mean of its
windows' logits (the max and the first window alone are scored from the same trained folder); the default,
--chunk_aggregation auto, which keeps whichever of the mean and the first window scores better on validation;
the same windows trained one per note per epoch (--train_windows one_per_epoch, auto reading); the truncate-128
folder read in windows (chunk at prediction only); and truncate at 512 (what the model reads).
Reported: how notes were read (with auto, each reading's validation macro-F1 at the kept epoch), test
macro-F1 with its bootstrap 95% CI, micro-F1 (= accuracy for single-label), training notes/s
(notes x epochs / training time, the speed that matters for a data set) and windows/s. Results go to
benchmarks/results/ (JSON + markdown).
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

from bench_text_classification import text_benchmark_parser  # this folder's sibling script (on sys.path)

from shared.core.runner import run_recipe

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # name: (recipe flags, trained folder to evaluate again instead of training)
    "truncate-128": (["--long_text", "truncate", "--max_seq_length", "128"], None),
    "chunk-128 (mean)": (["--long_text", "chunk", "--max_seq_length", "128", "--chunk_aggregation", "mean"], None),
    "chunk-128 (max)": (["--long_text", "chunk", "--max_seq_length", "128", "--chunk_aggregation", "max"],
                        "chunk-128 (mean)"),
    "chunk-128 (first window)": (["--long_text", "chunk", "--max_seq_length", "128", "--chunk_aggregation", "first"],
                                 "chunk-128 (mean)"),
    "chunk-128 (auto, the default)": (["--long_text", "chunk", "--max_seq_length", "128"], None),
    "chunk-128 (one window/epoch, auto)": (["--long_text", "chunk", "--max_seq_length", "128", "--train_windows",
                                            "one_per_epoch"], None),
    "truncate-128 trained, chunk-128 read": (["--long_text", "chunk", "--max_seq_length", "128",
                                              "--chunk_aggregation", "mean"], "truncate-128"),
    "truncate-512": (["--long_text", "truncate", "--max_seq_length", "512"], None),
}
KEYS = ("eval_macro_f1", "test_macro_f1", "test_macro_f1_ci_low", "test_macro_f1_ci_high", "test_accuracy",
        "test_micro_f1", "test_truncated_examples", "test_windows", "test_samples")  # accuracy: single-label


def reading(folder: str) -> str:
    """How the folder reads long notes: its saved aggregation, with the validation scores auto chose by."""
    saved = json.loads((Path(folder) / "config.json").read_text()).get("long_text") or {}
    if saved.get("mode") != "chunk":
        return "first window (truncate)"
    scores = saved.get("chosen_on_validation")
    return saved["aggregation"] + (f" (validation {', '.join(f'{k} {v:.3f}' for k, v in scores.items())})"
                                   if scores else "")


def split_file(data_dir: Path, split: str) -> str:
    """``<split>.csv`` or ``<split>.jsonl`` (Hallmarks of Cancer) in the data folder."""
    found = sorted(data_dir.glob(f"{split}.*"))
    if not found:
        sys.exit(f"error: {data_dir}: no {split}.csv / {split}.jsonl")
    return str(found[0])


def run(name: str, args, data_dir: Path, tmp: str, trained: dict[str, dict]) -> dict:
    flags, reuse = RUNS[name]
    data = ["--validation_file", split_file(data_dir, "validation"), "--test_file", split_file(data_dir, "test"),
            "--do_eval", "--do_predict", "--seed", str(args.seed), "--bootstrap_resamples", "1000", *args.recipe_args]
    out = f"{tmp}/{len(trained)}"
    if reuse is not None:  # the same weights, read another way: no training
        results = run_recipe("text_classification", ["--model_name_or_path", trained[reuse]["folder"],
                                                     "--output_dir", out, *data, *flags])
        row = {**{k: trained[reuse][k] for k in ("train_runtime", "notes_per_s", "windows_per_s")},
               **{k: results.get(k) for k in KEYS}, "reading": flags[flags.index("--chunk_aggregation") + 1]}
        return {**row, "folder": out, "trained_as": reuse}
    train = ["--model_name_or_path", args.model, "--output_dir", out, "--train_file", split_file(data_dir, "train"),
             "--do_train", "--num_train_epochs", str(args.epochs)]
    if args.max_train_samples:
        train += ["--max_train_samples", str(args.max_train_samples)]
    results = run_recipe("text_classification", [*train, *data, *flags])
    epochs_run = results["epoch"]
    return {
        "train_runtime": results["train_runtime"],
        "notes_per_s": results["train_samples"] * epochs_run / results["train_runtime"],
        "windows_per_s": results["train_windows"] * epochs_run / results["train_runtime"],
        "train_windows": results["train_windows"], "train_samples": results["train_samples"],
        **{k: results.get(k) for k in KEYS}, "reading": reading(out), "folder": out,
    }


def main() -> None:
    parser = text_benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), metavar="RUN",
                        help=f"which rows, of: {', '.join(RUNS)}")
    parser.add_argument("--recipe_args", nargs=argparse.REMAINDER, default=[],
                        help="extra flags for every run of the recipe (e.g. --label_column labels)")
    args = parser.parse_args()
    for path in (args.model, args.data):
        if not os.path.exists(path):
            sys.exit(f"error: {path} not found (the benchmark needs ../shared beside the project)")
    for name in args.runs:
        reuse = RUNS[name][1]
        if reuse is not None and reuse not in args.runs:
            sys.exit(f"error: row '{name}' re-scores the folder of '{reuse}': run that row too")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.runs:  # one process, one after the other: same machine state, same library versions
            rows[name] = run(name, args, Path(args.data), tmp, rows)
            print(f"{name}: {json.dumps({k: v for k, v in rows[name].items() if k != 'folder'})}", flush=True)
    base = rows.get("truncate-128")
    device = (torch.cuda.get_device_name() if torch.cuda.is_available()
              else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})")
    header = (f"{Path(args.data).name}, {Path(args.model).name}, {args.epochs:g} epoch(s), train notes "
              f"{args.max_train_samples or 'all'}, recipe defaults otherwise; {device}; torch {torch.__version__}, "
              f"transformers {transformers.__version__}; {time.strftime('%Y-%m-%d')}")
    if args.recipe_args:
        header += f"; recipe flags {' '.join(args.recipe_args)}"
    lines = [header, "", "| mode | notes read by | test macro-F1 (95% CI) | vs truncate-128 | test micro-F1 | "
             "test notes truncated | train notes/s | speed vs truncate-128 | train windows/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        gain = f"{100 * (row['test_macro_f1'] - base['test_macro_f1']):+.1f} pts" if base else "–"
        speed = f"{row['notes_per_s'] / base['notes_per_s']:.2f}×" if base else "–"
        lines.append(f"| {name} | {row['reading']} | {row['test_macro_f1']:.3f} ({row['test_macro_f1_ci_low']:.3f}–"
                     f"{row['test_macro_f1_ci_high']:.3f}) | {gain} | {row['test_micro_f1']:.3f} | "
                     f"{row['test_truncated_examples']} of {row['test_samples']} | {row['notes_per_s']:.1f} | "
                     f"{speed} | "
                     f"{row['windows_per_s']:.1f} |")
    table = "\n".join(lines)
    print("\n" + table)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    for row in rows.values():
        row.pop("folder", None)
    (out / "long_text.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    (out / "long_text.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
