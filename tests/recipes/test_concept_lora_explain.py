"""--use_lora and --explain in the two concept recipes (assertion status, relations), with a tiny BERT.

LoRA: the entity markers are tokens the pretrained model never saw, so their embedding rows train with the adapter
(PEFT's ``trainable_token_indices``) and only those rows are saved with it; every other row keeps the checkpoint's
values; the folder reloads (base resized to the trained vocabulary, then the adapter) to the very predictions of
the training run, and ``--merge_lora`` writes a plain model with the resized embeddings.

Explanations: on synthetic notes where one cue word of the sentence decides the assertion ("denies" -> absent,
"reports" -> present), the cue is the top-attributed word (markers shown, never ranked), and deleting it lowers the
predicted class's probability more than deleting a random word."""

from __future__ import annotations

import csv
import glob
import io
import json
import random

import numpy as np
import pytest
import torch

from shared.concepts.markers import ENTITY, FIRST, MARKER_TOKENS, SECOND
from shared.core.args import ModelArguments
from shared.core.runner import run_recipe
from shared.training import models
from shared.training.tiny_models import build_tiny_bert
from shared.trust.explain import top_words
from tests.helpers import ASSERTION_SAMPLE, RELATION_SAMPLE

ASSERTION = {split: str(ASSERTION_SAMPLE / split) for split in ("train", "validation", "test")}
RELATION = {split: str(RELATION_SAMPLE / "i2b2" / split) for split in ("train", "validation", "test")}
# Training on a CPU uses the eager attention kernel, a reload the model's default: pinned to one kernel here so
# that "the same predictions" can mean the same bytes (the kernels differ in the last float digits).
KERNEL = ["--attn_implementation", "eager"]
QUIET = ["--bootstrap_resamples", "0", "--seed", "0", *KERNEL]


def tiny_bert(tmp_path_factory, name, sample):
    corpus = [open(p).read() for p in sorted(glob.glob(str(sample / "**" / "*.txt"), recursive=True))]
    return build_tiny_bert(tmp_path_factory.mktemp(name), corpus)


@pytest.fixture(scope="module")
def assertion_bert(tmp_path_factory):
    return tiny_bert(tmp_path_factory, "tiny_assertion_bert", ASSERTION_SAMPLE)


@pytest.fixture(scope="module")
def relation_bert(tmp_path_factory):
    return tiny_bert(tmp_path_factory, "tiny_relation_bert", RELATION_SAMPLE / "i2b2")


def load(folder):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = models.load_trained(AutoModelForSequenceClassification, ModelArguments(model_name_or_path=str(folder)),
                                attn_implementation="eager")
    return model.eval(), AutoTokenizer.from_pretrained(str(folder))


def embeddings(model) -> torch.Tensor:
    """The input embedding matrix the model computes with (PEFT's trained rows put in)."""
    return model.get_input_embeddings().weight.detach().clone()


def train_with_lora(recipe, bert, data, out, monkeypatch, extra=()):
    """Run ``recipe`` with --use_lora; returns (results, embeddings just before LoRA wrapped the model, the trained
    PEFT model)."""
    seen = {}
    apply_lora = models.apply_lora

    def spy(model, model_args, **kwargs):
        seen["initial"] = embeddings(model)
        seen["model"] = apply_lora(model, model_args, **kwargs)
        return seen["model"]

    monkeypatch.setattr(models, "apply_lora", spy)
    results = run_recipe(recipe, [
        "--model_name_or_path", bert, "--output_dir", out, "--train_file", data["train"], "--validation_file",
        data["validation"], "--test_file", data["test"], "--do_train", "--do_eval", "--do_predict", "--use_lora",
        "--num_train_epochs", "2", "--learning_rate", "5e-3", *QUIET, *extra])
    return results, seen["initial"], seen["model"]


def check_marker_rows_trained(folder, initial, trained, markers):
    """The task's marker rows moved, every other row stayed; the adapter holds those rows only, and the reloaded
    folder computes with the trained ones."""
    _, tokenizer = load(folder)
    ids = tokenizer.convert_tokens_to_ids(list(markers))
    others = [i for i in range(len(initial)) if i not in ids]
    after = embeddings(trained)
    assert after.shape == initial.shape == (len(tokenizer), initial.shape[1])
    assert all(not torch.equal(after[i], initial[i]) for i in ids)
    assert torch.equal(after[others], initial[others])
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert sorted(adapter["trainable_token_indices"]) == sorted(ids)
    from safetensors.torch import load_file

    saved = load_file(str(folder / "adapter_model.safetensors"))
    rows = [v for k, v in saved.items() if "trainable_tokens" in k]
    assert [tuple(r.shape) for r in rows] == [(len(ids), initial.shape[1])]  # the rows, not the whole matrix
    assert not any(k.endswith("word_embeddings.weight") for k in saved)
    reloaded, _ = load(folder)
    base = len(tokenizer) - len(MARKER_TOKENS)  # the checkpoint's vocabulary, before the markers were added
    assert torch.equal(embeddings(reloaded)[ids], after[ids])
    assert torch.equal(embeddings(reloaded)[:base], initial[:base])


def re_evaluated(recipe, folder, test, out):
    run_recipe(recipe, ["--model_name_or_path", folder, "--output_dir", out, "--test_file", test, "--do_predict",
                        *QUIET])
    return (out / "test_predictions.csv").read_text()


def test_assertion_lora_trains_and_saves_the_marker_rows_and_reloads_to_the_same_predictions(
        assertion_bert, tmp_path, monkeypatch):
    out = tmp_path / "lora"
    results, initial, trained = train_with_lora("assertion_status", assertion_bert, ASSERTION, out, monkeypatch)
    assert 0 < results["train_trainable_parameters"] < trained.get_nb_trainable_parameters()[1] / 5
    check_marker_rows_trained(out, initial, trained, ENTITY)
    assert not list(out.glob("*explanations*"))  # written only with --explain
    assert (re_evaluated("assertion_status", out, ASSERTION["test"], tmp_path / "again")
            == (out / "test_predictions.csv").read_text())


def test_relation_lora_trains_and_saves_the_marker_rows_reloads_and_explains(relation_bert, tmp_path, monkeypatch):
    out = tmp_path / "lora"
    _, initial, trained = train_with_lora("relation_extraction", relation_bert, RELATION, out, monkeypatch,
                                          ["--explain", "3"])
    check_marker_rows_trained(out, initial, trained, (*FIRST, *SECOND))
    assert (re_evaluated("relation_extraction", out, RELATION["test"], tmp_path / "again")
            == (out / "test_predictions.csv").read_text())
    # --explain on the adapter model: every word of the marked pair's sentence, the four markers flagged
    explained = json.loads((out / "test_explanations.json").read_text())
    assert [e["row"] for e in explained] == [0, 1, 2]
    for item in explained:
        markers = [w["word"] for w in item["words"] if w["marker"]]
        assert sorted(markers) == sorted([*FIRST, *SECOND]) and all(
            w["score"] == 0.0 for w in item["words"] if w["marker"])
        assert not item["words"][top_words(item["words"])[0]]["marker"]
    page = (out / "test_explanations.html").read_text()
    assert "<span class='mk'>[E1]</span>" in page and "<script" not in page
    assert "test_explanations" in (out / "README.md").read_text()  # named sensitive in the card


def test_merged_lora_folder_holds_the_resized_embeddings(relation_bert, tmp_path, monkeypatch):
    out = tmp_path / "merged"
    _, initial, _ = train_with_lora("relation_extraction", relation_bert, RELATION, out, monkeypatch,
                                    ["--merge_lora"])
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    merged, tokenizer = load(out)
    ids = tokenizer.convert_tokens_to_ids([*FIRST, *SECOND])
    after = embeddings(merged)
    assert after.shape == initial.shape
    assert all(not torch.equal(after[i], initial[i]) for i in ids)
    assert torch.equal(after[[i for i in range(len(initial)) if i not in ids]],
                       initial[[i for i in range(len(initial)) if i not in ids]])
    # the merged matrices (W + BA in one) give the same predictions, to float rounding
    again = re_evaluated("relation_extraction", out, RELATION["test"], tmp_path / "again")
    with open(out / "test_predictions.csv", newline="") as f:
        first = list(csv.DictReader(f))
    second = list(csv.DictReader(io.StringIO(again)))
    assert [r["prediction"] for r in second] == [r["prediction"] for r in first]
    probs = [k for k in first[0] if k.startswith("prob_")]
    assert np.allclose([[float(r[k]) for k in probs] for r in second], [[float(r[k]) for k in probs] for r in first],
                       atol=1e-5)


# ------------------------------------------------------------------------------------------ explanations: faithful
FILLER = ("patient seen today in clinic with family after review of chart and labs notes stable overnight "
          "plan discussed").split()
PROBLEMS = ["fever", "cough", "rash", "nausea", "headache", "dizziness", "chest pain", "back pain"]
CUES = {"absent": "denies", "present": "reports"}  # the only word that tells the two classes apart


def cue_notes(folder, notes: int, seed: int, lines: int = 6) -> list[list[str]]:
    """i2b2 notes (.txt + .con + .ast) whose every line holds one problem concept and one cue word deciding its
    assertion; returns each concept's sentence words in reading order."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    sentences = []
    for n in range(notes):
        text, con, ast = [], [], []
        for line in range(1, lines + 1):
            label = sorted(CUES)[(n * lines + line) % 2]
            concept = rng.choice(PROBLEMS).split()
            words = rng.sample(FILLER, 6)
            words.insert(rng.randrange(len(words) + 1), CUES[label])
            start = rng.randrange(len(words) + 1)
            words[start:start] = concept
            end = start + len(concept) - 1
            entry = f'c="{" ".join(concept)}" {line}:{start} {line}:{end}||t="problem"'
            text.append(" ".join(words))
            con.append(entry)
            ast.append(f'{entry}||a="{label}"')
            sentences.append(words)
        for suffix, lines_ in ((".txt", text), (".con", con), (".ast", ast)):
            (folder / f"note_{n:02d}{suffix}").write_text("\n".join(lines_) + "\n")
    return sentences


@pytest.fixture(scope="module")
def cue_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("assertion_cue")
    cue_notes(tmp / "train", 40, 0)
    cue_notes(tmp / "validation", 6, 1)
    test = cue_notes(tmp / "test", 4, 2)
    bert = build_tiny_bert(tmp / "bert", [" ".join(FILLER + PROBLEMS + list(CUES.values()))], vocab_size=120)
    out = tmp / "out"
    results = run_recipe("assertion_status", [
        "--model_name_or_path", bert, "--output_dir", out, "--train_file", tmp / "train", "--validation_file",
        tmp / "validation", "--test_file", tmp / "test", "--do_train", "--do_eval", "--do_predict",
        "--num_train_epochs", "5", "--per_device_train_batch_size", "16", "--learning_rate", "2e-3",
        "--freeze_layers", "0", "--explain", "20", *QUIET])
    return out, results, test


def test_the_cue_word_is_the_top_attributed_word_of_the_marked_sentence(cue_run):
    out, results, test = cue_run
    assert results["test_accuracy"] >= 0.95  # the model learned the cue: otherwise there is nothing to find
    explained = json.loads((out / "test_explanations.json").read_text())
    assert [e["row"] for e in explained] == list(range(20))
    hits = 0
    for item in explained:
        words = [w["word"] for w in item["words"]]
        marked = [w["word"] for w in item["words"] if w["marker"]]
        assert marked == list(ENTITY) and words.count(ENTITY[0]) == 1
        assert [w for w in words if w not in ENTITY] in test  # the sentence's words, in order, subwords merged
        hits += words[top_words(item["words"])[0]] in CUES.values()
    assert hits >= 18, hits  # at least 90%


def test_deleting_the_top_word_lowers_the_probability_more_than_deleting_a_random_word(cue_run):
    out, _, _ = cue_run
    explained = json.loads((out / "test_explanations.json").read_text())
    model, tokenizer = load(out)
    label2id = model.config.label2id
    rng = random.Random(0)

    @torch.no_grad()
    def probability(words, label):
        inputs = tokenizer(" ".join(words), return_tensors="pt")
        return float(torch.softmax(model(**inputs).logits[0], -1)[label2id[label]])

    top_drop, random_drop = [], []
    for item in explained:
        words = [w["word"] for w in item["words"]]
        base = probability(words, item["prediction"])
        assert base == pytest.approx(item["probability"], abs=1e-5)  # the explained input is what the model read
        top = top_words(item["words"])[0]
        other = rng.choice([i for i, w in enumerate(item["words"]) if not w["marker"]])
        top_drop.append(base - probability(words[:top] + words[top + 1:], item["prediction"]))
        random_drop.append(base - probability(words[:other] + words[other + 1:], item["prediction"]))
    assert np.mean(top_drop) > np.mean(random_drop) + 0.1, (np.mean(top_drop), np.mean(random_drop))
