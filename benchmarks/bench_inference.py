#!/usr/bin/env python
"""Inference speed, memory and metric of a fine-tuned folder: PyTorch eager fp32 vs PyTorch bf16 (where the hardware
has it) vs ONNX Runtime fp32 vs ONNX Runtime int8, in one run.

    python benchmarks/bench_inference.py                      # NCBI-disease (NER), Medical Abstracts, PneumoniaMNIST
    python benchmarks/bench_inference.py --tasks text --train_examples 300 --latency_examples 50

For each task the recipe fine-tunes MiniLM-L6 (text, NER) or DINOv2-small (PneumoniaMNIST at 56 px) on the first
--train_examples training examples with its defaults (--num_train_epochs 2), export_onnx.py writes the fp32 and the
int8 export (each gated on the validation split), and every backend then runs in a fresh process of its own through
the same predictor as predict.py (tokenization / decoding, windows and thresholds included):

- the whole test split at batch 32: examples/s and the task metric (strict entity F1; macro-F1);
- the first --latency_examples test examples one at a time (batch 1): examples/s, p50 and p95 latency;
- peak resident memory of the process (model, data and runtime: ``VmHWM``).

Ratios are against PyTorch eager fp32 in the same run. Needs ../shared (real data and weights). Writes
benchmarks/results/inference.{json,md}. On a GPU, PyTorch runs on it and ONNX Runtime uses CUDA when onnxruntime-gpu
is installed (the table says which provider ran).
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
TEXT_MODEL = SHARED / "models" / "all-MiniLM-L6-v2"
IMAGE_MODEL = SHARED / "models" / "dinov2-small"
BACKENDS = ("pytorch_fp32", "pytorch_bf16", "onnx_fp32", "onnx_int8")
TASKS = {
    "ner": ("ner", "NCBI-disease test (940 sentences)", DATA / "ner" / "ncbi_disease"),
    "text": ("text_classification", "Medical Abstracts test (578 abstracts)", DATA / "text_classification"
             / "medical_abstracts"),
    "image": ("image_classification", "PneumoniaMNIST test (624 images, 56 px)", DATA / "images" / "pneumoniamnist"
              / "pneumoniamnist.npz"),
}


def files(task: str) -> dict[str, str]:
    folder = TASKS[task][2]
    if task == "ner":
        return {"train": folder / "train.tsv", "validation": folder / "devel.tsv", "test": folder / "test.tsv"}
    if task == "text":
        return {s: folder / f"{s}.csv" for s in ("train", "validation", "test")}
    return {"train": folder, "validation": folder, "test": folder}


# ------------------------------------------------------------------------------------------------ preparation
def shuffled_npz(path: Path, out: Path, n: int) -> Path:
    """A MedMNIST .npz whose train arrays are a seeded random ``n`` of the original's (val / test unchanged)."""
    data = dict(np.load(path))
    keep = np.random.default_rng(0).permutation(len(data["train_labels"]))[:n]
    data["train_images"], data["train_labels"] = data["train_images"][keep], data["train_labels"][keep]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **data)
    return out


def fine_tune(task: str, out: Path, train_examples: int) -> dict:
    from shared.core.runner import run_recipe

    f = files(task)
    args = ["--model_name_or_path", IMAGE_MODEL if task == "image" else TEXT_MODEL, "--output_dir", out,
            "--do_train", "--num_train_epochs", "2", "--seed", "42"]
    if task == "image":  # PneumoniaMNIST's train split is sorted by label: a seeded random subset, not the first N
        args += ["--train_file", shuffled_npz(f["train"], out.parent / "train_subset.npz", train_examples),
                 "--image_size", "56", "--do_eval", "--max_eval_samples", "200"]
    else:
        args += ["--train_file", f["train"], "--max_train_samples", train_examples]
    return run_recipe(TASKS[task][0], [str(a) for a in args])


def export(task: str, model_dir: Path, out: Path, quantize: bool) -> dict:
    from shared.core.runner import run_recipe

    # the parity sample: the validation split (PneumoniaMNIST: the .npz, whose test arrays predict.py reads)
    args = ["--model_dir", model_dir, "--output_dir", out, "--max_examples", "128", "--input", files(task)["validation"]]
    if quantize:
        args += ["--quantize", "int8", "--max_metric_drop", "1.0"]  # measured here, not gated
    return run_recipe("export_onnx.py", [str(a) for a in args])


# ------------------------------------------------------------------------------------------------ one backend
def worker(task: str, backend: str, folder: str, batch: int, latency_examples: int) -> dict:
    """Runs in a process of its own: load, predict the test split at ``batch``, then one example at a time."""
    import torch

    from shared.images.decode import DecodedImages
    from shared.tasks import get_task

    spec = get_task(TASKS[task][0])
    onnx = backend.startswith("onnx")
    predictor = spec.predictor_class()(folder, "onnx" if onnx else "pytorch", batch)
    device = "cuda" if torch.cuda.is_available() and not onnx else "cpu"
    if not onnx:
        predictor._model = predictor.model.to(device)
    inputs, gold = predictor.examples(str(files(task)["test"]), spec.input_arguments_class()())
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=backend == "pytorch_bf16")
    with autocast:
        predictor.predict(*_first(task, inputs, min(batch, 8)))  # warm-up: first-call allocations, lazy init
        start = time.perf_counter()
        outputs = predictor.predict(*inputs)
        seconds = time.perf_counter() - start
        n = len(outputs.labels)
        latencies = []
        for i in range(min(latency_examples, n)):
            one = _one(task, inputs, i, DecodedImages)
            t = time.perf_counter()
            predictor.predict(*one)
            latencies.append(time.perf_counter() - t)
    return {
        "examples": n, f"batch{batch}_examples_per_s": n / seconds, "metric": predictor.score(gold, outputs),
        "batch1_examples_per_s": len(latencies) / sum(latencies), "batch1_p50_ms": 1000 * float(np.median(latencies)),
        "batch1_p95_ms": 1000 * float(np.percentile(latencies, 95)),
        "peak_rss_mb": peak_rss_mb(),
        "providers": predictor.model.providers if onnx else [device],
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (ru_maxrss would carry over the parent's peak across fork + exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _first(task, inputs, n):
    if task == "image":
        from shared.images.decode import DecodedImages

        return (DecodedImages(inputs[0].pixels[:n], list(range(n))),)
    if task == "text":
        return (inputs[0][:n], None if inputs[1] is None else inputs[1][:n])
    return (inputs[0][:n],)


def _one(task, inputs, i, decoded_cls):
    if task == "image":
        return (decoded_cls(inputs[0].pixels[i:i + 1], [0]),)
    if task == "text":
        return ([inputs[0][i]], None if inputs[1] is None else [inputs[1][i]])
    return ([inputs[0][i]],)


def run_worker(task: str, backend: str, folder: str, batch: int, latency_examples: int) -> dict:
    command = [sys.executable, __file__, "--worker", task, backend, folder, str(batch), str(latency_examples)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{task} {backend} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ main
def table(rows: list[dict]) -> str:
    lines = ["| data | backend | metric | batch 32 ex/s | × fp32 | batch 1 ex/s | × fp32 | p50 ms | p95 ms | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['data']} | {row['backend']} | {row['skipped']} | | | | | | | |")
            continue
        lines.append(
            f"| {row['data']} | {row['backend']} ({', '.join(p.replace('ExecutionProvider', '') for p in row['providers'])})"
            f" | {row['metric']:.4f} | {row['batch32_examples_per_s']:.1f} | {row['batch32_ratio']:.2f} | "
            f"{row['batch1_examples_per_s']:.1f} | {row['batch1_ratio']:.2f} | {row['batch1_p50_ms']:.1f} | "
            f"{row['batch1_p95_ms']:.1f} | {row['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--train_examples", type=int, default=1000)
    parser.add_argument("--latency_examples", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if not TEXT_MODEL.is_dir() or not DATA.is_dir():
        raise SystemExit(f"error: {SHARED}: real data and weights are needed (see benchmarks/README.md)")
    from shared.core.args import bf16_supported

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            root = Path(tmp) / task
            trained = fine_tune(task, root / "model", args.train_examples)
            folders = {"pytorch_fp32": root / "model", "pytorch_bf16": root / "model",
                       "onnx_fp32": root / "onnx_fp32", "onnx_int8": root / "onnx_int8"}
            gates = {"onnx_fp32": export(task, root / "model", folders["onnx_fp32"], False)["parity"],
                     "onnx_int8": export(task, root / "model", folders["onnx_int8"], True)["parity"]}
            reference = None
            for backend in BACKENDS:
                row = {"task": task, "data": TASKS[task][1], "backend": backend,
                       "train_runtime": trained.get("train_runtime")}
                if backend == "pytorch_bf16" and not bf16_supported():
                    rows.append({**row, "skipped": "no native bf16 on this machine"})
                    continue
                row.update(run_worker(task, backend, str(folders[backend]), 32, args.latency_examples))
                row["gate"] = gates.get(backend)
                reference = reference or row
                row["batch32_ratio"] = row["batch32_examples_per_s"] / reference["batch32_examples_per_s"]
                row["batch1_ratio"] = row["batch1_examples_per_s"] / reference["batch1_examples_per_s"]
                row["metric_change"] = row["metric"] - reference["metric"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    machine = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "bf16": bf16_supported(), "train_examples": args.train_examples,
               "latency_examples": args.latency_examples}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "inference.json"), "w") as f:
        json.dump({"machine": machine, "rows": rows}, f, indent=2)
    text = table(rows)
    with open(os.path.join(args.out, "inference.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        task, backend, folder, batch, latency = sys.argv[2:7]
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        print(json.dumps(worker(task, backend, folder, int(batch), int(latency))))
    else:
        main()
