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
# # From notes to concepts, assertions and relations
#
# The i2b2 2010 challenge has three tasks on the same notes: **concepts** (problems, tests, treatments: the NER
# recipe), the **assertion status** of each problem (present, absent, possible, conditional, hypothetical, associated
# with someone else: `recipes/assertion_status/`) and the **relations** between two concepts of a sentence (treatment
# administered for / improves / worsens / causes / not given because of a problem, test reveals / investigates a
# problem, problem indicates problem: `recipes/relation_extraction/`). This tutorial runs all three on the bundled
# **synthetic** notes, chained: the NER model finds the concepts of new notes, the assertion model decides each
# problem's status and the relation model links the concepts, and one note is shown with everything found.
#
# Each step is the recipe itself, called with a list of command-line arguments, exactly as
# `python recipes/<task>/train.py ...` would be. It runs on a CPU in about a minute with **tiny BERTs built from config** (random weights:
# they learn these easy invented notes, not language). To use a real model set `MODEL` to a local folder such as
# `../shared/models/all-MiniLM-L6-v2`. The notes are invented; with real notes, never print their text.

# %%
MODEL = None  # e.g. "../shared/models/all-MiniLM-L6-v2"; None builds a tiny BERT from config per task

import os, shutil, tempfile
from collections import Counter
from pathlib import Path

ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from IPython.display import HTML, display
import transformers
transformers.utils.logging.disable_progress_bar()

SAMPLES = {task: ROOT / "recipes" / task / "sample_data" for task in ("ner", "assertion_status", "relation_extraction")}
NOTES = SAMPLES["relation_extraction"] / "i2b2"  # the new notes of this tutorial: its test split
WORK = Path(tempfile.mkdtemp(prefix="tutorial05-"))
print(sorted(p.name for p in NOTES.iterdir()))

# %% [markdown]
# ## 1. The files: `.con`, `.ast`, `.rel`
#
# An i2b2 note is a `.txt` file, one sentence per line, tokens separated by spaces. Its `.con` file lists the
# concepts (`line:first_token line:last_token`, lines from 1, tokens from 0), the `.ast` file one assertion per
# problem, the `.rel` file one line per related pair. Every `.ast` and `.rel` line is checked against the note's
# concepts: a relation naming a concept that is not in `.con`, one across two sentences, or a type that does not
# join the two concepts' types stops the run with one line naming the file and line, never the note's words.

# %%
from shared.formats.i2b2 import read_i2b2
from shared.concepts.i2b2 import parse_rel
from shared.concepts.relations import rel_path

note = read_i2b2(NOTES / "train" / "train_note_01.txt")[0]
for k, words in enumerate(note.lines, start=1):
    print(f"{k}: {' '.join(words)}")
print("\n.con:"); print(Path(note.con_path).read_text().strip())
print("\n.rel:")
for r in parse_rel(rel_path(note), note):
    print(f"  {r.first.text} ({r.first.type}) --{r.type}--> {r.second.text} ({r.second.type})")

# %% [markdown]
# ## 2. Candidate pairs and entity markers
#
# A relation classifier decides about **pairs**. The candidates are the pairs i2b2 annotates: a treatment and a
# problem, a test and a problem, or two problems, in one sentence. Each becomes one example, its sentence with the
# two concepts marked by tokens added to the tokenizer; a pair without a relation is `none`, and most pairs are.
# An i2b2 pair can only take the types that join its two concept types (a test-problem pair is TeRP, TeCP or none):
# the recipe never predicts the others. The same notes are also bundled as BRAT (`.ann` with `T` and `R` lines),
# where every pair of a sentence is a candidate unless `--candidate_types` restricts them.

# %%
from shared.concepts.relations import read_relation_split

train = read_relation_split(NOTES / "train")
print(f"{len(train)} training pairs in {len(train.notes)} notes:", dict(Counter(train.labels).most_common()))
first = [i for i, (n, _, _) in enumerate(train.pairs) if train.notes[n].doc_id == note.doc_id]
for i in first:
    print(f"{train.labels[i]:>5}  {' '.join(train.words[i])}")
brat = read_relation_split(SAMPLES["relation_extraction"] / "brat" / "train")
print(f"\nthe same notes as BRAT: {len(brat)} pairs (every pair of a sentence, e.g. treatment-test too)")

# %% [markdown]
# ## 3. Train the three models
#
# The NER model learns concepts from the NER sample notes, the assertion model from the assertion sample notes, the
# relation model from the relation sample notes. Each recipe validates its data, trains, keeps its best epoch on
# validation, calibrates, scores the test split with bootstrap confidence intervals over notes and writes a model
# folder with a model card.

# %%
from shared.core.runner import run_recipe
from shared.training.tiny_models import build_tiny_bert

def model_for(task):
    if MODEL is not None:
        return MODEL
    corpus = [p.read_text() for p in sorted(SAMPLES[task].rglob("*.txt"))]
    return str(build_tiny_bert(WORK / f"tiny-{task}", corpus, vocab_size=300, max_position_embeddings=128))

def train(task, data, *extra):
    args = ["--model_name_or_path", model_for(task), "--output_dir", str(WORK / task),
            "--train_file", str(data / "train"), "--validation_file", str(data / "validation"),
            "--test_file", str(data / "test"), "--do_train", "--do_eval", "--do_predict", "--seed", "1",
            "--bootstrap_resamples", "200", *extra]
    if MODEL is None:  # a random tiny model needs many steps at a high learning rate
        args += ["--num_train_epochs", "10", "--learning_rate", "5e-3", "--freeze_layers", "0", "--bf16", "false"]
    return run_recipe(task, args)


# %%
# NBVAL_IGNORE_OUTPUT
scores = {"ner": train("ner", SAMPLES["ner"], "--per_device_train_batch_size", "16"),
          "assertion_status": train("assertion_status", SAMPLES["assertion_status"]),
          "relation_extraction": train("relation_extraction", NOTES)}

# %% [markdown]
# Relations are scored the i2b2 / DDI way: precision, recall and F1 **micro-averaged over the relation types**,
# so `none` earns nothing (predicting `none` everywhere scores 0, although it would be right for most pairs), and a
# pair given the wrong type is both a false positive and a false negative. That F1 is `test_f1`; the per-type scores
# are in `test_report.json`.

# %%
# NBVAL_IGNORE_OUTPUT
import json

for task, metric in (("ner", "f1"), ("assertion_status", "macro_f1"), ("relation_extraction", "f1")):
    r = scores[task]
    print(f"{task:<20} test {metric} {r[f'test_{metric}']:.3f} "
          f"(95% CI {r[f'test_{metric}_ci_low']:.3f}-{r[f'test_{metric}_ci_high']:.3f})")
report = json.loads((WORK / "relation_extraction" / "test_report.json").read_text())
per_type = report.get("per_class", report)
for name, row in per_type.items():
    if isinstance(row, dict) and "f1-score" in row and name not in ("none", "macro avg", "weighted avg"):
        print(f"  {name:<6} F1 {row['f1-score']:.2f}  n={int(row['support'])}")

# %% [markdown]
# ## 4. New notes, end to end: the chain
#
# Now what a user runs on notes nobody annotated: `recipes/pipeline.py` takes raw `.txt` notes and the three trained
# folders, finds the concepts with the NER model (in its windows: a long note is never cut), gives each problem to the
# assertion model and each candidate pair of a sentence to the relation model. The later models see the *predicted*
# concepts, not the gold ones, so nothing is scored here. It checks first that the NER model gives the concept types
# the other two need. `--output_format i2b2` writes each note as `.txt` + `.con` + `.ast` + `.rel`; `jsonl` (the
# default) one JSON object per note, `brat` `.ann` files. The same chain is a service:
# `python recipes/serve.py --ner_model ... --assertion_model ... --relation_model ...`.

# %%
# NBVAL_IGNORE_OUTPUT
new_notes = WORK / "new_notes"
new_notes.mkdir()
for txt in sorted((NOTES / "test").glob("*.txt")):
    shutil.copy(txt, new_notes)  # the text only: no .con, .ast or .rel

facts = WORK / "facts"
found = run_recipe("pipeline.py", ["--ner_model", str(WORK / "ner"), "--assertion_model", str(WORK / "assertion_status"),
                                   "--relation_model", str(WORK / "relation_extraction"), "--input", str(new_notes),
                                   "--output_dir", str(facts), "--output_format", "i2b2"])
print(found["notes"], "notes:", found["concepts"], "concepts", found["concept_types"])
print("assertions", found["assertions"])
print("relations", found["relations"])

# %% [markdown]
# Every file the chain wrote is a valid i2b2 file: reading the `.ast` and `.rel` files against the predicted `.con`
# files runs the same checks as training data (and each recipe's `predict.py --concepts_dir` on the chain's `.con`
# files gives the same `.ast` and `.rel`, which the tests check file for file).

# %%
from shared.concepts.i2b2 import parse_ast

notes = read_i2b2(facts)
assertions = {n.doc_id: parse_ast(str(facts / f"{n.doc_id}.ast"), n) for n in notes}
relations = {n.doc_id: parse_rel(str(facts / f"{n.doc_id}.rel"), n) for n in notes}
print(sorted({p.suffix for p in facts.iterdir()}))
print(len(notes), "notes; every .ast and .rel file reads back against its predicted concepts")

# %% [markdown]
# One note with everything the three models found: each concept highlighted with its type, each problem with
# its predicted assertion, and the relations of each sentence below it. Mistakes of the concept model carry over: a
# word wrongly tagged as a problem gets an assertion, and may get relations. A chain is only as good as its first
# step, so each step is scored on its own annotated notes (section 3) before it is trusted on new ones.

# %%
# NBVAL_IGNORE_OUTPUT
import html as html_lib

COLOURS = {"problem": "#f4b6b6", "test": "#b6d7f4", "treatment": "#c3e8b5"}
shown = notes[0]
status = {(a.concept.line, a.concept.start): a.value for a in assertions[shown.doc_id]}
rows = []
for k, words in enumerate(shown.lines, start=1):
    marks = {c.start: c for c in shown.concepts if c.line == k}
    parts, i = [], 0
    while i < len(words):
        c = marks.get(i)
        if c is None:
            parts.append(html_lib.escape(words[i])); i += 1
            continue
        tag = c.type + (f", {status[(k, c.start)]}" if (k, c.start) in status else "")
        parts.append(f'<mark style="background:{COLOURS[c.type]};padding:1px 3px">'
                     f'{html_lib.escape(" ".join(words[c.start:c.end + 1]))} <small><b>{tag}</b></small></mark>')
        i = c.end + 1
    links = [f"{html_lib.escape(r.first.text)} &rarr; <b>{r.type}</b> &rarr; {html_lib.escape(r.second.text)}"
             for r in relations[shown.doc_id] if r.first.line == k]
    rows.append(f"<p>{' '.join(parts)}" + (f"<br><small>{'; '.join(links)}</small>" if links else "") + "</p>")
display(HTML("".join(rows)))
print((facts / f"{shown.doc_id}.rel").read_text())

# %% [markdown]
# ## Where next
#
# - Real relation data: `python recipes/relation_extraction/train.py --config recipes/relation_extraction/configs/ddi.yaml
#   --model_name_or_path <folder>` (DDI 2013, BRAT; the recipe README has its table against a plain Trainer)
# - Fewer negatives in training: `--negative_ratio 3` keeps at most three `none` pairs per relation
# - The recipe READMEs: `recipes/assertion_status/README.md`, `recipes/relation_extraction/README.md`
