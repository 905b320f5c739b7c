"""Session fixtures: tiny models built from config (CPU, seconds). Real data and weights in ``../shared`` are used by
integration tests only, which skip when it is absent (tests/helpers.py: ``real_asset``)."""

from __future__ import annotations

import csv
import os

import pytest

from shared.training.tiny_models import build_tiny_bert, build_tiny_vit
from tests.helpers import TEXT_SAMPLE, TOY_CORPUS, build_tiny_ner_model

# Never reach for the network in tests; everything is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tiny pretrained-looking BERT folder whose vocabulary covers the bundled text sample data."""
    corpus = list(TOY_CORPUS)
    with (TEXT_SAMPLE / "train.csv").open(encoding="utf-8") as f:
        corpus += [row["text"] for row in csv.DictReader(f)]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), corpus)


@pytest.fixture(scope="session")
def tiny_ner_model(tmp_path_factory) -> str:
    """A tiny BERT whose 300-word vocabulary comes from the NER sample notes."""
    return build_tiny_ner_model(tmp_path_factory.mktemp("tiny_ner_bert"))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> str:
    """A 2-layer ViT (hidden 32, 32 px, patch 8) built from config, saved with its image processor."""
    return build_tiny_vit(tmp_path_factory.mktemp("tiny_vit"))
