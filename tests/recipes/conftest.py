"""Trained folders of the three concept-chain recipes (NER, assertion status, relations), tiny and trained once per
session on the bundled synthetic notes, for the deployment and chain tests."""

from __future__ import annotations

import glob

import pytest

from shared.core.runner import run_recipe
from shared.training.tiny_models import build_tiny_bert
from tests.helpers import ASSERTION_SAMPLE, NER_SAMPLE, RELATION_SAMPLE

QUIET = ["--bf16", "false", "--bootstrap_resamples", "0", "--seed", "0", "--freeze_layers", "0"]


@pytest.fixture(scope="session")
def concept_bert(tmp_path_factory) -> str:
    """A tiny BERT whose vocabulary covers the NER, assertion and relation sample notes."""
    files = sorted(glob.glob(str(NER_SAMPLE / "*" / "*.txt")) + glob.glob(str(ASSERTION_SAMPLE / "*" / "*.txt"))
                   + glob.glob(str(RELATION_SAMPLE / "i2b2" / "*" / "*.txt")))
    return build_tiny_bert(tmp_path_factory.mktemp("concept_bert"), [open(p).read() for p in files])


@pytest.fixture(scope="session")
def assertion_folder(concept_bert, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("assertion") / "model"
    run_recipe("assertion_status", [
        "--model_name_or_path", concept_bert, "--train_file", ASSERTION_SAMPLE / "train", "--output_dir", out,
        "--do_train", "--num_train_epochs", "2", "--learning_rate", "2e-3", *QUIET])
    return str(out)


def train_relations(concept_bert, out, data, epochs: str) -> str:
    run_recipe("relation_extraction", [
        "--model_name_or_path", concept_bert, "--train_file", data, "--output_dir", out, "--do_train",
        "--num_train_epochs", epochs, "--learning_rate", "3e-3", *QUIET])
    return str(out)


@pytest.fixture(scope="session")
def relation_folder(concept_bert, tmp_path_factory) -> str:
    """i2b2 relations: type-compatible candidate pairs, types a pair cannot take masked."""
    return train_relations(concept_bert, tmp_path_factory.mktemp("relation") / "model",
                           RELATION_SAMPLE / "i2b2" / "train", "4")


@pytest.fixture(scope="session")
def brat_relation_folder(concept_bert, tmp_path_factory) -> str:
    """BRAT relations (every pair of a sentence is a candidate), one epoch: only its reading path is tested."""
    return train_relations(concept_bert, tmp_path_factory.mktemp("brat_relation") / "model",
                           RELATION_SAMPLE / "brat" / "train", "1")


@pytest.fixture(scope="session")
def chain_ner_folder(concept_bert, tmp_path_factory) -> str:
    """An i2b2 tagger of problem / test / treatment (softmax, windows shorter than many sentences)."""
    out = tmp_path_factory.mktemp("chain_ner") / "model"
    run_recipe("ner", [
        "--model_name_or_path", concept_bert, "--train_file", NER_SAMPLE / "train", "--output_dir", out,
        "--do_train", "--num_train_epochs", "3", "--learning_rate", "5e-3", "--max_seq_length", "32", "--stride",
        "8", "--optim", "adamw_torch", *QUIET])
    return str(out)
