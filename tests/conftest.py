"""Shared test fixtures: tiny models built from config and a tokenizer trained on the fly (CPU, seconds).

Real data and weights in ``../shared`` are used by integration tests only, which skip when it is absent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_ASSETS = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from shared.tiny_models import build_tiny_bert, build_tiny_vit  # noqa: E402  (importable from a clone without pip install -e)

# Never reach for the network in tests; everything is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOY_CORPUS = [
    "patient presents with chest pain and shortness of breath",
    "no evidence of pneumonia on chest x-ray",
    "started on metformin for type 2 diabetes",
    "mri of the brain shows no acute infarct",
    "the patient denies fever , cough or haemoptysis",
    "blood pressure 140/90 , heart rate 88 , oxygen saturation 95%",
    "history of hypertension , hyperlipidaemia and atrial fibrillation",
    "abdominal pain with nausea and vomiting for two days",
    "productive cough , wheeze and reduced peak flow",
    "sudden onset left-sided weakness and slurred speech",
]


def real_asset(*parts: str) -> Path:
    """A path under ../shared, or skip the test when the folder is absent (fresh clones have none)."""
    path = SHARED_ASSETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data/model not available: {path}")
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny pretrained-looking BERT folder whose vocabulary covers the bundled sample data."""
    corpus = list(TOY_CORPUS)
    sample = ROOT / "recipes" / "text_classification" / "sample_data" / "train.csv"
    if sample.exists():
        import csv

        with sample.open(encoding="utf-8") as f:
            corpus += [row["text"] for row in csv.DictReader(f)]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), corpus)


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> str:
    """A 2-layer ViT (hidden 32, 32 px, patch 8) built from config, saved with its image processor."""
    return build_tiny_vit(tmp_path_factory.mktemp("tiny_vit"))



def load_recipe(task: str):
    """Import ``recipes/<task>/train.py`` as a module (recipes are scripts, not a package)."""
    import importlib.util

    path = ROOT / "recipes" / task / "train.py"
    spec = importlib.util.spec_from_file_location(f"recipe_{task}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def run_recipe_cli(task: str, args: list[str], timeout: int = 600):
    """Run a recipe as a user would (a subprocess), returning the CompletedProcess."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "recipes" / task / "train.py"), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )
