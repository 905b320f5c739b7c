#!/usr/bin/env python
"""Benchmark: the image recipe's peak memory without --image_cache_dir stays flat as the training data grows (issue #32).

A run without ``--image_cache_dir`` decodes into memory while the decoded images fit ``IN_MEMORY_LIMIT`` (256 MB,
and a quarter of the free memory), and into the user's disk cache past it (``shared/images/cache.py``:
``automatic_cache_dir``). Each size trains twice, each run a fresh process: "default" as a user runs it, and
"memory" with the automatic cache turned off (every decoded image held in memory: the behaviour before). Peak RSS is
the process's ``ru_maxrss``; "× smallest" compares it with the smallest size of the same path, measured in the same
invocation. The default runs decode into an empty cache folder (``XDG_CACHE_HOME`` points into a temporary folder,
so nothing is left in the user's cache): cold runs, the costlier case.

Data and model as ``bench_image_scale.py``: synthetic 224-px grayscale PNGs in two class folders (written once into
--data_dir and reused), a ViT built from config (4 layers, hidden 192, patch 32, 224 px), --max_steps steps of
batch 32. The default sizes bracket the limit: 1,000 images (144 MB decoded: memory), 1,700 (245 MB: the most the
default keeps in memory at 224 px) and 4,000 (574 MB: the disk cache).

    python benchmarks/bench_image_memory.py                    # 1,000 / 1,700 / 4,000 images, about 3 minutes
    python benchmarks/bench_image_memory.py --sizes 1000 4000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_image_scale import write_images  # the same synthetic images

CHILD = """
import json, os, resource, sys
import shared.images.cache as cache
from shared.core.runner import run_recipe
spec = json.loads(sys.argv[1])
if spec["path"] == "memory":  # the behaviour before the automatic cache: every decoded image in memory
    cache.automatic_cache_dir = lambda count, shape: None
results = run_recipe("image_classification", spec["args"])
root = cache.default_cache_root()
used = os.path.isdir(root) and any(not n.endswith(".lock") for n in os.listdir(root))
print("RESULT " + json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                              "decode_s": results["train_decode_runtime"], "disk_cache": used}))
"""


def one_run(path: str, data: Path, model: str, work: Path, steps: int) -> dict:
    """train.py in a fresh process with an empty user cache folder; its peak RSS and whether it used the cache."""
    import matplotlib

    xdg, out = work / "xdg", work / "out"
    shutil.rmtree(xdg, ignore_errors=True)
    args = ["--model_name_or_path", model, "--train_dir", str(data), "--output_dir", str(out), "--do_train",
            "--max_steps", str(steps), "--per_device_train_batch_size", "32", "--image_size", "224",
            "--save_strategy", "no", "--report_to", "none", "--seed", "0", "--dataloader_num_workers", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "XDG_CACHE_HOME": str(xdg),
           "MPLCONFIGDIR": matplotlib.get_cachedir()}  # matplotlib's font cache stays where it is
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"path": path, "args": args})],
                          check=False, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(xdg, ignore_errors=True)
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 1700, 4000])
    parser.add_argument("--max_steps", type=int, default=10)
    parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "bench_image_scale"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    from shared.training.tiny_models import build_tiny_vit

    data_dir = Path(args.data_dir)
    model = build_tiny_vit(data_dir / "vit224", image_size=224, num_layers=4, hidden_size=192, patch_size=32,
                           num_heads=3)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_image_memory_") as tmp:
        for n in sorted(args.sizes):
            images = write_images(data_dir, n)
            for path in ("memory", "default"):
                result = one_run(path, images, model, Path(tmp), args.max_steps)
                rows.append({"images": n, "path": path, "decoded_mb": n * 3 * 224 * 224 / 2**20, **result})
                print(json.dumps(rows[-1]), flush=True)
    smallest = {}
    for row in rows:
        smallest.setdefault(row["path"], row)
        row["rss_ratio"] = row["peak_rss_mb"] / smallest[row["path"]]["peak_rss_mb"]
    lines = ["| training images | decoded MB | run | decoded into | peak RSS MB | × smallest | decode s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['images']:,} | {r['decoded_mb']:.0f} | {r['path']} | "
              f"{'disk cache' if r['disk_cache'] else 'memory'} | {r['peak_rss_mb']:.0f} | {r['rss_ratio']:.2f} | "
              f"{r['decode_s']:.1f} |" for r in rows]
    table = "\n".join(lines)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"), "max_steps": args.max_steps}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "image_memory.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(args.out, "image_memory.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    main()
