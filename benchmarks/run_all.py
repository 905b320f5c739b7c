#!/usr/bin/env python
"""Every recipe against its plain-Trainer baseline, in one run, written as one table.

    python benchmarks/run_all.py                 # the measurement in benchmarks/README.md (~30 min on 2 CPU cores)
    python benchmarks/run_all.py --quick         # small subsets, a few minutes: checks that everything runs

Runs ``bench_text_classification.py``, ``bench_ner.py`` and ``bench_image.py`` one after the other, each in its own
process (so one benchmark's memory and thread pools never affect the next), reads the JSON each writes and prints
one markdown table: training samples/s of baseline and recipe, their ratio, the quality metric of both, and the
target ratio from issue #5 (≥2× text, ≥3× NER, ≥1.5× images on CPU). Writes ``benchmarks/results/all.{json,md}``.
Speed ratios are only meaningful on an otherwise idle machine: every ratio here compares two runs of the same
invocation, but a load that comes and goes between them still distorts it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = {"text classification": 2.0, "NER": 3.0, "image classification": 1.5}


def run(script: str, args: list[str], json_path: str) -> dict:
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args, "--json", json_path]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    with open(json_path, encoding="utf-8") as f:
        return json.load(f)


def text_rows(found: dict, epochs: str) -> list[dict]:
    rows = list(found["rows"].values())
    base, ours = rows[0], rows[1]
    return [{
        "task": "text classification", "data": f"Medical Abstracts, {epochs} ep", "metric": "macro-F1",
        "baseline_per_s": base["train_samples_per_second"], "recipe_per_s": ours["train_samples_per_second"],
        "baseline_quality": base["test_macro_f1"], "recipe_quality": ours["test_macro_f1"],
    }]


def ner_rows(found: dict, epochs: str) -> list[dict]:
    return [{
        "task": "NER", "data": f"{row['dataset']}, {epochs} ep", "metric": "strict F1",
        "baseline_per_s": row["baseline"]["samples_per_s"], "recipe_per_s": row["recipe"]["samples_per_s"],
        "baseline_quality": row["baseline"]["test_f1"], "recipe_quality": row["recipe"]["test_f1"],
    } for row in found["rows"]]


def image_rows(found: list, epochs: str) -> list[dict]:
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in found):
        pair = [r for r in found if r["dataset"] == dataset]
        base = next(r for r in pair if r["system"].startswith("baseline"))
        ours = next(r for r in pair if r["system"].startswith("recipe"))
        rows.append({
            "task": "image classification", "data": f"{dataset}, {epochs} ep", "metric": "accuracy / AUROC",
            "baseline_per_s": base["images_per_s"], "recipe_per_s": ours["images_per_s"],
            "baseline_quality": (base["accuracy"], base["auroc"]), "recipe_quality": (ours["accuracy"], ours["auroc"]),
        })
    return rows


def quality(value) -> str:
    return " / ".join(f"{v:.3f}" for v in value) if isinstance(value, (list, tuple)) else f"{value:.3f}"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small subsets and one epoch: a smoke run, not a measurement.")
    parser.add_argument("--only", nargs="+", choices=["text", "ner", "image"], default=["text", "ner", "image"])
    args = parser.parse_args(argv)
    quick = args.quick
    # Full measurement: all of Medical Abstracts (2 epochs) and NCBI-disease (1 epoch); seeded image subsets,
    # because the baseline's per-step processing at 224 px runs at a few images/s on 2 CPU cores.
    plans = {
        "text": ("bench_text_classification.py",
                 ["--epochs", "1", "--max_train_samples", "256"] if quick else ["--epochs", "2"], text_rows),
        "ner": ("bench_ner.py",
                ["--epochs", "1", "--max_train_samples", "400", "--max_test_samples", "200"] if quick
                else ["--epochs", "1"], ner_rows),
        "image": ("bench_image.py",
                  ["--epochs", "1", "--max_train_samples", "128", "--max_test_samples", "128"] if quick
                  else ["--epochs", "1", "--max_train_samples", "1024", "--max_test_samples", "624"], image_rows),
    }
    rows = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        for name in args.only:
            script, script_args, to_rows = plans[name]
            epochs = script_args[script_args.index("--epochs") + 1]
            rows += to_rows(run(script, script_args, os.path.join(tmp, f"{name}.json")), epochs)
    for row in rows:
        row["speedup"] = row["recipe_per_s"] / row["baseline_per_s"]
        row["target"] = TARGETS[row["task"]]
    import torch
    import transformers

    header = (f"{'quick smoke run' if quick else 'full run'}, {time.strftime('%Y-%m-%d')}, "
              f"{torch.cuda.get_device_name() if torch.cuda.is_available() else f'CPU ({os.cpu_count()} cores, {platform.machine()})'}, "
              f"torch {torch.__version__}, transformers {transformers.__version__}, {time.time() - started:.0f} s")
    lines = [header, "",
             "| task | data | baseline samples/s | recipe samples/s | speedup (target) | metric | baseline | recipe |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['data']} | {r['baseline_per_s']:.1f} | {r['recipe_per_s']:.1f} | "
                     f"{r['speedup']:.2f}× (≥{r['target']:g}×) | {r['metric']} | {quality(r['baseline_quality'])} | "
                     f"{quality(r['recipe_quality'])} |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "all.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    (RESULTS / "all.md").write_text(table)
    return rows


if __name__ == "__main__":
    main()
