"""Integration test on real data (NCBI-disease + local MiniLM); skipped when ../shared is absent."""

import os

import pytest

from tests.ner_fixtures import MINILM, NCBI
from tests.test_ner_recipe import load_recipe, pipeline_entities, recipe_entities

pytestmark = pytest.mark.skipif(not (os.path.isdir(NCBI) and os.path.isdir(MINILM)),
                                reason="real data (../shared/data/ner/ncbi_disease, ../shared/models) not present")


def test_ncbi_disease_subset_learns_and_pipeline_agrees(tmp_path):
    recipe = load_recipe()
    results = recipe.main([
        "--model_name_or_path", MINILM, "--output_dir", str(tmp_path),
        "--train_file", os.path.join(NCBI, "train.tsv"), "--test_file", os.path.join(NCBI, "test.tsv"),
        "--do_train", "--do_predict", "--max_train_samples", "400", "--max_predict_samples", "100",
        "--num_train_epochs", "1", "--learning_rate", "5e-4", "--per_device_train_batch_size", "16",
        "--max_seq_length", "128", "--bootstrap_resamples", "100", "--seed", "13",
    ])
    # 1 epoch on 400 sentences: far from converged, but clearly better than nothing (0.0)
    assert results["test_f1"] > 0.2
    assert results["test_f1_ci_low"] <= results["test_f1"] <= results["test_f1_ci_high"]
    assert results["test_lenient_f1"] >= results["test_f1"]
    lines = (tmp_path / "predictions" / "test.tsv").read_text().split("\n")
    sentences, current = [], []
    for line in lines:
        if line:
            current.append(line.split("\t"))
        elif current:
            sentences.append(current)
            current = []
    assert len(sentences) == 100  # every sentence written back

    # The saved folder in pipeline("token-classification", aggregation_strategy="simple"): the recipe predicts
    # what the pipeline computes (float32, every subword trained) and measures on which sentences the pipeline's
    # subword grouping gives its entities (`test_pipeline_agreement`). That measurement must match the real pipeline
    # up to float noise: the recipe predicts in padded batches, the pipeline one sentence at a time, and a subword
    # whose two best labels are within ~1e-6 can flip (seen once in 100 sentences after a change of training order)...
    from transformers import pipeline

    ner = pipeline("token-classification", model=str(tmp_path), aggregation_strategy="simple")
    same = sum(pipeline_entities(ner, [w for w, _ in s]) == recipe_entities([w for w, _ in s], [t for _, t in s])
               for s in sentences)
    assert results["test_pipeline_checked"] == 100
    assert abs(same - round(results["test_pipeline_agreement"] * 100)) <= 1
    # ...and most sentences agree: they differ only where a word's subwords still disagree (an entity starting or
    # ending inside a word), which becomes rarer as training converges. Measured on this 1-epoch run: 67 of 100
    # (0.725 of 200 sentences; 0.85 after 1 epoch on 1,200 sentences); the full run is in the recipe README.
    assert same >= 60, f"{same} of 100 sentences agree"
