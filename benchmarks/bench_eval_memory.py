#!/usr/bin/env python
"""Benchmark: evaluation memory does not grow with the evaluation data (issue #5).

Each recipe predicts on a test set of N rows and of ``--scale`` x N rows, each in a fresh process, through its own
prediction path (text and images: ``shared.evaluation.forward.predict_in_order``; NER:
``shared.ner.windows.predict_windows`` over it, argmax / Viterbi per batch on the device), run by the recipe itself
(``--do_predict`` with a fine-tuned folder). Around the prediction call the child process releases free heap
(``malloc_trim``), reads its resident memory, resets the kernel's peak counter (``/proc/self/clear_refs``) and reads
the peak afterwards: "eval peak" is the most memory prediction added on top of what the process already held (model,
tokenized data, decoded images). Children run with a fixed glibc mmap threshold (``CHILD_ENV``) so that the resident
set tracks live memory rather than the allocator's adaptive heap. "process peak" (``ru_maxrss``) is the whole run's,
inputs included; it grows with the data because the recipes hold their inputs in memory (Arrow tables, windows,
decoded uint8 images).

As a check that the measurement would see an accumulation, the NER prediction is also run with a naive variant that
keeps every window's full logits (N x L x C floats) and takes the argmax at the end.

Models are tiny ones built from config (``shared.training.tiny_models``; a 2-layer ViT), fine-tuned for a few steps on
the bundled sample data, so the whole benchmark takes a minute or two on a CPU and needs nothing outside the project.
Linux only (``/proc``). Writes ``benchmarks/results/eval_memory.{json,md}`` and prints the markdown table.

    python benchmarks/bench_eval_memory.py              # 1x = 2000 texts / 1000 notes / 500 images, and 10x
    python benchmarks/bench_eval_memory.py --base 500   # quicker
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SAMPLE = {
    "text": ROOT / "recipes" / "text_classification" / "sample_data",
    "ner": ROOT / "recipes" / "ner" / "sample_data",
    "image": ROOT / "recipes" / "image_classification" / "sample_data",
}
RECIPE = {"text": "text_classification", "ner": "ner", "image": "image_classification"}
MB = 1024 * 1024


# ---------------------------------------------------------------------------------------------- child process


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so "before" is what is really held
    except (OSError, AttributeError):
        pass


def _measured(fn, calls: list):
    def wrapper(*args, **kwargs):
        _trim()
        before = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM (the peak resident set) to the current resident set
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        calls.append({"before_kb": before, "peak_kb": _status_kb("VmHWM"), "seconds": time.perf_counter() - start})
        return out

    return wrapper


def naive_predict_windows(model, windows, pad_token_id, batch_size=64, decode=None):
    """predict_windows, but keeping every batch's full logits until the end (what issue #5 rules out)."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(windows)), key=lambda k: len(windows[k].input_ids))
    kept = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(windows[k].input_ids) for k in batch)
            ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, k in enumerate(batch):
                ids[row, :len(windows[k].input_ids)] = torch.tensor(windows[k].input_ids)
                mask[row, :len(windows[k].input_ids)] = 1
            kept.append((batch, model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()))
    out = [None] * len(windows)
    for batch, logits in kept:
        pred = logits.argmax(-1)
        for row, k in enumerate(batch):
            out[k] = pred[row, :len(windows[k].input_ids)].tolist()
    return out


def child(spec: dict) -> dict:
    """Run one recipe with --do_predict, measuring its prediction call(s)."""
    import shared.evaluation.forward
    import shared.ner.windows
    from shared.core.runner import run_recipe

    task = spec["task"]
    calls: list = []
    # The library's prediction functions are wrapped before the recipe is loaded (this is a fresh process), so the
    # recipe imports the measured ones.
    if task == "ner":
        shared.ner.windows.predict_windows = _measured(
            naive_predict_windows if spec.get("naive") else shared.ner.windows.predict_windows, calls)
    else:
        shared.evaluation.forward.predict_in_order = _measured(shared.evaluation.forward.predict_in_order, calls)
    start = time.perf_counter()
    results = run_recipe(RECIPE[task], spec["args"])
    call = max(calls, key=lambda c: c["peak_kb"] - c["before_kb"])
    return {
        "rows": results["test_samples"],
        "before_mb": call["before_kb"] / 1024,
        "eval_peak_mb": (call["peak_kb"] - call["before_kb"]) / 1024,
        "predict_s": call["seconds"],
        "run_s": time.perf_counter() - start,
        "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# ---------------------------------------------------------------------------------------------- setup (parent)


def tiny_models(work: Path) -> dict[str, str]:
    """Tiny BERTs (text, NER) and a tiny ViT, as pretrained-looking folders."""
    from shared.formats.i2b2 import read_i2b2
    from shared.training.tiny_models import build_tiny_bert, build_tiny_vit

    with open(SAMPLE["text"] / "train.csv", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    notes = read_i2b2(str(SAMPLE["ner"] / "train"))
    words = [" ".join(line) for note in notes for line in note.lines]
    models = {
        "text": str(build_tiny_bert(work / "bert_text", texts, hidden_size=64)),
        "ner": str(build_tiny_bert(work / "bert_ner", words, vocab_size=300, hidden_size=64)),
        "image": build_tiny_vit(work / "vit", hidden_size=64),
    }
    return models


def fine_tune(task: str, model: str, out: Path) -> str:
    """A few training steps on the sample data: a fine-tuned folder that --do_predict loads (labels, head)."""
    data = {
        "text": ["--train_file", str(SAMPLE["text"] / "train.csv")],
        "ner": ["--train_file", str(SAMPLE["ner"] / "train")],
        "image": ["--train_dir", str(SAMPLE["image"] / "folders" / "train")],
    }[task]
    command = [sys.executable, str(ROOT / "recipes" / RECIPE[task] / "train.py"), "--model_name_or_path", model,
               "--output_dir", str(out), *data, "--do_train", "--max_steps", "3", "--seed", "0"]
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return str(out)


def test_data(task: str, rows: int, work: Path) -> list[str]:
    """The sample test split repeated to ``rows`` rows, as recipe arguments."""
    if task == "text":
        with open(SAMPLE["text"] / "test.csv", encoding="utf-8", newline="") as f:
            table = list(csv.DictReader(f))
        path = work / f"text_{rows}.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table[i % len(table)] for i in range(rows))
        return ["--test_file", str(path)]
    if task == "ner":
        from shared.formats.i2b2 import read_i2b2

        # one example per note (70-120 words: one or two 128-subword windows), so that full logits would weigh
        # what they weigh on real notes, not on the sample's short sentences
        notes = [([w for line in note.lines for w in line], [t for tags in note.line_tags() for t in tags])
                 for note in read_i2b2(str(SAMPLE["ner"] / "test"))]
        path = work / f"ner_{rows}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for i in range(rows):
                toks, tags = notes[i % len(notes)]
                f.write(json.dumps({"tokens": toks, "ner_tags": tags}) + "\n")
        return ["--test_file", str(path)]
    with open(SAMPLE["image"] / "test.csv", encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    path = work / f"image_{rows}.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label"])
        for i in range(rows):
            row = table[i % len(table)]
            writer.writerow([str(SAMPLE["image"] / row["image"]), row["label"]])
    return ["--test_file", str(path)]


# glibc adapts its mmap threshold upwards once a large block is freed; after that, freed activations stay in the heap
# between live blocks and the resident set swings by tens of MB between identical runs. A fixed threshold sends
# every block over 128 KiB (each batch's tensors) straight back to the OS when freed: RSS then tracks live memory.
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def run_child(spec: dict) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT), **CHILD_ENV}, capture_output=True,
                               text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{spec['task']} x{spec['rows']} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=None,
                        help="1x rows for every recipe (default: 2000 texts, 1000 notes, 500 images)")
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if not os.path.exists("/proc/self/clear_refs"):
        sys.exit("this benchmark reads /proc (Linux only)")
    base = {"text": 2000, "ner": 1000, "image": 500}
    if args.base:
        base = dict.fromkeys(base, args.base)
    rows_out = []
    with tempfile.TemporaryDirectory(prefix="bench_eval_memory_") as tmp:
        work = Path(tmp)
        models = tiny_models(work)
        for task in ("text", "ner", "image"):
            fine_tuned = fine_tune(task, models[task], work / f"{task}_model")
            variants = [("recipe", False)] + ([("naive: keep N x L x C logits", True)] if task == "ner" else [])
            for variant, naive in variants:
                measured = {}
                for factor in (1, args.scale):
                    rows = base[task] * factor
                    spec = {"task": task, "rows": rows, "naive": naive, "args": [
                        "--model_name_or_path", fine_tuned, "--output_dir", str(work / f"out_{task}_{rows}{'_naive' if naive else ''}"),
                        *test_data(task, rows, work), "--do_predict", "--bootstrap_resamples", "0"]}
                    measured[factor] = run_child(spec)
                    print(f"{task} {variant} x{factor}: {measured[factor]}", flush=True)
                one, many = measured[1], measured[args.scale]
                rows_out.append({
                    "recipe": {"text": "text classification", "ner": "NER", "image": "image classification"}[task],
                    "path": variant, "rows_1x": one["rows"], f"rows_{args.scale}x": many["rows"],
                    "eval_peak_mb_1x": one["eval_peak_mb"], f"eval_peak_mb_{args.scale}x": many["eval_peak_mb"],
                    "eval_peak_ratio": many["eval_peak_mb"] / max(one["eval_peak_mb"], 1e-9),
                    "process_peak_mb_1x": one["process_peak_mb"],
                    f"process_peak_mb_{args.scale}x": many["process_peak_mb"],
                    "predict_s_1x": one["predict_s"], f"predict_s_{args.scale}x": many["predict_s"],
                })
    s = args.scale
    lines = [
        f"| recipe | prediction path | rows 1x / {s}x | eval peak 1x | eval peak {s}x | ratio | "
        f"process peak 1x | process peak {s}x |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows_out:
        lines.append(
            f"| {r['recipe']} | {r['path']} | {r['rows_1x']:,} / {r[f'rows_{s}x']:,} | {r['eval_peak_mb_1x']:.1f} MB | "
            f"{r[f'eval_peak_mb_{s}x']:.1f} MB | {r['eval_peak_ratio']:.2f}x | {r['process_peak_mb_1x']:.0f} MB | "
            f"{r[f'process_peak_mb_{s}x']:.0f} MB |")
    table = "\n".join(lines)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M")}
    try:
        import torch
        import transformers

        meta.update(torch=torch.__version__, transformers=transformers.__version__)
    except ImportError:
        pass
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "eval_memory.json").write_text(json.dumps({"meta": meta, "rows": rows_out}, indent=2) + "\n")
    (RESULTS / "eval_memory.md").write_text(
        "Eval peak: memory the prediction call added on top of what the process held before it (resident set, "
        "kernel peak counter reset at the call; children run with MALLOC_MMAP_THRESHOLD_=131072). Process peak: "
        "ru_maxrss of the whole run, inputs included.\n\n"
        + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
