#!/usr/bin/env python
"""k-fold cross-validation of any recipe: train K times, each time scoring a different fold of the training data.

    python recipes/cross_validate.py --recipe text_classification --folds 5 --group_column patient_id -- \
        --config recipes/text_classification/configs/demo.yaml --output_dir runs/cv

Everything after ``--`` goes to the recipe unchanged, plus ``--num_folds K --fold i --do_train --do_predict`` and
``--output_dir <output_dir>/fold_<i>``. The recipe cuts fold i out of its training file (stratified by label,
whole groups with ``--group_column``; ``shared/data/splits.py``) and scores it as its test split, with the usual test_*
metrics and bootstrap CIs; with ``--do_eval`` and no validation file it also carves a validation split from the
remaining folds (``--validation_split_percentage``).

Each fold runs in its own Python process: a fresh process per fold starts from the same state (seeds, logging,
accelerate's global state, no memory held by the previous fold's model and data), and a crash stops the run at
that fold with the recipe's own message. Starting Python costs seconds; a fold's training costs far more.

Every row of the training data is scored once, by the fold that held it out: the out-of-fold predictions are
pooled (``shared/trust/audit.py``) into one file and scored as one test set, with bootstrap 95% CIs, beside the per-fold
table. ``--audit_labels`` then ranks the rows (NER: words) whose given label is likely wrong, by cleanlab's
confident learning on the out-of-fold probabilities: the rows to re-read first.

Outputs in ``<output_dir>``: ``fold_<i>/`` (each fold's results, predictions, plots and model card; the model
weights are deleted unless ``--keep_fold_models``), ``oof_predictions.csv`` (text, images: row, fold, given label,
prediction, probabilities; assertions and relations also the note and its concept or pair) or
``oof_predictions.jsonl`` (NER: per sentence its file, line, given and predicted tags and per-word tag
probabilities), ``cv_results.json`` (every fold's results; per test metric the fold values, mean
and sample standard deviation; the pooled metrics), ``cv_results.md`` (the same as one table, also printed) and,
with ``--audit_labels``, ``label_issues.csv`` (most suspicious first: row or file/line/word, fold, given label,
suggested label, label-quality score). None of these files holds text.

With ``--keep_fold_models`` the folder also becomes an ensemble of its fold models (``shared/deploy/ensemble.py``):
``config.json`` and the model card ``README.md``; ``predict.py --model_dir <output_dir>`` (and ``serve.py``, and
the chain) average the folds' probabilities (NER: per position of the shared windows; CRF members decode their mean
scores), with multi-label thresholds tuned on the pooled out-of-fold predictions.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

try:
    import shared.core.args  # noqa: F401  (this project's package, and through it torch and transformers)
except ImportError as error:
    print(f"error: this project is not installed ({error}): install it as its README.md says, torch first, then "
          "`pip install -e .`", file=sys.stderr)
    raise SystemExit(2) from None

from shared.core.args import main_guard
from shared.core.errors import DataError
from shared.core.files import atomic_write_json, atomic_write_text
from shared.core.runner import recipe_file
from shared.deploy.ensemble import write_ensemble
from shared.trust import audit
from shared.trust.crossval import RECIPES, fold_args, markdown_table, output_dir_of, read_fold_results, recipe_option
from shared.trust.crossval import remove_weights, split_at_double_dash, summarize


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit status 2 (main_guard), instead of usage + message
        raise DataError(message)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = ArgumentParser(
        description="k-fold cross-validation of a recipe. Usage: cross_validate.py --recipe R --folds K -- <recipe args>"
    )
    parser.add_argument("--recipe", required=True,
                        help=f"Which recipe to cross-validate: {', '.join(RECIPES)}, or the folder of a recipe "
                             "(a copied one, say).")
    parser.add_argument("--folds", type=int, default=5, help="Number of folds K (at least 2; default 5).")
    parser.add_argument("--group_column", default=None,
                        help="Keep every group (patient, note) in one fold; passed to the recipe.")
    parser.add_argument("--keep_fold_models", action="store_true",
                        help="Keep each fold's model weights (deleted by default; metrics and predictions stay). The "
                             "output folder then also predicts as an ensemble of the fold models: predict.py / "
                             "serve.py --model_dir <output_dir>.")
    parser.add_argument("--audit_labels", action="store_true",
                        help="Rank the rows (NER: words) whose given label is likely wrong, from the pooled "
                             "out-of-fold probabilities (cleanlab), into label_issues.csv.")
    own, recipe_args = split_at_double_dash(argv)
    args = parser.parse_args(own)
    if args.folds < 2:
        raise DataError(f"--folds must be at least 2, got {args.folds}")
    if not recipe_args:
        raise DataError("give the recipe's arguments after `--` (e.g. -- --config my_run.yaml --output_dir runs/cv)")
    return args, recipe_args


@main_guard
def main(argv: list[str] | None = None) -> dict:
    args, recipe_args = parse(list(sys.argv[1:] if argv is None else argv))
    output_dir = output_dir_of(recipe_args)
    try:
        script = recipe_file(args.recipe)
    except FileNotFoundError:
        raise DataError(f"--recipe {args.recipe}: no such recipe (a name in {', '.join(RECIPES)} or a recipe "
                        "folder with a train.py)") from None

    fold_results = []
    for fold in range(args.folds):
        command = [sys.executable, str(script), *fold_args(recipe_args, output_dir, args.folds, fold, args.group_column)]
        print(f"== fold {fold} of {args.folds}", file=sys.stderr, flush=True)
        done = subprocess.run(command)
        if done.returncode:
            raise SystemExit(done.returncode)  # the recipe has printed its own error
        fold_dir = os.path.join(output_dir, f"fold_{fold}")
        fold_results.append(read_fold_results(fold_dir))
        if not args.keep_fold_models:
            remove_weights(fold_dir)

    summary = summarize(fold_results)
    summary.update(recipe=args.recipe, group_column=args.group_column)
    fold_dirs = [os.path.join(output_dir, f"fold_{fold}") for fold in range(args.folds)]
    summary["pooled"], issues, pooled = pool_out_of_fold(output_dir, fold_dirs, recipe_args, args.audit_labels)
    if args.keep_fold_models:
        summary["ensemble"] = write_ensemble(output_dir, fold_dirs, pooled,
                                             recipe_option(recipe_args, "decision_threshold"), summary["pooled"],
                                             args.recipe)
    table = markdown_table(summary)
    atomic_write_json(os.path.join(output_dir, "cv_results.json"), summary)
    audit_line = "" if issues is None else (
        f"\nLabel audit: {len(issues)} labels (rows; NER: words) flagged by cleanlab as likely "
        "mislabelled, most suspicious first, in `label_issues.csv`.\n")
    atomic_write_text(
        os.path.join(output_dir, "cv_results.md"),
        f"# {args.folds}-fold cross-validation: {args.recipe}\n\n{table}\n"
        "Test metrics of each held-out fold; mean ± sample standard deviation over the folds; pooled: all out-of-fold "
        "predictions scored as one test set (`oof_predictions.*`), bootstrap 95% CI over rows (NER: documents), "
        "threshold metrics at the default decision rule. Each fold's own bootstrap 95% intervals are in "
        f"`fold_<i>/all_results.json`.\n{audit_line}",
    )
    print(table + audit_line)
    return summary


def pool_out_of_fold(output_dir: str, fold_dirs: list[str], recipe_args: list[str], audit_labels: bool
                     ) -> tuple[dict, list[dict] | None, dict | None]:
    """Pool the folds' out-of-fold predictions, score them with the recipe's bootstrap settings and (when asked)
    audit the labels. Returns the pooled metrics, the label issues (None without ``audit_labels``) and the pooled
    classifier predictions (None for NER)."""
    resamples = int(recipe_option(recipe_args, "bootstrap_resamples") or 1000)
    seed = int(recipe_option(recipe_args, "seed") or 42)
    issues = classifier_pooled = None
    if os.path.isfile(os.path.join(fold_dirs[0], audit.TAG_PROBABILITIES)):  # NER
        pooled = audit.read_fold_tag_probabilities(fold_dirs)
        audit.write_oof_tags(output_dir, pooled)
        metrics = audit.pooled_entity_metrics(pooled, resamples, seed)
        labels = sum(len(e["gold"]) for e in pooled["examples"])  # one per word
        if audit_labels:
            issues = audit.token_label_issues(pooled)
            audit.write_label_issues(output_dir, issues, token_level=True)
    else:
        pooled = classifier_pooled = audit.read_fold_predictions(fold_dirs, recipe_option(recipe_args,
                                                                                          "label_separator"))
        audit.write_oof_predictions(output_dir, pooled)
        metrics = audit.pooled_classifier_metrics(pooled, resamples, seed)
        labels = len(pooled["row"])
        if audit_labels:
            issues = audit.classifier_label_issues(pooled)
            audit.write_label_issues(output_dir, issues, token_level=False, where=list(pooled["where"]))
    if issues and len(issues) > 0.2 * labels:  # confident learning needs a model that mostly gets it right
        print(f"warning: cleanlab flags {len(issues)} of {labels} labels ({100 * len(issues) / labels:.0f}%): more "
              "than a fifth usually means the out-of-fold models are too weak to judge the labels (see the pooled "
              "metrics), not that the labels are this noisy", file=sys.stderr)
    return metrics, issues, classifier_pooled


if __name__ == "__main__":
    main()
