"""Tiny offline NER models for tests: a WordPiece tokenizer trained on the sample notes and a 2-layer BERT.

Built with ``shared.tiny_models.build_tiny_bert`` into a temporary folder (no network). The vocabulary is small on
purpose, so many words split into several subwords and alignment code paths are exercised.
"""

from __future__ import annotations

import glob
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "recipes", "ner", "sample_data")
SHARED = os.path.join(os.path.dirname(REPO), "shared")
NCBI = os.path.join(SHARED, "data", "ner", "ncbi_disease")
MINILM = os.path.join(SHARED, "models", "all-MiniLM-L6-v2")


def sample_corpus() -> list[str]:
    """Every line of the bundled synthetic notes (the tokenizer's training text)."""
    texts = []
    for path in sorted(glob.glob(os.path.join(SAMPLE, "**", "*.txt"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            texts.extend(f.read().split("\n"))
    return texts


def build_tiny_model(out_dir: str, max_position_embeddings: int = 128) -> str:
    """A randomly initialised 2-layer BERT (hidden 32) + a 300-word WordPiece tokenizer, saved as a model folder."""
    from shared.tiny_models import build_tiny_bert

    return str(build_tiny_bert(out_dir, sample_corpus(), vocab_size=300,
                               max_position_embeddings=max_position_embeddings))
