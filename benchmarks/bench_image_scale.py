"""Benchmark: the image recipe's memory as the data grows, decoding into memory vs the disk cache (--image_cache_dir).

Synthetic 224-px grayscale PNGs (two classes, written once into --data_dir and reused) train a small ViT built from
config (224 px, patch 32) for --max_steps steps; each run is a fresh process. Per run: peak resident memory of the
process, the one-off decoding time (train_decode_runtime) and training images/s (train_samples_per_second). The
cache rows run twice: cold (decoding into an empty cache) and warm (a second run on the same files, which must not
decode). Ratios: peak RSS against the smallest size of the same path; images/s against the in-memory run of the
same size.

    python benchmarks/bench_image_scale.py --sizes 1000 2000 4000 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_images(folder: Path, n: int, size: int = 224) -> Path:
    """``n`` PNGs under folder/n/{normal,opacity}: smooth gradients with noise, 'opacity' with a bright blob."""
    from PIL import Image

    root = folder / str(n)
    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(n)
    y, x = np.mgrid[0:size, 0:size]
    for i in range(n):
        label = "opacity" if i % 2 else "normal"
        (root / label).mkdir(parents=True, exist_ok=True)
        image = 60 + 80 * (x / size) + rng.normal(0, 12, (size, size))
        if label == "opacity":
            cy, cx = rng.integers(60, size - 60, 2)
            image += 70 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 30.0**2))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / label / f"{i:06d}.png")
    done.touch()
    return root


def one_run(data: Path, model: str, out: Path, cache: str | None, steps: int) -> dict:
    """train.py in a fresh process; its own peak RSS (ru_maxrss) with its results."""
    args = ["--model_name_or_path", model, "--train_dir", str(data), "--output_dir", str(out), "--do_train",
            "--max_steps", str(steps), "--per_device_train_batch_size", "32", "--image_size", "224",
            "--save_strategy", "no", "--report_to", "none", "--seed", "0", "--dataloader_num_workers", "0"]
    if cache:
        args += ["--image_cache_dir", cache]
    # "memory" must mean memory: the automatic disk cache of large runs (bench_image_memory.py) is turned off
    code = ("import json, resource, sys; import shared.images.cache as c; c.automatic_cache_dir = lambda n, s: None; "
            "from shared.core.runner import run_recipe; "
            f"r = run_recipe('image_classification', {args!r}); "
            "print('RESULT ' + json.dumps({**r, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss "
            "/ 1024}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    shutil.rmtree(out, ignore_errors=True)
    return result


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 2000, 4000, 20000])
    parser.add_argument("--max_steps", type=int, default=30)
    parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "bench_image_scale"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    from shared.training.tiny_models import build_tiny_vit

    data_dir = Path(args.data_dir)
    model = build_tiny_vit(data_dir / "vit224", image_size=224, num_layers=4, hidden_size=192, patch_size=32,
                           num_heads=3)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            images = write_images(data_dir, n)
            cache = os.path.join(tmp, f"cache{n}")
            for path, cache_dir in (("memory", None), ("cache, cold", cache), ("cache, warm", cache)):
                result = one_run(images, model, Path(tmp) / "out", cache_dir, args.max_steps)
                row = {"images": n, "path": path, "peak_rss_mb": result["peak_rss_mb"],
                       "decode_s": result["train_decode_runtime"],
                       "train_images_per_s": result["train_samples_per_second"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
            shutil.rmtree(cache, ignore_errors=True)
    smallest = {}
    for row in rows:
        smallest.setdefault(row["path"], row)
        row["rss_ratio"] = row["peak_rss_mb"] / smallest[row["path"]]["peak_rss_mb"]
        memory = next(r for r in rows if r["images"] == row["images"] and r["path"] == "memory")
        row["speed_ratio"] = row["train_images_per_s"] / memory["train_images_per_s"]
    lines = ["| images | decoding | peak RSS MB | × smallest | decode s | train images/s | × memory |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['images']:,} | {r['path']} | {r['peak_rss_mb']:.0f} | {r['rss_ratio']:.2f} | {r['decode_s']:.1f} "
              f"| {r['train_images_per_s']:.1f} | {r['speed_ratio']:.2f} |" for r in rows]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "image_scale.json"), "w") as f:
        json.dump(rows, f, indent=2)
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
