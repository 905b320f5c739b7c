"""Sliding windows with a real (tiny) model: long notes get a prediction for every word; short ones are unchanged."""

import pytest
import torch

from shared.tagging import load_tokenizer, make_windows, predict_windows, words_from_windows
from tests.ner_fixtures import build_tiny_model


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory):
    from transformers import AutoModelForTokenClassification

    path = build_tiny_model(str(tmp_path_factory.mktemp("tiny")), max_position_embeddings=64)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=5)
    return model, load_tokenizer(path)


def test_note_three_times_longer_than_the_model_gets_every_word(model_and_tokenizer):
    model, tok = model_and_tokenizer
    words = "metoprolol was started for atrial fibrillation and hypertension .".split() * 30
    assert len(tok(words, is_split_into_words=True)["input_ids"]) > 3 * 64
    windows, unmapped = make_windows(tok, [words], max_length=64, stride=16)
    preds = predict_windows(model, windows, tok.pad_token_id, batch_size=4)
    labels = words_from_windows(windows, preds, [len(words)], default=-1)[0]
    assert len(labels) == len(words) and -1 not in labels and unmapped == [[]]


def test_note_that_fits_gives_the_same_predictions_with_and_without_windows(model_and_tokenizer):
    model, tok = model_and_tokenizer
    notes = [["chest", "pain", "resolved", "after", "aspirin", "."], ["fever", "."], []]
    windows, _ = make_windows(tok, notes, max_length=64, stride=16)
    assert len(windows) == len(notes)
    windowed = words_from_windows(windows, predict_windows(model, windows, tok.pad_token_id), [len(n) for n in notes])
    model.eval()
    for words, got in zip(notes[:2], windowed):
        enc = tok(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            argmax = model(**enc).logits[0].argmax(-1).tolist()
        wids = enc.word_ids()
        plain = [argmax[wids.index(w)] for w in range(len(words))]
        assert got == plain
    assert windowed[2] == []
