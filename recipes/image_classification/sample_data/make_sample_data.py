"""Generate the small SYNTHETIC sample data bundled with the image recipe (no patient images, nothing downloaded).

Two classes of 32x32 grayscale "films": ``normal`` is smooth noise with two darker lung fields; ``opacity`` adds a
bright blurred blob in one lung field, the textbook look of a consolidation. The task is easy on purpose, so a tiny
model can show learning in seconds. The same pixels are written in every input format the recipe reads:

    sample_data/folders/{train,validation,test}/{normal,opacity}/NNN.png   class = subfolder
    sample_data/{train,validation,test}.csv and .jsonl                      image path + label columns
    sample_data/sample.npz                                                  MedMNIST layout, 28x28, labels (N, 1)
    sample_data/sample_multilabel.npz                                       MedMNIST layout, labels (N, 3) 0/1

    python recipes/image_classification/make_sample_data.py [--out DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil

import numpy as np
from PIL import Image

CLASSES = ("normal", "opacity")
COUNTS = {"train": 24, "validation": 8, "test": 8}  # per class


def _blur(image: np.ndarray, passes: int = 2) -> np.ndarray:
    for _ in range(passes):  # a cheap box blur, so the images look smooth without scipy
        image = (image + np.roll(image, 1, 0) + np.roll(image, -1, 0) + np.roll(image, 1, 1) + np.roll(image, -1, 1)) / 5
    return image


def synthetic_film(rng: np.random.Generator, size: int, opacity: bool, extra_blobs: int = 0) -> np.ndarray:
    """One grayscale uint8 image ``(size, size)``."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 0.55 + 0.08 * rng.standard_normal((size, size))
    for cx in (0.3, 0.7):  # two darker lung fields
        image -= 0.25 * np.exp(-(((xx - cx) / 0.16) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    blobs = (1 if opacity else 0) + extra_blobs
    for _ in range(blobs):
        cx, cy = rng.choice([0.3, 0.7]) + rng.uniform(-0.06, 0.06), rng.uniform(0.35, 0.65)
        image += rng.uniform(0.35, 0.5) * np.exp(-(((xx - cx) / 0.1) ** 2 + ((yy - cy) / 0.1) ** 2))
    return (np.clip(_blur(image), 0, 1) * 255).round().astype(np.uint8)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_data"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    folders = os.path.join(args.out, "folders")
    shutil.rmtree(folders, ignore_errors=True)

    npz = {}
    for split, per_class in COUNTS.items():
        rows = []
        for label in CLASSES:
            os.makedirs(os.path.join(folders, split, label), exist_ok=True)
            for i in range(per_class):
                relative = f"folders/{split}/{label}/{i:03d}.png"
                Image.fromarray(synthetic_film(rng, 32, label == "opacity")).save(os.path.join(args.out, relative))
                rows.append({"image": relative, "label": label})
        rng.shuffle(rows)
        with open(os.path.join(args.out, f"{split}.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["image", "label"])
            writer.writeheader()
            writer.writerows(rows)
        with open(os.path.join(args.out, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)

        # MedMNIST layout: 28x28 uint8 images, labels (N, 1); val instead of validation.
        prefix = {"validation": "val"}.get(split, split)
        labels = rng.integers(0, 2, size=2 * per_class)
        npz[f"{prefix}_images"] = np.stack([synthetic_film(rng, 28, bool(y)) for y in labels])
        npz[f"{prefix}_labels"] = labels[:, None].astype(np.uint8)
    np.savez_compressed(os.path.join(args.out, "sample.npz"), **npz)

    # Multi-label, 3 findings:
    # label 0 = any opacity, 1 = two or more opacities, 2 = random (unlearnable on purpose, a realistic nuisance).
    multi = {}
    for split, per_class in COUNTS.items():
        prefix = {"validation": "val"}.get(split, split)
        blobs = rng.integers(0, 3, size=2 * per_class)
        multi[f"{prefix}_images"] = np.stack([synthetic_film(rng, 28, False, extra_blobs=int(b)) for b in blobs])
        third = rng.integers(0, 2, size=len(blobs))
        multi[f"{prefix}_labels"] = np.stack([blobs >= 1, blobs >= 2, third], 1).astype(np.uint8)
    np.savez_compressed(os.path.join(args.out, "sample_multilabel.npz"), **multi)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
    print(f"wrote synthetic sample data to {args.out} ({total / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
