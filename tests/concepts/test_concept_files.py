"""i2b2 .ast / .rel files and BRAT R lines, read against the note's concepts; candidate pairs; entity markers."""

from __future__ import annotations

import pytest

from shared.concepts.brat import brat_candidate_pairs as brat_pairs
from shared.concepts.brat import relations
from shared.concepts.i2b2 import Assertion, Relation, i2b2_candidate_pairs, parse_ast, parse_rel, write_ast, write_rel
from shared.concepts.markers import ENTITY, FIRST, MARKER_TOKENS, SECOND, add_marker_tokens, mark
from shared.core.errors import DataError
from shared.formats.brat import read_brat
from shared.formats.i2b2 import read_i2b2
from tests.helpers import real_asset

NOTE = "He was started on furosemide for pneumonia .\nChest x-ray revealed effusion and pneumonia .\n"
CON = ('c="furosemide" 1:4 1:4||t="treatment"\nc="pneumonia" 1:6 1:6||t="problem"\n'
       'c="chest x-ray" 2:0 2:1||t="test"\nc="effusion" 2:3 2:3||t="problem"\nc="pneumonia" 2:5 2:5||t="problem"\n')


def note(tmp_path, ast=None, rel=None):
    (tmp_path / "n.txt").write_text(NOTE)
    (tmp_path / "n.con").write_text(CON)
    for suffix, body in ((".ast", ast), (".rel", rel)):
        if body is not None:
            (tmp_path / f"n{suffix}").write_text(body)
    return read_i2b2(tmp_path)[0]


def test_assertions_and_relations_read_and_write_back(tmp_path):
    ast = 'c="pneumonia" 1:6 1:6||t="problem"||a="present"\nc="effusion" 2:3 2:3||t="problem"||a="possible"\n'
    rel = 'c="furosemide" 1:4 1:4||r="TrAP"||c="pneumonia" 1:6 1:6\nc="chest x-ray" 2:0 2:1||r="TeRP"||c="effusion" 2:3 2:3\n'
    n = note(tmp_path, ast, rel)
    assertions, rels = parse_ast(str(tmp_path / "n.ast"), n), parse_rel(str(tmp_path / "n.rel"), n)
    assert [(a.concept.text, a.value) for a in assertions] == [("pneumonia", "present"), ("effusion", "possible")]
    assert [(r.first.text, r.type, r.second.text) for r in rels] == [("furosemide", "TrAP", "pneumonia"),
                                                                     ("chest x-ray", "TeRP", "effusion")]
    write_ast(tmp_path / "out.ast", assertions)
    write_rel(tmp_path / "out.rel", rels)
    assert (tmp_path / "out.ast").read_text() == ast and (tmp_path / "out.rel").read_text() == rel
    assert isinstance(assertions[0], Assertion) and isinstance(rels[0], Relation)


def test_candidates_are_the_type_compatible_pairs_of_a_sentence(tmp_path):
    pairs = [(a.text, b.text) for a, b in i2b2_candidate_pairs(note(tmp_path))]
    # line 1: treatment-problem; line 2: test-problem twice, problem-problem once; nothing across lines
    assert pairs == [("furosemide", "pneumonia"), ("chest x-ray", "effusion"), ("chest x-ray", "pneumonia"),
                     ("effusion", "pneumonia")]


@pytest.mark.parametrize("kind,body,match", [
    ("rel", 'c="furosemide" 1:4 1:4||r="TrAP"||c="fever" 1:7 1:7\n',
     r"n\.rel:1: the second concept at 1:7-1:7 is not a concept of the note's \.con file"),
    ("rel", 'c="furosemide" 1:4 1:4||r="TrAP"||c="effusion" 2:3 2:3\n',
     r"n\.rel:1: a relation across sentences \(lines 1 and 2\)"),
    ("rel", 'c="chest x-ray" 2:0 2:1||r="TrAP"||c="effusion" 2:3 2:3\n',
     r"n\.rel:1: TrAP joins a treatment and a problem, not a test and a problem"),
    ("rel", 'c="furosemide" 1:4 1:4||r="Cures"||c="pneumonia" 1:6 1:6\n', r"unknown relation type 'Cures'"),
    ("ast", 'c="furosemide" 1:4 1:4||t="treatment"||a="present"\n',
     r"n\.ast:1: an assertion on a treatment concept; i2b2 asserts problems only"),
    ("ast", '\nc="pneumonia" 1:6 1:6||t="problem"||a="likely"\n', r"n\.ast:2: unknown assertion 'likely'"),
    ("ast", 'c="pneumonia" 1:6 1:6||t="problem"||a="present"\nc="pneumonia" 1:6 1:6||t="problem"||a="absent"\n',
     r"n\.ast:2: a second assertion on the concept of line 1"),
    ("ast", 'c="pneumonia" 1:6 1:6 t="problem"\n', r"n\.ast:1: malformed assertion line"),
])
def test_mistakes_are_one_line_naming_file_and_line(tmp_path, kind, body, match):
    n = note(tmp_path, **{kind: body})
    with pytest.raises(DataError, match=match) as info:
        (parse_ast if kind == "ast" else parse_rel)(str(tmp_path / f"n.{kind}"), n)
    assert not any(word in str(info.value) for word in ("furosemide", "pneumonia", "effusion", "x-ray"))


def test_brat_relations_and_their_mistakes(tmp_path):
    text = "Aspirin increases warfarin levels .\nAvoid ibuprofen .\n"
    ann = ("T1\tdrug 0 7\tAspirin\nT2\tdrug 18 26\twarfarin\nT3\tgroup 42 51\tibuprofen\n"
           "R1\teffect Arg1:T1 Arg2:T2\n")
    (tmp_path / "d.txt").write_text(text)
    (tmp_path / "d.ann").write_text(ann)
    doc = read_brat(tmp_path)[0]
    assert [(r.type, r.arg1.text, r.arg2.text) for r in relations(doc)] == [("effect", "Aspirin", "warfarin")]
    assert [(a.id, b.id) for a, b in brat_pairs(doc)] == [("T1", "T2")]  # T3 is alone on its line
    assert brat_pairs(doc, [("drug", "group")]) == []
    for bad, match in (("R2\teffect Arg1:T1 Arg2:T3\n", r"d\.ann:5: relation R2 crosses sentences \(lines 1 and 2"),
                       ("R2\teffect Arg1:T1 Arg2:T9\n", r"d\.ann:5: relation R2 names T9, which is not an entity"),
                       ("R2\tadvise Arg1:T2 Arg2:T1\n", r"d\.ann:5: a second relation between T2 and T1"),
                       ("R2 effect T1 T2\n", r"d\.ann:5: malformed relation line")):
        (tmp_path / "d.ann").write_text(ann + bad)
        with pytest.raises(DataError, match=match):
            relations(read_brat(tmp_path)[0])


def test_markers_wrap_spans_and_nest_in_a_fixed_order():
    words = "He was started on furosemide for pneumonia .".split()
    assert mark(words, [(4, 4), (6, 6)], [FIRST, SECOND])[3:10] == ["on", "[E1]", "furosemide", "[/E1]", "for",
                                                                    "[E2]", "pneumonia"]
    assert mark(words, [(6, 6)], [ENTITY])[-4:] == ["[E]", "pneumonia", "[/E]", "."]
    nested = mark(["thiazide", "and", "loop", "diuretics"], [(0, 3), (2, 3)], [FIRST, SECOND])
    assert nested == ["[E1]", "thiazide", "and", "[E2]", "loop", "diuretics", "[/E2]", "[/E1]"]
    with pytest.raises(ValueError):
        mark(words, [(7, 9)], [ENTITY])


def test_marker_tokens_are_added_once_and_never_split(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    before = model.get_input_embeddings().weight.shape[0]
    assert add_marker_tokens(tokenizer, model) == len(MARKER_TOKENS)
    assert add_marker_tokens(tokenizer, model) == 0  # idempotent
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == before + len(MARKER_TOKENS)
    ids = tokenizer("[E1] aspirin [/E1]", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens([ids[0], ids[-1]]) == ["[E1]", "[/E1]"]


def test_ddi_2013_relations_match_the_published_counts():
    """DDI 2013 train as BRAT (../shared): 4,020 positive relations among 27,792 same-sentence pairs, the counts of
    the corpus (its README); its overlapping discontinuous mentions are read."""
    docs = read_brat(real_asset("data", "relations", "ddi", "train"), allow_overlaps=True)
    positives = [r for doc in docs for r in relations(doc)]
    assert len(docs) == 714 and len(positives) == 4020
    assert sum(len(brat_pairs(doc)) for doc in docs) == 27792
    assert {r.type for r in positives} == {"mechanism", "effect", "advise", "int"}
