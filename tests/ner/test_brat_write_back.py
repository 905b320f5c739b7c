"""BRAT predictions written back whole (ids kept, non-entity lines kept while what they refer to exists), and
--overlapping_entities: what i2b2 / BRAT entities that flat tags cannot hold become, counted, recorded for
predict.py; the default stays a one-line error."""

import json
import logging
import os
import re

import pytest

from shared.core.errors import DataError
from shared.core.runner import run_recipe
from shared.formats.brat import read_brat, write_brat
from shared.ner.data import load_split
from tests.helpers import assert_one_line, real_asset, run_cli, run_in_process

TEXT = "Chest pain after aspirin and warfarin.\nGave aluminum and magnesium hydroxide.\n"


def at(phrase: str) -> str:
    start = TEXT.index(phrase)
    return f"{start} {start + len(phrase)}"


# Every kind of .ann line: T (one discontinuous, T4, overlapping T5), R, A, M, E, N, #, *; R2 and #2 (a note on R2)
# depend on T4, which flat tags cannot predict.
ANN_LINES = [
    f"T1\tProblem {at('Chest pain')}\tChest pain",
    f"T2\tDrug {at('aspirin')}\taspirin",
    f"T3\tDrug {at('warfarin')}\twarfarin",
    f"T4\tDrug {at('aluminum')};{at('hydroxide')}\taluminum hydroxide",
    f"T5\tDrug {at('magnesium hydroxide')}\tmagnesium hydroxide",
    f"T6\tCause {at('after')}\tafter",
    "R1\tInteraction Arg1:T2 Arg2:T3",
    "R2\tInteraction Arg1:T3 Arg2:T4",
    "A1\tNegated T1",
    "M1\tSeverity T5 High",
    "E1\tCause:T6 Agent:T2 Theme:T1",
    "N1\tReference T2 RxNorm:1191\taspirin",
    "#1\tAnnotatorNotes T3\tcheck the dose",
    "#2\tAnnotatorNotes R2\tfrom the label",
    "A2\tUncertain E1",
    "*\tEquiv T2 T3",
]
ANN = "".join(line + "\n" for line in ANN_LINES)
NOTE_TEXT = ["warfarin", "aspirin", "check the dose", "from the label"]  # never in a log


def line(lid: str) -> str:
    return next(x for x in ANN_LINES if x.split("\t")[0] == lid)


def make_brat(folder, text=TEXT, ann=ANN, name="d1"):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(text)
    if ann is not None:
        with open(os.path.join(folder, f"{name}.ann"), "w", encoding="utf-8", newline="") as f:
            f.write(ann)
    return folder


def assert_ids_valid(ann_text: str) -> None:
    """Every id a line refers to is the id of a line of the file (checked apart from the writer's own parser)."""
    lines = [x.split("\t") for x in ann_text.split("\n") if x]
    ids = {fields[0] for fields in lines}
    for fields in lines:
        if fields[0].startswith("T"):
            continue
        refs = [token.split(":")[-1] for token in fields[1].split(" ")]
        refs = [r for r in refs if re.fullmatch(r"[TREAMN#]\d+", r)]
        assert refs and set(refs) <= ids, fields


def every_word_a_drug(doc) -> list[list[str]]:
    """Predictions of a model that tags every word B-Drug: one-word drugs of the input are predicted, nothing else."""
    return [["B-Drug"] * len(words) for words in doc.sentences()]


def new_drug_lines(first_id: int, input_drugs=("aspirin", "warfarin")) -> list[str]:
    """The T lines of :func:`every_word_a_drug` that no input entity has, in text order from ``T<first_id>``."""
    spans = [m.span() for m in re.finditer(r"\w+|[^\w\s]", TEXT)]
    words = [(s, e) for s, e in spans if TEXT[s:e] not in input_drugs]
    return [f"T{k}\tDrug {s} {e}\t{TEXT[s:e]}" for k, (s, e) in enumerate(words, start=first_id)]


# Input order; T2/T3 (one-word drugs) kept with their ids; new ids from T7 after the last input T line; R1, N1, #1
# and * still have their entities; R2 / A1 / M1 / E1 lost theirs, #2 its R2 and A2 its E1: 6 of 10 lines dropped.
EVERY_WORD_A_DRUG = "".join(x + "\n" for x in [line("T2"), line("T3"), *new_drug_lines(7), line("R1"), line("N1"),
                                                line("#1"), line("*")])


# ------------------------------------------------------------------------------------------ writing back (unit)
def test_what_flat_tags_hold_comes_back_as_read_and_what_depends_on_the_rest_goes(tmp_path, caplog):
    doc = read_brat(make_brat(tmp_path / "in"), allow_overlaps=True)[0]
    tags, changed = doc.tag_sentences("drop")  # the gold tags: every entity but the discontinuous T4
    assert changed == {"dropped_discontinuous": 1}
    with caplog.at_level(logging.INFO):
        write_brat([doc], tmp_path / "out", tags=[tags], write_txt=False)
    written = (tmp_path / "out" / "d1.ann").read_text()
    assert written == "".join(x + "\n" for x in ANN_LINES if x.split("\t")[0] not in ("T4", "R2", "#2"))
    assert_ids_valid(written)
    assert "2 of 10 non-entity .ann lines dropped" in caplog.text
    assert not any(text in caplog.text for text in NOTE_TEXT)


def test_ids_of_predicted_input_entities_are_kept_new_ones_above_and_lines_on_lost_ones_dropped(tmp_path, caplog):
    doc = read_brat(make_brat(tmp_path / "in"), allow_overlaps=True)[0]
    with caplog.at_level(logging.INFO):
        write_brat([doc], tmp_path / "out", tags=[every_word_a_drug(doc)], write_txt=False)
    written = (tmp_path / "out" / "d1.ann").read_text()
    assert written == EVERY_WORD_A_DRUG
    assert_ids_valid(written)
    assert "6 of 10 non-entity .ann lines dropped" in caplog.text
    assert not any(text in caplog.text for text in NOTE_TEXT)


def test_new_ids_start_above_the_largest_input_id_and_a_line_on_a_missing_id_goes(tmp_path):
    ann = f"T9\tDrug {at('aspirin')}\taspirin\nT2\tDrug {at('warfarin')}\twarfarin\nR1\tX Arg1:T9 Arg2:T77\n"
    doc = read_brat(make_brat(tmp_path / "in", ann=ann))[0]
    tags = [["O", "O", "O", "B-Drug", "O", "O", "O"], ["B-Drug"] + ["O"] * 5]  # aspirin, and "Gave"
    write_brat([doc], tmp_path / "out", tags=[tags], write_txt=False)
    gave = TEXT.index("Gave")
    assert (tmp_path / "out" / "d1.ann").read_text() == (f"T9\tDrug {at('aspirin')}\taspirin\n"
                                                         f"T10\tDrug {gave} {gave + 4}\tGave\n")


def test_unlabelled_notes_get_ids_from_t1_and_an_ann_without_final_newline_keeps_it(tmp_path):
    doc = read_brat(make_brat(tmp_path / "plain", ann=None))[0]
    write_brat([doc], tmp_path / "out", tags=[every_word_a_drug(doc)], write_txt=False)
    assert (tmp_path / "out" / "d1.ann").read_text() == "".join(x + "\n" for x in new_drug_lines(1, input_drugs=()))
    doc = read_brat(make_brat(tmp_path / "bare", ann=ANN.rstrip("\n")), allow_overlaps=True)[0]
    write_brat([doc], tmp_path / "out2", tags=[every_word_a_drug(doc)], write_txt=False)
    assert (tmp_path / "out2" / "d1.ann").read_text() == EVERY_WORD_A_DRUG.rstrip("\n")


def test_fragments_apart_by_spaces_only_are_one_span_and_keep_their_line(tmp_path):
    start = TEXT.index("Chest")
    ann = f"T1\tProblem {start} {start + 5};{start + 6} {start + 10}\tChest pain\nA1\tNegated T1\n"
    doc = read_brat(make_brat(tmp_path / "in", ann=ann))[0]
    tags, changed = doc.tag_sentences()
    assert tags[0][:2] == ["B-Problem", "I-Problem"] and not changed  # read whole, nothing changed
    write_brat([doc], tmp_path / "out", tags=[tags], write_txt=False)
    assert (tmp_path / "out" / "d1.ann").read_text() == ann


# ------------------------------------------------------------------------------------------ --overlapping_entities
SMALL_TEXT = "Gave aluminum and magnesium hydroxide.\nChest pain and chest tightness.\n"


def small_at(phrase: str) -> str:
    start = SMALL_TEXT.index(phrase)
    return f"{start} {start + len(phrase)}"


# a discontinuous entity (T1) overlapping T2's words, and an entity (T4) on words T3 already holds
SMALL_ANN = (f"T1\tDrug {small_at('aluminum')};{small_at('hydroxide')}\taluminum hydroxide\n"
             f"T2\tDrug {small_at('magnesium hydroxide')}\tmagnesium hydroxide\n"
             f"T3\tProblem {small_at('Chest pain')}\tChest pain\n"
             f"T4\tSymptom {small_at('pain')}\tpain\n"
             "R1\tSame Arg1:T3 Arg2:T4\n")


@pytest.mark.parametrize("rule, first_line, changes", [
    ("first_fragment", ["O", "B-Drug", "O", "B-Drug", "I-Drug", "O"], {"first_fragment": 1, "dropped_overlapping": 1}),
    ("drop", ["O", "O", "O", "B-Drug", "I-Drug", "O"], {"dropped_discontinuous": 1, "dropped_overlapping": 1}),
])
def test_each_rule_reads_what_flat_tags_cannot_hold_and_counts_it(tmp_path, caplog, rule, first_line, changes):
    folder = make_brat(tmp_path, text=SMALL_TEXT, ann=SMALL_ANN)
    with caplog.at_level(logging.WARNING):
        split = load_split(str(folder), "brat", overlapping_entities=rule)
    assert split.tags == [first_line, ["B-Problem", "I-Problem", "O", "O", "O", "O"]]
    assert split.entity_changes == changes
    logged = [r.getMessage() for r in caplog.records if "--overlapping_entities" in r.getMessage()]
    assert len(logged) == 1 and "1 entities dropped for overlapping an earlier one" in logged[0]
    assert not any(word in caplog.text for word in ("aluminum", "hydroxide", "pain"))


def test_error_is_the_default_one_line_naming_file_line_and_the_option(tmp_path):
    folder = make_brat(tmp_path, text=SMALL_TEXT, ann=SMALL_ANN)
    with pytest.raises(DataError) as err:
        load_split(str(folder), "brat")
    assert str(err.value) == (f"{folder / 'd1.ann'}:2: entity overlaps the discontinuous entity on line 1 (read "
                              "as its covering range 5-37) (flat tags hold one "
                              "entity per word; --overlapping_entities first_fragment or drop reads such entities)")
    with pytest.raises(DataError, match="unknown --overlapping_entities 'keep'"):
        load_split(str(folder), "brat", overlapping_entities="keep")


def test_error_reads_a_discontinuous_entity_alone_as_its_covering_range_counted(tmp_path):
    folder = make_brat(tmp_path, text=SMALL_TEXT, ann=SMALL_ANN.split("\n")[0] + "\n")
    split = load_split(str(folder), "brat")
    assert split.tags[0] == ["O", "B-Drug", "I-Drug", "I-Drug", "I-Drug", "O"]
    assert split.entity_changes == {"covering_range": 1}


def test_i2b2_overlapping_concepts_follow_the_same_option(tmp_path):
    (tmp_path / "n.txt").write_text("Chest pain and fever .\n")
    (tmp_path / "n.con").write_text('c="chest pain" 1:0 1:1||t="problem"\nc="pain" 1:1 1:1||t="symptom"\n')
    with pytest.raises(DataError, match=r"n\.con:2: concept overlaps the concept on line 1 \(.*--overlapping_entities"):
        load_split(str(tmp_path), "i2b2")
    for rule in ("first_fragment", "drop"):  # concepts are contiguous: both leave out the later one
        split = load_split(str(tmp_path), "i2b2", overlapping_entities=rule)
        assert split.tags == [["B-problem", "I-problem", "O", "O", "O"]]
        assert split.entity_changes == {"dropped_overlapping": 1}


def test_the_real_ddi_training_folder_loads_with_either_rule():
    """DDI 2013 (BRAT): 38 discontinuous training entities, and one whose first fragment still shares words with
    another (MedLine d66: 'synthetic steroidal [estrogen / ... progestogen]')."""
    ddi = real_asset("data", "relations", "ddi", "train")
    with pytest.raises(DataError, match=r"DDI-DrugBank\.d113\.ann:20: entity overlaps the discontinuous entity on line 19"):
        load_split(str(ddi), "brat")
    cut = load_split(str(ddi), "brat", overlapping_entities="first_fragment")
    dropped = load_split(str(ddi), "brat", overlapping_entities="drop")
    assert cut.entity_changes == {"first_fragment": 38, "dropped_overlapping": 1}
    assert dropped.entity_changes == {"dropped_discontinuous": 38}
    entities = [sum(tag.startswith("B-") for tags in split.tags for tag in tags) for split in (cut, dropped)]
    assert entities == [14765 - 1, 14765 - 38] and len(cut) == len(dropped) == 6905


# ------------------------------------------------------------------------------------------ the command lines
@pytest.fixture(scope="module")
def drug_tagger(tiny_ner_model, tmp_path_factory):
    """A folder trained on the all-kinds note with --overlapping_entities first_fragment, then rigged to tag every
    word B-Drug (classifier weights 0, the B-Drug bias high): predictions known in advance."""
    import safetensors.torch

    root = tmp_path_factory.mktemp("write_back")
    notes = make_brat(root / "notes")
    model = root / "model"
    run_recipe("ner", ["--model_name_or_path", tiny_ner_model, "--train_file", notes, "--output_dir", model,
                       "--do_train", "--overlapping_entities", "first_fragment", "--num_train_epochs", "1",
                       "--max_seq_length", "32", "--optim", "adamw_torch", "--bf16", "false",
                       "--bootstrap_resamples", "0"])
    config = json.loads((model / "config.json").read_text())
    weights = safetensors.torch.load_file(model / "model.safetensors")
    weights["classifier.weight"].zero_()
    weights["classifier.bias"].zero_()
    weights["classifier.bias"][config["label2id"]["B-Drug"]] = 10.0
    safetensors.torch.save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    return model, notes, config


def test_the_choice_is_recorded_for_predict(drug_tagger):
    _, _, config = drug_tagger
    assert config["recipe"]["inputs"]["overlapping_entities"] == "first_fragment"


def test_predict_cli_writes_the_ann_back_whole_as_do_predict_does(drug_tagger, tmp_path):
    model, notes, _ = drug_tagger
    out = tmp_path / "predict"
    # no --overlapping_entities: the trained choice reads the overlapping T4/T5 (the default would stop)
    proc = run_cli("ner", ["--model_dir", model, "--input", notes, "--output_dir", out], entry="predict")
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = (out / "d1.ann").read_text()
    assert written == EVERY_WORD_A_DRUG
    assert_ids_valid(written)
    assert "6 of 10 non-entity .ann lines dropped" in proc.stderr
    assert "1 discontinuous entities cut to their first fragment (--overlapping_entities first_fragment)" in proc.stderr
    assert not any(text in proc.stderr + proc.stdout for text in NOTE_TEXT)
    run_recipe("ner", ["--model_name_or_path", model, "--test_file", notes, "--output_dir", tmp_path / "do_predict",
                       "--do_predict", "--overlapping_entities", "first_fragment", "--bf16", "false",
                       "--bootstrap_resamples", "0"])
    assert (tmp_path / "do_predict" / "test_predictions" / "d1.ann").read_text() == written


def test_predict_with_error_for_overlapping_gold_is_one_line(drug_tagger, tmp_path, capsys):
    model, notes, _ = drug_tagger
    out = tmp_path / "predict"
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_recipe("ner", ["--model_dir", model, "--input", notes, "--output_dir", out, "--overlapping_entities",
                           "error"], entry="predict")
    status, err = info.value.code, capsys.readouterr().err
    assert_one_line(status, err, re.escape(f"{notes / 'd1.ann'}:5: entity overlaps the discontinuous entity on line 4 "
                                           "(read as its covering range 44-76) (flat tags "
                                           "hold one entity per word; --overlapping_entities first_fragment or drop "
                                           "reads such entities)"), out)


def test_train_cli_stops_on_overlapping_entities_by_default(tiny_ner_model, tmp_path):
    notes, out = make_brat(tmp_path / "notes", text=SMALL_TEXT, ann=SMALL_ANN), tmp_path / "out"
    proc = run_cli("ner", ["--model_name_or_path", tiny_ner_model, "--train_file", notes, "--output_dir", out,
                           "--do_train", "--bf16", "false"], timeout=300)
    assert_one_line(proc.returncode, proc.stderr, re.escape(f"{notes / 'd1.ann'}:2: entity overlaps the "
                                                            "discontinuous entity on line 1 (read as its covering "
                                                            "range 5-37) (flat tags hold one entity per word; "
                                                            "--overlapping_entities first_fragment or drop reads "
                                                            "such entities)"), out)


def test_an_unknown_choice_is_refused_naming_the_choices(tiny_ner_model, tmp_path, capsys):
    notes, out = make_brat(tmp_path / "notes", text=SMALL_TEXT, ann=SMALL_ANN), tmp_path / "out"
    status, err = run_in_process("ner", ["--model_name_or_path", tiny_ner_model, "--train_file", notes,
                                         "--output_dir", out, "--do_train", "--overlapping_entities", "keep"], capsys)
    assert status == 2 and "Traceback" not in err
    assert "--overlapping_entities" in err and "first_fragment" in err and not out.exists()
