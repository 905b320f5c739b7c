#!/usr/bin/env python
"""Calibration with the recipes' defaults: test ECE (and MCE, Brier, NLL) before and after the temperature scaling
fitted on validation, with bootstrap 95% CIs, on Medical Abstracts (all-MiniLM-L6-v2) and PneumoniaMNIST
(DINOv2-small), each trained once by its recipe config (the before values come from the same run: the saved
temperature undoes the scaling, so nothing is trained twice). Argmax decisions, and so accuracy and macro-F1, are
the same before and after single-label temperature scaling.

    python benchmarks/bench_calibration.py [--only text|images] [--output_dir outputs/bench_calibration]

Writes benchmarks/results/calibration.{md,json}. Needs ../shared (the public data and weights, see its README).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.core.runner import run_recipe  # noqa: E402

RUNS = {
    "text": ("text_classification", "recipes/text_classification/configs/medical_abstracts.yaml",
             "Medical Abstracts, MiniLM-L6"),
    "images": ("image_classification", "recipes/image_classification/configs/pneumoniamnist_dinov2.yaml",
               "PneumoniaMNIST, DINOv2-small"),
}
NAMES = ("ece", "mce", "brier", "nll")


def interval(results: dict, key: str) -> str:
    low, high = results.get(f"{key}_ci_low"), results.get(f"{key}_ci_high")
    value = results[key]
    return f"{value:.3f} ({low:.3f}-{high:.3f})" if low is not None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(RUNS), nargs="*", default=list(RUNS))
    parser.add_argument("--output_dir", default="outputs/bench_calibration")
    args = parser.parse_args()
    rows, table = {}, []
    for name in args.only:
        recipe, config, label = RUNS[name]
        out = Path(args.output_dir) / name
        start = time.perf_counter()
        results = run_recipe(recipe, ["--config", ROOT / config, "--output_dir", out, "--overwrite_output_dir", "true"])
        seconds = time.perf_counter() - start
        temperature = json.loads((out / "config.json").read_text())["calibration"]["temperature"]
        rows[name] = {"data": label, "seconds": seconds, "temperature": temperature,
                      **{k: v for k, v in results.items() if k.startswith(("test_", "eval_")) and
                         any(k.startswith(f"{s}_{n}") for s in ("test", "eval") for n in (*NAMES, "accuracy",
                                                                                             "macro_f1"))}}
        before, after = results["test_ece_uncalibrated"], results["test_ece"]
        table.append(
            f"| {label} | {', '.join(f'{t:.2f}' for t in temperature)} | "
            f"{interval(results, 'test_ece_uncalibrated')} | {interval(results, 'test_ece')} | "
            f"{after / before:.2f} | {interval(results, 'test_brier_uncalibrated')} | {interval(results, 'test_brier')} | "
            f"{results['test_nll_uncalibrated']:.3f} -> {results['test_nll']:.3f} | "
            f"{results['test_accuracy']:.3f} / {results['test_macro_f1']:.3f} |")
    header = ["| data | T | test ECE before | test ECE after | after / before (goal <= 0.5) | Brier before | "
              "Brier after | NLL before -> after | accuracy / macro-F1 (same before and after) |",
              "|---|---|---|---|---|---|---|---|---|"]
    text = "\n".join(header + table)
    print(text)
    results_dir = ROOT / "benchmarks" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "calibration.md").write_text(text + "\n")
    (results_dir / "calibration.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
