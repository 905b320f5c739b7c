"""shared/ner/windows.py: subword alignment, sliding windows over long notes, predictions back to words."""

import pytest
import torch

from shared.core.errors import DataError
from shared.formats.tags import from_scheme, label_list
from shared.ner.windows import IGNORE_INDEX, align_labels, continuation_map, load_tokenizer, make_windows
from shared.ner.windows import needs_prefix_space, pipeline_agreement, predict_windows, require_fast_tokenizer
from shared.ner.windows import scored_positions, simple_aggregation_spans, subword_maps, words_from_windows
from tests.helpers import build_tiny_ner_model, ner_sample_corpus


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from shared.training.tiny_models import train_wordpiece_tokenizer

    path = tmp_path_factory.mktemp("tok")
    train_wordpiece_tokenizer(ner_sample_corpus(), str(path), vocab_size=300, model_max_length=128)
    return load_tokenizer(str(path))


def test_align_first_and_all():
    word_ids = [None, 0, 0, 0, 1, 2, 2, None]
    labels = [1, 2, 0]  # B-p I-p O
    b_to_i = [0, 2, 2]
    assert align_labels(word_ids, labels, "first") == [-100, 1, -100, -100, 2, 0, -100, -100]
    assert align_labels(word_ids, labels, "all", b_to_i) == [-100, 1, 2, 2, 2, 0, 0, -100]
    with pytest.raises(ValueError):
        align_labels(word_ids, labels, "last")


def test_alignment_with_real_tokenizer_edge_cases(tokenizer):
    words = ["Hypercholesterolemia", ",", "(", "ECG", ")", "x-ray", "!!"]
    tags = [1, 0, 0, 3, 0, 3, 0]
    enc = tokenizer(words, is_split_into_words=True)
    wids = enc.word_ids()
    assert wids[0] is None and wids[-1] is None  # [CLS] ... [SEP]
    assert wids.count(0) > 3  # a long rare word splits into many subwords
    assert wids.count(5) >= 3 and wids.count(6) == 2  # "x-ray" -> x - ray(...); "!!" -> ! !
    first = align_labels(wids, tags, "first")
    # exactly one labelled position per word, at its first subword, and specials ignored
    assert sum(lab != IGNORE_INDEX for lab in first) == len(words)
    assert [first[wids.index(w)] for w in range(len(words))] == tags
    allw = align_labels(wids, tags, "all", [0, 2, 2, 4, 4])
    assert [lab for lab, w in zip(allw, wids) if w == 0] == [1] + [2] * (wids.count(0) - 1)
    assert [lab for lab, w in zip(allw, wids) if w == 5] == [3] + [4] * (wids.count(5) - 1)


def test_slow_tokenizer_is_a_clear_error():
    class Slow:
        is_fast = False

    with pytest.raises(DataError, match="not a fast"):
        require_fast_tokenizer(Slow())


def test_byte_level_bpe_gets_prefix_space(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["chest pain and fever"] * 5, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    assert needs_prefix_space(fast)
    fast.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert not needs_prefix_space(loaded)
    # with the prefix space, a word encodes the same at the start of the sentence and in the middle of it
    a = loaded(["pain"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    b = loaded(["chest", "pain"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    assert b[-len(a):] == a


def test_windows_cover_every_word_of_a_long_note(tokenizer):
    words = ("the patient was started on metoprolol for atrial fibrillation .".split()) * 12
    n_sub = len(tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"])
    max_length = 32
    assert n_sub > 3 * max_length
    windows, unmapped = make_windows(tokenizer, [words], max_length=max_length, stride=8)
    assert len(windows) > 3 and all(len(w.input_ids) <= max_length for w in windows)
    owned = sorted(w.word_ids[p] for w in windows for p in w.owned)
    assert owned == list(range(len(words))) and unmapped == [[]]  # every word predicted exactly once
    # each window starts with [CLS] and ends with [SEP]
    assert all(w.input_ids[0] == tokenizer.cls_token_id and w.input_ids[-1] == tokenizer.sep_token_id
               for w in windows)
    # a word owned by a window sits at least as far from that window's edges as in any other window
    for w in windows:
        for p in w.owned:
            ctx = min(p - 1, len(w.input_ids) - 2 - p)
            wid = w.word_ids[p]
            for other in windows:
                if wid in other.word_ids:
                    q = other.word_ids.index(wid)
                    assert ctx >= min(q - 1, len(other.input_ids) - 2 - q)


def test_windows_labels_and_decoding_round_trip(tokenizer):
    words = [["chest", "pain", "and", "fever"] * 10, [], ["ok"]]
    labels = [[1, 2, 0, 1] * 10, [], [0]]
    windows, _ = make_windows(tokenizer, words, max_length=16, stride=4, word_labels=labels)
    # feed the gold labels back as "predictions": decoding must give the word labels exactly
    preds = [[0 if lab == IGNORE_INDEX else lab for lab in w.labels] for w in windows]
    assert words_from_windows(windows, preds, [len(w) for w in words]) == labels
    empty = [w for w in windows if w.example == 1]
    assert len(empty) == 1 and empty[0].owned == []


def test_short_example_is_one_plain_window(tokenizer):
    words = ["chest", "pain", "resolved"]
    windows, _ = make_windows(tokenizer, [words], max_length=64, stride=16)
    enc = tokenizer(words, is_split_into_words=True)
    assert len(windows) == 1 and windows[0].input_ids == enc["input_ids"] and windows[0].word_ids == enc.word_ids()


def test_bad_window_settings(tokenizer):
    with pytest.raises(ValueError, match="stride"):
        make_windows(tokenizer, [["a"]], max_length=16, stride=14)
    with pytest.raises(ValueError, match="no room"):
        make_windows(tokenizer, [["a"]], max_length=2, stride=0)


def test_all_alignment_gives_valid_subword_sequences_in_both_schemes():
    word_ids = [None, 0, 0, 0, 1, 2, 2, 3, None]  # words of 3, 1, 2 and 1 subwords
    iob2 = label_list([["B-p", "I-p"]])  # O B-p I-p
    got = align_labels(word_ids, [1, 2, 1, 0], "all", subword_maps(iob2))
    assert [iob2[k] if k >= 0 else None for k in got] == [None, "B-p", "I-p", "I-p", "I-p", "B-p", "I-p", "O", None]
    assert got == align_labels(word_ids, [1, 2, 1, 0], "all", continuation_map(iob2))  # same as before for IOB2
    bioes = label_list([["B-p"]], "BIOES")  # O B-p I-p E-p S-p
    ids = {lab: i for i, lab in enumerate(bioes)}
    # B-p E-p S-p O: subwords must read B I I | E | B E | O
    got = align_labels(word_ids, [ids["B-p"], ids["E-p"], ids["S-p"], 0], "all", subword_maps(bioes))
    assert [bioes[k] if k >= 0 else None for k in got] == [None, "B-p", "I-p", "I-p", "E-p", "B-p", "E-p", "O", None]
    # E-p over two subwords: I-p E-p; the first subword still reads back as the word's IOB2 tag
    got = align_labels([0, 0, 1], [ids["E-p"], 0], "all", subword_maps(bioes))
    assert [bioes[k] for k in got] == ["I-p", "E-p", "O"]
    assert from_scheme(["B-p", bioes[got[0]]], "BIOES") == from_scheme(["B-p", "E-p"], "BIOES")


def test_scored_positions():
    word_ids = [None, 0, 0, 1, None]
    assert scored_positions(word_ids, "all") == [False, True, True, True, False]
    assert scored_positions(word_ids, "first") == [False, True, False, True, False]


def test_simple_aggregation_spans_follow_the_pipeline_grouping():
    # B starts a group, I continues a same-type group (or starts one), O closes; B-p B-p are two entities
    assert simple_aggregation_spans(["O", "B-p", "I-p", "O", "I-t", "I-t", "B-p", "B-p", "I-t"]) == {
        ("p", 1, 2), ("t", 4, 5), ("p", 6, 6), ("p", 7, 7), ("t", 8, 8)}
    assert simple_aggregation_spans(["O", "O"]) == set()


def test_pipeline_agreement_detects_words_whose_subwords_disagree(tokenizer):
    labels = ["O", "B-p", "I-p"]
    words = [["history", "of", "COPD", "."], ["history", "of", "COPD", "."]]
    windows, _ = make_windows(tokenizer, words, max_length=32, stride=4)
    copd = [p for p, wid in enumerate(windows[0].word_ids) if wid == 2]
    assert len(copd) > 1  # the abbreviation splits into several subwords
    consistent = [0] * len(windows[0].input_ids)
    for k, p in enumerate(copd):
        consistent[p] = 1 if k == 0 else 2  # B-p I-p I-p ...
    broken = list(consistent)
    broken[copd[-1]] = 0  # last subword says O: the pipeline's entity would end inside the word
    tags = [["O", "O", "B-p", "O"]] * 2
    assert pipeline_agreement(windows, [consistent, broken], labels, tags) == (1, 2)
    assert words_from_windows(windows, [consistent, broken], [4, 4]) == [[0, 0, 1, 0]] * 2  # same first subwords


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory):
    from transformers import AutoModelForTokenClassification

    path = build_tiny_ner_model(str(tmp_path_factory.mktemp("tiny")), max_position_embeddings=64)
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
