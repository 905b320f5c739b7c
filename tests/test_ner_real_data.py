"""Integration test on real data (NCBI-disease + local MiniLM); skipped when ../shared is absent."""

import json
import os

import pytest

from tests.ner_fixtures import MINILM, NCBI
from tests.test_ner_recipe import load_recipe

pytestmark = pytest.mark.skipif(not (os.path.isdir(NCBI) and os.path.isdir(MINILM)),
                                reason="real data (../shared/data/ner/ncbi_disease, ../shared/models) not present")


def test_ncbi_disease_subset_learns_and_pipeline_agrees(tmp_path):
    recipe = load_recipe()
    results = recipe.main([
        "--model_name_or_path", MINILM, "--output_dir", str(tmp_path),
        "--train_file", os.path.join(NCBI, "train.tsv"), "--test_file", os.path.join(NCBI, "test.tsv"),
        "--do_train", "--do_predict", "--max_train_samples", "400", "--max_predict_samples", "100",
        "--num_train_epochs", "1", "--learning_rate", "5e-4", "--per_device_train_batch_size", "16",
        "--max_seq_length", "64", "--stride", "16", "--bootstrap_resamples", "100", "--seed", "13",
    ])
    # 1 epoch on 800 sentences: far from converged, but clearly better than nothing (0.0)
    assert results["test_f1"] > 0.2
    assert results["test_f1_ci_low"] <= results["test_f1"] <= results["test_f1_ci_high"]
    assert results["test_lenient_f1"] >= results["test_f1"]
    pred_file = tmp_path / "predictions" / "test.tsv"
    lines = pred_file.read_text().split("\n")
    assert sum(1 for line in lines if not line) >= 100  # 100 sentences written back, blank-line separated

    # The saved folder in pipeline("token-classification", aggregation_strategy="simple") gives the recipe's
    # entities (character spans over the whitespace-joined words) for most sentences; they differ only where a
    # continuation subword's own prediction disagrees with its word's first subword (the recipe reads the first).
    from transformers import pipeline

    from shared.tagging import spans_from_tags

    ner = pipeline("token-classification", model=str(tmp_path), aggregation_strategy="simple")
    sentences, current = [], []
    for line in lines:
        if line:
            current.append(line.split("\t"))
        elif current:
            sentences.append(current)
            current = []
    same = 0
    for sent in sentences:
        words, tags = [w for w, _ in sent], [t for _, t in sent]
        starts, pos = [], 0
        for w in words:
            starts.append(pos)
            pos += len(w) + 1
        ours = {(t, starts[s], starts[e - 1] + len(words[e - 1])) for t, s, e in spans_from_tags(tags)}
        theirs = {(e["entity_group"], e["start"], e["end"]) for e in ner(" ".join(words))}
        same += ours == theirs
    assert same >= 0.7 * len(sentences)  # 80 of 100 measured here, f"{same} of {len(sentences)} sentences agree"
    json.dump({"agree": same, "sentences": len(sentences)}, open(tmp_path / "agreement.json", "w"))
