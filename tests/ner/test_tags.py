"""shared/formats/tags.py: IOB2/BIOES conversion, validation and repair of tag sequences, the label list."""

import pytest

from shared.core.errors import DataError
from shared.formats.tags import bioes_to_iob2, from_scheme, iob2_errors, iob2_to_bioes, label_list, repair_iob2
from shared.formats.tags import spans_from_tags, validate_tags
from shared.ner.windows import continuation_map

IOB2 = ["B-p", "I-p", "O", "B-t", "B-t", "I-t", "I-t", "O", "B-p"]


BIOES = ["B-p", "E-p", "O", "S-t", "B-t", "I-t", "E-t", "O", "S-p"]


def test_iob2_bioes_both_ways():
    assert iob2_to_bioes(IOB2) == BIOES
    assert bioes_to_iob2(BIOES) == IOB2
    assert spans_from_tags(IOB2) == spans_from_tags(BIOES) == [("p", 0, 2), ("t", 3, 4), ("t", 4, 7), ("p", 8, 9)]


def test_invalid_iob2_detected_and_repaired():
    tags = ["O", "I-p", "I-p", "B-t", "I-p", "E-p"]
    assert iob2_errors(tags) == [1, 4, 5]
    fixed, n = repair_iob2(tags)
    assert fixed == ["O", "B-p", "I-p", "B-t", "B-p", "B-p"] and n == 3
    assert iob2_errors(fixed) == []


def test_validate_tags_errors_and_repair_flag():
    seqs = [["O", "B-p"], ["O", "I-p", "I-p"]]
    where = [("a.tsv", 1), ("a.tsv", 4)]
    with pytest.raises(DataError, match=r"^a\.tsv:5: invalid IOB2: tag 'I-p' at token 1"):
        validate_tags(seqs, where)
    fixed, n = validate_tags(seqs, where, repair=True)
    assert n == 1 and fixed[1] == ["O", "B-p", "I-p"]
    # i2b2/BRAT/JSON sequences point at the sentence's own line, not line + token
    with pytest.raises(DataError, match=r"^n\.con:3: "):
        validate_tags([["I-p"]], [("n.con", 3)])
    with pytest.raises(DataError, match=r"^a\.tsv:2: tag 'X-p' is not O"):
        validate_tags([["X-p"]], [("a.tsv", 2)])
    # BIOES input is converted to IOB2
    assert validate_tags([BIOES], [("b.tsv", 1)])[0] == [IOB2]


def test_from_scheme_always_gives_valid_iob2():
    assert from_scheme(["O", "I-p", "E-p", "S-t"], "BIOES") == ["O", "B-p", "I-p", "B-t"]
    assert from_scheme(["I-p", "I-t", "O"], "IOB2") == ["B-p", "B-t", "O"]


def test_label_list_and_continuation_map():
    labels = label_list([["B-t", "O", "B-p", "I-p"]])
    assert labels == ["O", "B-p", "I-p", "B-t", "I-t"]
    assert continuation_map(labels) == [0, 2, 2, 4, 4]
    assert label_list([["B-p"]], "BIOES") == ["O", "B-p", "I-p", "E-p", "S-p"]
