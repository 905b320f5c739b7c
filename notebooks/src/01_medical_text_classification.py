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
# # Medical text classification, step by step
#
# This tutorial walks through `recipes/text_classification/train.py` on the bundled **synthetic** referral notes
# (4 specialties, imbalanced): the data and its label distribution, tokenization and truncation, class weights,
# training, evaluation (confusion matrix, ROC curves, bootstrap confidence intervals), the LoRA variant, and
# prediction on new text. It calls the same `shared/` functions and the same recipe the command line uses, so it
# cannot drift from the script.
#
# It runs on a CPU in a few minutes with a **tiny BERT built from config** (random weights, so the scores are only
# a smoke signal). To use a real pretrained model, set `MODEL` below to a local folder such as
# `../shared/models/all-MiniLM-L6-v2` (or a Hub id if you have network).

# %%
MODEL = None  # e.g. "../shared/models/all-MiniLM-L6-v2"; None builds a tiny BERT from config

import os, json, tempfile
from pathlib import Path

ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np
import transformers
transformers.utils.logging.disable_progress_bar()
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from IPython.display import Image, display

DATA = ROOT / "recipes" / "text_classification" / "sample_data"
WORK = Path(tempfile.mkdtemp(prefix="tutorial01-"))
print("sample data files:", sorted(p.name for p in DATA.glob("*.csv")))

# %% [markdown]
# ## 1. The data
#
# `shared.data.tables.read_table` reads CSV, JSON/JSONL, parquet or a saved `datasets` folder, checks the file
# is UTF-8 and has rows, and returns a `datasets.Dataset`. We look at counts only: in real use the text is patient
# data, so the recipe never prints it.

# %%
from collections import Counter
from shared.data.tables import read_table

splits = {name: read_table(str(DATA / f"{name}.csv")) for name in ("train", "validation", "test")}
for name, ds in splits.items():
    print(f"{name:<10} {len(ds):>4} notes, columns {ds.column_names}")
train_counts = Counter(splits["train"]["label"])
for label, n in train_counts.most_common():
    print(f"  {label:<17} {n:>4}  ({n / len(splits['train']):.0%})")

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(6, 2.8))
labels = [l for l, _ in train_counts.most_common()]
ax.barh(labels, [train_counts[l] for l in labels], color="#4c72b0")
ax.invert_yaxis(); ax.set_xlabel("training notes"); ax.set_title("Label distribution: imbalanced, like real referrals")
plt.show()

# %% [markdown]
# ## 2. A model to fine-tune
#
# With `MODEL = None` we build a 2-layer BERT (hidden 32) and train a WordPiece tokenizer on the training notes,
# both in seconds, with `shared.training.tiny_models.build_tiny_bert`. The folder looks exactly like a pretrained checkpoint
# (safetensors weights + tokenizer), so the recipe loads it the same way.

# %%
from transformers import AutoTokenizer
from shared.training.tiny_models import build_tiny_bert

# Recipe default: pretrained token embeddings stay frozen (--freeze_embeddings). A model built from config has
# random embeddings, which must be trained, so the tutorial turns that off for it.
PRETRAINED = MODEL is not None
if MODEL is None:
    MODEL = str(build_tiny_bert(WORK / "tiny-bert", splits["train"]["text"], vocab_size=400))
    print("built a tiny BERT from config: 2 layers, hidden 32, vocabulary",
          len(AutoTokenizer.from_pretrained(MODEL)))
tokenizer = AutoTokenizer.from_pretrained(MODEL)

# %% [markdown]
# ## 3. Tokenization and truncation
#
# Models read a fixed maximum number of tokens. By default (`--long_text chunk`) the recipe reads a longer note whole,
# in overlapping windows, and predicts it once from all of them; with `--long_text truncate` it cuts longer inputs
# **and reports how many were cut** (`*_truncated_examples` in the results), because silently dropping the end of a
# note can drop the finding that matters. The recipe README's "Long notes" table says when each pays off. Here is how the count depends on `--max_seq_length`:

# %%
from shared.core.runner import load_recipe
from shared.data.long_text import long_text_settings
from shared.text.data import NoteEncoder

recipe = load_recipe("text_classification")  # recipes/text_classification/train.py, the script the command line runs

lengths = [len(ids) for ids in tokenizer(list(splits["train"]["text"]))["input_ids"]]
print(f"tokens per note: median {int(np.median(lengths))}, max {max(lengths)}")
for max_len in (16, 32, 64):
    truncate = NoteEncoder(tokenizer, max_len, long_text_settings("truncate", None, None, None, max_len))
    cut = truncate.check(splits["train"]["text"], None, None, "text")  # the recipe's own count
    print(f"max_seq_length {max_len:>3}: {cut:>3} of {len(lengths)} notes truncated")

# %% [markdown]
# ## 4. Class weights
#
# With imbalanced labels, a plain loss lets the majority class dominate. `shared.training.imbalance.class_weights` gives
# each class a weight from its training frequency (scaled so the average weight per example is 1): `balanced` is
# scikit-learn's `n / (k * count)`, `inverse_sqrt` a milder `1 / sqrt(count)`. The recipe feeds them to the stock
# `Trainer` through `compute_loss_func` (`--class_weighting`, optionally `--focal_gamma`).

# %%
from shared.training.imbalance import class_weights
from shared.data.labels import sort_label_names

names = sort_label_names(train_counts)
ids = np.array([names.index(l) for l in splits["train"]["label"]])
for strategy in ("balanced", "inverse_sqrt"):
    w = class_weights(ids, len(names), strategy)
    print(f"{strategy:<13}", "  ".join(f"{n}={x:.2f}" for n, x in zip(names, w)))

# %% [markdown]
# ## 5. Train, evaluate, predict
#
# We run the recipe itself with a list of command-line arguments, exactly as
# `python recipes/text_classification/train.py ...` would. It trains, evaluates on the validation split, scores
# the test split with bootstrap 95% confidence intervals, and writes predictions, plots and a model card.

# %%
# NBVAL_IGNORE_OUTPUT
out = WORK / "full"
results = recipe.main([
    "--model_name_or_path", MODEL, "--output_dir", str(out),
    "--train_file", str(DATA / "train.csv"), "--validation_file", str(DATA / "validation.csv"),
    "--test_file", str(DATA / "test.csv"), "--do_train", "--do_eval", "--do_predict",
    "--max_seq_length", "64", "--class_weighting", "inverse_sqrt", "--freeze_embeddings", str(PRETRAINED).lower(),
    "--num_train_epochs", "6", "--learning_rate", "2e-3", "--seed", "1", "--bootstrap_resamples", "300",
])
for key in ("test_accuracy", "test_macro_f1", "test_auroc"):
    name = key.removeprefix("test_")
    print(f"{name:<9} {results[key]:.3f}  (95% CI {results[key + '_ci_low']:.3f}-{results[key + '_ci_high']:.3f})")

# %%
print("files written:", sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))

# %% [markdown]
# ### Confusion matrix and ROC curves
#
# Both are saved as PNG next to the model, for validation and test (`eval_confusion_matrix.png`,
# `test_confusion_matrix.png`, `eval_roc.png`, `test_roc.png`); the per-class report is in `test_report.json`.

# %%
# NBVAL_IGNORE_OUTPUT
display(Image(filename=str(out / "test_confusion_matrix.png"), width=420))
display(Image(filename=str(out / "test_roc.png"), width=420))

# %%
# NBVAL_IGNORE_OUTPUT
report = json.loads((out / "test_report.json").read_text())
for name, row in report["per_class"].items():
    print(f"{name:<17} precision {row['precision']:.2f}  recall {row['recall']:.2f}  f1 {row['f1-score']:.2f}  n={row['support']}")

# %% [markdown]
# ## 6. The LoRA variant
#
# `--use_lora` trains low-rank adapters on the attention projections plus the classification head, and saves only
# those (a few hundred KB for a BERT-base). `--merge_lora` writes a plain model instead. The trainable-parameter
# count is logged and saved:

# %%
# NBVAL_IGNORE_OUTPUT
lora_out = WORK / "lora"
lora_results = recipe.main([
    "--model_name_or_path", MODEL, "--output_dir", str(lora_out),
    "--train_file", str(DATA / "train.csv"), "--test_file", str(DATA / "test.csv"), "--do_train", "--do_predict",
    "--max_seq_length", "64", "--use_lora", "--lora_r", "8", "--num_train_epochs", "6", "--learning_rate", "5e-3",
    "--seed", "1", "--bootstrap_resamples", "0",
])

# %%
full_params = json.loads((out / "train_results.json").read_text())["train_trainable_parameters"]
lora_params = json.loads((lora_out / "train_results.json").read_text())["train_trainable_parameters"]
print(f"trainable parameters: full fine-tune {full_params:,}, LoRA {lora_params:,} ({lora_params / full_params:.1%})")
print("LoRA output:", sorted(p.name for p in lora_out.iterdir() if p.suffix in (".json", ".safetensors")))

# %% [markdown]
# ## 7. Predict on new text
#
# The output folder is a normal transformers model folder: `pipeline("text-classification", model=out)` loads it.
# (An adapter folder loads with `shared.training.models.load_trained`; merge it with `--merge_lora` for a plain folder.)

# %%
# NBVAL_IGNORE_OUTPUT
from transformers import pipeline

classify = pipeline("text-classification", model=str(out), device="cpu")
new_notes = [
    "72-year-old woman referred with palpitations and ankle oedema. Please assess.",
    "Productive cough for three weeks and wheeze. Routine review requested.",
]
for note, pred in zip(new_notes, classify(new_notes)):
    print(f"{pred['label']:<17} {pred['score']:.2f}")

# %% [markdown]
# ## Where next
#
# - Real data: `python recipes/text_classification/train.py --config recipes/text_classification/configs/medical_abstracts.yaml`
# - Multi-label (a list of labels per row, thresholds tuned on validation): `configs/hallmarks_of_cancer.yaml`
# - More processes or a GPU: `accelerate launch recipes/text_classification/train.py ...`
