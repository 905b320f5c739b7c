"""NER formats: byte-identical round trips, predictions written back, and one clear error per bad input."""

import filecmp
import os
import shutil

import pytest

from shared.core.errors import DataError
from shared.formats.brat import read_brat, write_brat
from shared.formats.conll import read_conll, write_conll
from shared.formats.i2b2 import read_i2b2, write_i2b2
from shared.formats.json_format import read_ner_json, write_ner_json
from tests.helpers import NER_SAMPLE


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------- i2b2
NOTE = "Patient has chest pain .\n\nStarted on aspirin 81 mg .\n"
CON = 'c="chest pain" 1:2 1:3||t="problem"\nc="aspirin" 3:2 3:2||t="treatment"\n'


def make_note(tmp_path, txt=NOTE, con=CON, name="n1"):
    write(tmp_path / f"{name}.txt", txt)
    write(tmp_path / f"{name}.con", con)
    return tmp_path


def test_i2b2_sample_round_trip_is_byte_identical(tmp_path):
    for split in ("train", "test"):  # side-by-side and txt/ + concept/ layouts
        notes = read_i2b2(os.path.join(NER_SAMPLE, split))
        assert notes and all(n.concepts for n in notes)
        out = tmp_path / split
        write_i2b2(notes, out)
        for note in notes:
            assert read_bytes(out / f"{note.doc_id}.txt") == read_bytes(note.txt_path)
            assert read_bytes(out / f"{note.doc_id}.con") == read_bytes(note.con_path)


def test_i2b2_tags_and_predictions_written_back(tmp_path):
    note = read_i2b2(make_note(tmp_path / "in"))[0]
    tags = note.line_tags()
    assert tags == [["O", "O", "B-problem", "I-problem", "O"], [], ["O", "O", "B-treatment", "O", "O", "O"]]
    write_i2b2([note], tmp_path / "pred", tags=[tags], write_txt=False)
    assert read_bytes(tmp_path / "pred" / "n1.con") == CON.encode()
    assert not os.path.exists(tmp_path / "pred" / "n1.txt")


def test_i2b2_concept_text_is_case_insensitive(tmp_path):
    con = CON.replace("chest pain", "Chest Pain")
    assert read_i2b2(make_note(tmp_path, con=con))[0].concepts[0].type == "problem"


@pytest.mark.parametrize("con, line, message", [
    ('c="chest pain" 9:2 9:3||t="problem"\n', 1, "outside the note"),
    ('c="chest pain" 1:2 1:9||t="problem"\n', 1, "outside line 1"),
    ('c="chest ache" 1:2 1:3||t="problem"\n', 1, "does not match"),
    ('c="chest pain" 1:2 1:3||t="problem"\nc="pain" 1:3 1:3||t="problem"\n', 2, "overlaps the concept on line 1"),
    ('c="chest pain" 1:2 1:3|t="problem"\n', 1, "malformed"),
    ('c="chest pain" 1:3 1:2||t="problem"\n', 1, "after it ends"),
    ('c="pain ." 1:3 2:0||t="problem"\n', 1, "one line"),
])
def test_i2b2_bad_concepts_name_file_and_line(tmp_path, con, line, message):
    make_note(tmp_path, con=con)
    with pytest.raises(DataError) as err:
        read_i2b2(tmp_path)
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'n1.con'}:{line}: ") and message in text
    # one line, and no note text in it (clinical text must not reach logs)
    assert "\n" not in text and "chest" not in text.split(": ", 1)[1]


def test_i2b2_missing_con_and_unlabelled_notes(tmp_path):
    make_note(tmp_path)
    write(tmp_path / "n2.txt", "Another note .\n")
    with pytest.raises(DataError, match=r"n2\.txt: note has no \.con file"):
        read_i2b2(tmp_path)
    os.remove(tmp_path / "n1.con")
    notes = read_i2b2(tmp_path)
    assert [n.labelled for n in notes] == [False, False]


def test_i2b2_with_bom_and_crlf_reads_like_the_plain_note(tmp_path):
    """i2b2 positions are line:token, so a BOM and CRLF line endings (Windows editors) change nothing."""
    plain = read_i2b2(make_note(tmp_path / "plain"))[0]
    windows = read_i2b2(make_note(tmp_path / "windows", txt="\ufeff" + NOTE.replace("\n", "\r\n"),
                                  con="\ufeff" + CON.replace("\n", "\r\n")))[0]
    assert windows.lines == plain.lines and windows.line_tags() == plain.line_tags()


def test_hidden_and_macos_resource_files_are_not_notes(tmp_path):
    make_note(tmp_path)
    (tmp_path / "._n1.txt").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork \xff")  # not UTF-8
    (tmp_path / "._n1.con").write_bytes(b"\x00\x05\x16\x07")
    assert [n.doc_id for n in read_i2b2(tmp_path)] == ["n1"]
    brat = make_brat(tmp_path / "brat")
    (brat / "._d1.txt").write_bytes(b"\x00\x05\x16\x07")
    assert [d.doc_id for d in read_brat(brat)] == ["d1"]


def test_trailing_space_in_a_concept_type_is_not_a_new_type(tmp_path):
    note = read_i2b2(make_note(tmp_path, con=CON.replace('t="problem"', 't="problem "')))[0]
    assert note.line_tags()[0] == ["O", "O", "B-problem", "I-problem", "O"]


def test_extra_spaces_in_con_lines_are_harmless(tmp_path):
    con = 'c="chest pain"  1:2 1:3 || t="problem"  \n  c="aspirin" 3:2  3:2||t="treatment"\t\n'
    note = read_i2b2(make_note(tmp_path, con=con))[0]
    assert [(c.text, c.line, c.start, c.end, c.type) for c in note.concepts] == [
        ("chest pain", 1, 2, 3, "problem"), ("aspirin", 3, 2, 2, "treatment")]


def test_a_non_breaking_space_is_part_of_its_token_as_i2b2_counts(tmp_path):
    # i2b2 tokens are separated by ASCII spaces: "81\u00a0mg" is one token, so "." after it is token 4 of line 3
    note = read_i2b2(make_note(tmp_path, txt=NOTE.replace("81 mg", "81\u00a0mg"),
                               con=CON + 'c="81\u00a0mg" 3:3 3:3||t="treatment"\n'))[0]
    assert note.lines[2] == ["Started", "on", "aspirin", "81\u00a0mg", "."]
    assert note.line_tags()[2] == ["O", "O", "B-treatment", "B-treatment", "O"]


# ---------------------------------------------------------------- BRAT
TEXT = "Patient has chest pain.\nStarted on aspirin 81 mg.\n"
ANN = ("T1\tProblem 12 22\tchest pain\nT2\tTreatment 35 42\taspirin\n#1\tAnnotatorNotes T1\tsevere\n"
       "A1\tNegated T2\n")


def make_brat(tmp_path, text=TEXT, ann=ANN):
    write(tmp_path / "d1.txt", text)
    write(tmp_path / "d1.ann", ann)
    return tmp_path


def test_brat_round_trip_is_byte_identical(tmp_path):
    for ann in (ANN, ANN.rstrip("\n"), "", "T1\tProblem 12 17;18 22\tchest pain\n"):
        src = make_brat(tmp_path / "in", ann=ann)
        docs = read_brat(src)
        write_brat(docs, tmp_path / "out")
        assert filecmp.cmp(src / "d1.ann", tmp_path / "out" / "d1.ann", shallow=False)
        assert filecmp.cmp(src / "d1.txt", tmp_path / "out" / "d1.txt", shallow=False)
        shutil.rmtree(tmp_path / "in")


@pytest.mark.parametrize("text, message", [
    ("\ufeff" + TEXT, r"d1\.txt:1: starts with a byte-order mark \(BOM\)"),
    (TEXT.replace("\n", "\r\n"), r"d1\.txt:1: Windows \(CRLF\) line endings, which shift the character offsets"),
])
def test_brat_text_with_bom_or_crlf_is_one_line_naming_it(tmp_path, text, message):
    """BRAT offsets count characters of the .txt as stored: a BOM or CR would shift every entity after it."""
    with pytest.raises(DataError, match=message):
        read_brat(make_brat(tmp_path, text=text))


def test_brat_ann_with_crlf_reads_like_the_plain_one(tmp_path):
    plain = read_brat(make_brat(tmp_path / "a"))[0]
    crlf = read_brat(make_brat(tmp_path / "b", ann="\ufeff" + ANN.replace("\n", "\r\n")))[0]
    assert crlf.sentence_tags() == plain.sentence_tags()


def test_brat_words_tags_and_predictions(tmp_path):
    doc = read_brat(make_brat(tmp_path / "in"))[0]
    words = [[w for w, _, _ in s] for s in doc.sentences()]
    assert words == [["Patient", "has", "chest", "pain", "."], ["Started", "on", "aspirin", "81", "mg", "."]]
    tags = doc.sentence_tags()
    assert tags == [["O", "O", "B-Problem", "I-Problem", "O"], ["O", "O", "B-Treatment", "O", "O", "O"]]
    write_brat([doc], tmp_path / "pred", tags=[tags])
    # every entity predicted: the input's .ann comes back whole, its note and attribute lines included
    assert read_bytes(tmp_path / "pred" / "d1.ann") == ANN.encode()


@pytest.mark.parametrize("ann, line, message", [
    ("T1\tProblem 12 99\tchest pain\n", 1, "outside the text"),
    ("T1\tProblem 12 22\tchest ache\n", 1, "does not match"),
    ("T1\tProblem 12 22\tchest pain\nT2\tProblem 18 22\tpain\n", 2, "overlaps the entity on line 1"),
    ("T1\tProblem 12 22\tchest pain\nT1\tProblem 35 42\taspirin\n", 2, "already used"),
    ("T1 Problem 12 22 chest pain\n", 1, "malformed entity line"),
    ("X1\tfoo\n", 1, "malformed annotation line"),
    ("T1\tProblem 22 12\tx\n", 1, "reversed"),
])
def test_brat_bad_annotations_name_file_and_line(tmp_path, ann, line, message):
    make_brat(tmp_path, ann=ann)
    with pytest.raises(DataError) as err:
        read_brat(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'd1.ann'}:{line}: ") and message in str(err.value)


def test_brat_entity_across_lines_is_an_error(tmp_path):
    make_brat(tmp_path, ann="T1\tProblem 18 22;24 31\tpain Started\n")  # valid BRAT, but spans two sentences
    doc = read_brat(tmp_path)[0]
    with pytest.raises(DataError, match=r"d1\.ann:1: entity crosses a line break"):
        doc.sentence_tags()


# ---------------------------------------------------------------- CoNLL
CONLL = "-DOCSTART-\tO\n\nChest\tB-problem\npain\tI-problem\n.\tO\n\n\nAspirin\tB-treatment\n"


def test_conll_round_trip_and_prediction(tmp_path):
    write(tmp_path / "a.tsv", CONLL)
    data = read_conll(tmp_path / "a.tsv")
    assert [s.tokens for s in data.sentences] == [["Chest", "pain", "."], ["Aspirin"]]
    assert [s.first_line for s in data.sentences] == [3, 8]
    write_conll(data, tmp_path / "b.tsv")
    assert read_bytes(tmp_path / "b.tsv") == CONLL.encode()
    write_conll(data, tmp_path / "c.tsv", tags=[["O", "O", "O"], ["B-treatment"]])
    assert read_bytes(tmp_path / "c.tsv") == CONLL.replace("B-problem", "O").replace("I-problem", "O").encode()


def test_conll_space_separated_and_tag_column(tmp_path):
    write(tmp_path / "a.txt", "EU NNP B-ORG\nrejects VBZ O\n")
    data = read_conll(tmp_path / "a.txt", tag_column=2)
    assert data.sentences[0].tags == ["B-ORG", "O"]
    write_conll(data, tmp_path / "b.txt")
    assert read_bytes(tmp_path / "b.txt") == read_bytes(tmp_path / "a.txt")


@pytest.mark.parametrize("text, line, message", [
    ("a\tO\nb\tO\tX\n", 2, "expected 2 columns"),
    ("a\n", 1, "single column"),
    ("a\t\n", 1, "empty column"),
])
def test_conll_bad_lines(tmp_path, text, line, message):
    write(tmp_path / "a.tsv", text)
    with pytest.raises(DataError) as err:
        read_conll(tmp_path / "a.tsv")
    assert str(err.value).startswith(f"{tmp_path / 'a.tsv'}:{line}: ") and message in str(err.value)


def test_conll_with_bom_and_crlf_reads_like_the_plain_file(tmp_path):
    write(tmp_path / "plain.tsv", "Chest\tB-problem\npain\tI-problem\n\nfever\tB-problem\n")
    write(tmp_path / "windows.tsv", "\ufeffChest\tB-problem\r\npain\tI-problem\r\n\r\nfever\tB-problem\r\n")
    plain, windows = read_conll(tmp_path / "plain.tsv"), read_conll(tmp_path / "windows.tsv")
    assert [(s.tokens, s.tags) for s in windows.sentences] == [(s.tokens, s.tags) for s in plain.sentences]
    assert [s.first_line for s in windows.sentences] == [1, 4]


def test_conll_bad_utf8(tmp_path):
    (tmp_path / "a.tsv").write_bytes(b"caf\xe9\tO\n")
    with pytest.raises(DataError, match="not valid UTF-8"):
        read_conll(tmp_path / "a.tsv")


# ---------------------------------------------------------------- JSON
def test_json_lines_read_write_and_errors(tmp_path):
    write(tmp_path / "a.jsonl", '{"id": 1, "tokens": ["chest", "pain"], "ner_tags": ["B-p", "I-p"]}\n\n'
                                '{"id": 2, "tokens": ["ok"], "ner_tags": ["O"]}\n')
    data, toks, tags = read_ner_json(tmp_path / "a.jsonl")
    assert toks == [["chest", "pain"], ["ok"]] and tags == [["B-p", "I-p"], ["O"]] and data.lines == [1, 3]
    write_ner_json(data, tmp_path / "b.jsonl", [["O", "O"], ["B-p"]])
    _, _, tags2 = read_ner_json(tmp_path / "b.jsonl")
    assert tags2 == [["O", "O"], ["B-p"]]
    write(tmp_path / "c.json", '[{"tokens": ["a"], "ner_tags": [1]}]')
    assert read_ner_json(tmp_path / "c.json", label_names=["O", "B-p"])[2] == [["B-p"]]
    write(tmp_path / "d.jsonl", '{"tokens": ["a", "b"], "ner_tags": ["O"]}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:1: record has 2 tokens but 1 tags"):
        read_ner_json(tmp_path / "d.jsonl")
    write(tmp_path / "e.jsonl", '{"tokens": ["a"]}\n')
    with pytest.raises(DataError, match=r"e\.jsonl:1: record has no 'ner_tags' field"):
        read_ner_json(tmp_path / "e.jsonl")
    assert read_ner_json(tmp_path / "e.jsonl", require_tags=False)[2] == [["O"]]
    write(tmp_path / "f.jsonl", '{"tokens": ["a"]}\n{"tokens": ["a"], "ner_tags": ["O"]\n')
    with pytest.raises(DataError, match=r"f\.jsonl:2: invalid JSON"):
        read_ner_json(tmp_path / "f.jsonl")


def test_an_entity_in_the_gap_of_a_discontinuous_one_is_named_as_such(tmp_path):
    text = "Patient has chest wall and back pain today.\n"
    ann = "T1\tProblem 12 17;32 36\tchest pain\nT2\tProblem 27 31\tback\n"  # "back" lies in the gap of T1
    doc = read_brat(make_brat(tmp_path, text, ann), allow_overlaps=True)[0]
    with pytest.raises(DataError, match=r"d1\.ann:2: entity lies in the gap of the discontinuous entity on line 1 "
                                        r"\(fragments 12 17;32 36\), read as its covering range$"):
        doc.tag_sentences("error")
    assert doc.tag_sentences("first_fragment")[0] == [["O", "O", "B-Problem", "O", "O", "B-Problem", "O", "O", "O"]]
    with pytest.raises(DataError, match=r"d1\.ann:2: entity overlaps the discontinuous entity on line 1 \(read as "
                                        r"its covering range 12-36\)$"):
        read_brat(tmp_path)
    reversed_order = "T2\tProblem 27 31\tback\nT1\tProblem 12 17;32 36\tchest pain\n"
    doc = read_brat(make_brat(tmp_path, text, reversed_order), allow_overlaps=True)[0]
    with pytest.raises(DataError, match=r"d1\.ann:2: discontinuous entity \(fragments 12 17;32 36\) read as its "
                                        r"covering range takes the words of the entity on line 1 in its gap"):
        doc.tag_sentences("error")
