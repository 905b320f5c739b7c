"""Windows over long notes and note-level scores from them (shared/data/long_text.py), on fixed inputs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from shared.core.errors import DataError
from shared.data.long_text import check_windows_fit, encode_windows, long_text_settings, notes_from_windows
from shared.data.long_text import windows_of_notes
from shared.training.imbalance import oversampled_order
from shared.training.tiny_models import train_wordpiece_tokenizer
from tests.helpers import TOY_CORPUS


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_wordpiece_tokenizer(TOY_CORPUS, tmp_path_factory.mktemp("tok"))


def test_mean_and_max_of_each_notes_windows():
    logits = np.array([[1.0, 0.0], [3.0, -2.0], [0.0, 5.0], [-1.0, 1.0]])
    note_of_window = [0, 0, 1, 2]  # note 0 has two windows
    assert np.allclose(notes_from_windows(logits, note_of_window, 3, "mean"), [[2.0, -1.0], [0.0, 5.0], [-1.0, 1.0]])
    assert np.allclose(notes_from_windows(logits, note_of_window, 3, "max"), [[3.0, 0.0], [0.0, 5.0], [-1.0, 1.0]])
    assert np.allclose(notes_from_windows(logits, note_of_window, 3, "first"), [[1.0, 0.0], [0.0, 5.0], [-1.0, 1.0]])
    # one window per note (truncate) gives the logits back unchanged
    assert np.allclose(notes_from_windows(logits, [0, 1, 2, 3], 4, "mean"), logits)
    with pytest.raises(ValueError, match="without a window"):
        notes_from_windows(logits, note_of_window, 4)
    with pytest.raises(DataError, match="chunk_aggregation"):
        notes_from_windows(logits, note_of_window, 3, "median")


def test_every_token_of_a_long_note_is_in_a_window_and_windows_overlap_by_stride(tokenizer):
    long_note = " ".join(TOY_CORPUS)  # ~90 word pieces
    encoded = encode_windows(tokenizer, [long_note, "no evidence of pneumonia"], None, max_length=16, stride=4)
    full = tokenizer(long_note, add_special_tokens=False)["input_ids"]
    windows = [ids[1:-1] for ids, note in zip(encoded["input_ids"], encoded["note"]) if note == 0]
    assert all(len(ids) <= 16 for ids in encoded["input_ids"])
    assert encoded["note"][-1] == 1 and encoded["note"].count(1) == 1  # a short note: one window
    assert len(windows) == int(np.ceil((len(full) - 4) / (14 - 4)))
    for before, after in zip(windows, windows[1:]):
        assert before[-4:] == after[:4]  # consecutive windows share `stride` tokens
    rebuilt = windows[0] + [t for ids in windows[1:] for t in ids[4:]]
    assert rebuilt == full  # nothing dropped, nothing invented


def test_pairs_repeat_the_first_text_in_every_window(tokenizer):
    question = "does the patient have a fever ?"
    encoded = encode_windows(tokenizer, [question], [" ".join(TOY_CORPUS)], max_length=24, stride=2)
    first = tokenizer(question, add_special_tokens=False)["input_ids"]
    assert len(encoded["input_ids"]) > 3
    for ids in encoded["input_ids"]:
        assert ids[1:1 + len(first)] == first and len(ids) <= 24


def test_what_the_tokenizer_cannot_cut_is_one_line_before_tokenizing(tokenizer):
    where = lambda i: ("notes.csv", i + 2)  # noqa: E731  (header on line 1)
    with pytest.raises(DataError, match=r"--stride must be at least 0 and less than 14 .*got 14"):
        check_windows_fit(tokenizer, ["a b c"], None, 16, 14, where, "text")
    check_windows_fit(tokenizer, ["a b c"], None, 16, 13, where, "text")
    questions = ["fever ?", " ".join(TOY_CORPUS[:2])]
    with pytest.raises(DataError, match=r"notes.csv:3: the 'question' text takes \d+ tokens, which leaves no room"):
        check_windows_fit(tokenizer, questions, ["x", "y"], 16, 2, where, "question")


def test_settings_given_win_over_the_folders_which_win_over_defaults():
    saved = SimpleNamespace(long_text={"mode": "truncate", "stride": 7, "aggregation": "max"})
    assert long_text_settings(None, None, None, None, 128).as_config() == {  # training: auto, settled on validation
        "long_text": {"mode": "chunk", "stride": 32, "aggregation": "auto", "train_windows": "all",
                      "chosen_on_validation": None}}
    assert long_text_settings("truncate", None, None, None, 128).aggregation == "mean"  # one window: nothing to choose
    assert long_text_settings(None, None, None, None, 16).stride == 4
    from_folder = long_text_settings(None, None, None, None, 128, saved)
    assert (from_folder.mode, from_folder.stride, from_folder.aggregation) == ("truncate", 7, "mean")  # one window
    given = long_text_settings("chunk", 3, "mean", None, 128, saved)
    assert (given.mode, given.stride, given.aggregation) == ("chunk", 3, "mean")
    before = long_text_settings(None, None, None, None, 128, SimpleNamespace())  # a folder from before long_text
    assert (before.mode, before.aggregation) == ("chunk", "mean")
    with pytest.raises(DataError, match="auto chooses on the validation split while training"):
        long_text_settings(None, None, "auto", None, 128, SimpleNamespace(long_text={"mode": "chunk"}))
    with pytest.raises(DataError, match="--stride and --train_windows apply only to --long_text chunk"):
        long_text_settings("truncate", 4, None, "all", 128)
    with pytest.raises(DataError, match="--chunk_aggregation applies only"):  # the folder's mode counts too
        long_text_settings(None, None, "max", None, 128, saved)


def test_oversampling_counts_notes_and_brings_all_their_windows():
    labels = [0, 0, 0, 1]
    order = oversampled_order(labels, seed=0)
    assert sorted(order.tolist()) == [0, 1, 2, 3, 3, 3]
    note_of_window = [0, 1, 1, 2, 3, 3, 3]  # note 1 has two windows, note 3 three
    rows = windows_of_notes(note_of_window, order)
    assert len(rows) == 1 + 2 + 1 + 3 * 3
    assert sorted(rows).count(4) == 3 and sorted(rows).count(1) == 1


def test_one_window_per_note_per_epoch_visits_every_window():
    from datasets import Dataset

    from shared.data.long_text import WindowPerEpoch

    note_of_window = [0, 0, 0, 1, 2, 2]
    windows = Dataset.from_dict({"input_ids": [[i] for i in range(6)], "length": [1] * 6})
    train = WindowPerEpoch(windows, note_of_window, [0, 1, 2, 2], seed=0)  # note 2 oversampled
    assert len(train) == 4
    seen = {}
    for epoch in range(6):
        train.set_epoch(epoch)
        for i in range(len(train)):
            row = train[i]["input_ids"][0]
            assert note_of_window[row] == [0, 1, 2, 2][i]  # always a window of its own note
            seen.setdefault(i, []).append(row)
    assert sorted(seen[0][:3]) == [0, 1, 2] and seen[0][:3] == seen[0][3:]  # every window once, then again
    assert set(seen[1]) == {3} and sorted(seen[2][:2]) == [4, 5]
    train.set_epoch(1)
    again = WindowPerEpoch(windows, note_of_window, [0, 1, 2, 2], seed=0)
    again.set_epoch(1)
    assert [again[i] for i in range(4)] == [train[i] for i in range(4)]  # a function of seed and epoch only


def test_auto_settles_on_the_kept_epochs_reading_and_the_card_says_why():
    chosen = long_text_settings(None, None, None, None, 128)
    chosen.choose({"aggregation": "first", "scores": {"mean": 0.61, "first": 0.64}})
    assert (chosen.aggregation, chosen.chosen_on_validation) == ("first", {"mean": 0.61, "first": 0.64})
    assert "its first window's logits, chosen on validation (mean 0.6100, first 0.6400)" in chosen.describe()
    without = long_text_settings(None, None, None, None, 128)
    without.choose(None)  # no validation split: the mean of every window
    assert (without.aggregation, without.chosen_on_validation) == ("mean", None)
    given = long_text_settings(None, None, "max", None, 128)
    given.choose({"aggregation": "first", "scores": {}})  # a reading the user chose is kept
    assert given.aggregation == "max"


@pytest.mark.parametrize("pairs", [False, True])
def test_the_first_window_reading_encodes_exactly_the_first_window(tokenizer, pairs):
    from shared.data.long_text import LongText
    from shared.text.data import NoteEncoder

    notes = [" ".join(TOY_CORPUS), "no evidence of pneumonia"]
    texts, pairs = (["does the patient have a fever ?"] * 2, notes) if pairs else (notes, None)  # pairs: cut the 2nd
    every = NoteEncoder(tokenizer, 24, LongText("chunk", 4, "mean", "all"))(texts, pairs)
    first = NoteEncoder(tokenizer, 24, LongText("chunk", 4, "first", "all"))(texts, pairs)
    assert first["note"] == [0, 1] and len(every["note"]) > 2
    for name in ("input_ids", "attention_mask"):
        assert first[name] == [every[name][every["note"].index(note)] for note in (0, 1)]
