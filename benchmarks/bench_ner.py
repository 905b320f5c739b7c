"""Benchmark: the NER recipe against a plain-Trainer baseline, in one run, on the same data, model and machine.

The baseline is configured like transformers' ``examples/pytorch/token-classification/run_ner.py`` with its
defaults: words tokenized with ``is_split_into_words=True`` and truncated at the model's maximum length, labels on
the first subword only (``label_all_tokens=False``; other subwords -100), ``DataCollatorForTokenClassification``
padding each batch to its longest example, and ``TrainingArguments`` defaults: batch 8, AdamW (Trainer's default
optimizer) at lr 5e-5, linear decay, no warmup, no weight decay, fp32, random (not length-grouped) batches. Only
checkpointing is turned off (as in the recipe), so that both time training alone. The recipe runs with its own
defaults (batch 32 grouped by length, bf16 autocast where the CPU/GPU supports it, dynamic padding to a multiple of
8, fused AdamW, lr 1e-4, every subword labelled).

Both train on the same first ``--max_train_samples`` sentences for ``--epochs`` epochs and are scored on the same
test sentences with the same strict IOB2 entity F1 (seqeval). Training samples/s = sentences x epochs / training
time (``train_runtime``). Writes ``benchmarks/results/ner_<timestamp>.json`` and ``.md`` (gitignored) and prints
the markdown table. Needs ../shared/data/ner and ../shared/models (datasets not found are skipped).

    # quick check (a minute or two)
    python benchmarks/bench_ner.py --max_train_samples 200 --max_test_samples 100 --epochs 1
    # the full measurement (NCBI-disease, 3 epochs; add anatem for the second corpus)
    python benchmarks/bench_ner.py --datasets ncbi_disease anatem
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


from shared.core.runner import run_recipe  # noqa: E402
from shared.formats.conll import read_conll  # noqa: E402
from shared.formats.tags import from_scheme  # noqa: E402
from shared.ner.metrics import entity_metrics  # noqa: E402

SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
DATA = os.path.join(SHARED, "data", "ner")
MODEL = os.path.join(SHARED, "models", "all-MiniLM-L6-v2")


def read(path: str, limit: int | None):
    sents = read_conll(path).sentences
    sents = sents[:limit] if limit else sents
    return [s.tokens for s in sents], [s.tags for s in sents]


def run_baseline(model_path: str, train_path: str, test_path: str, args, out: str, return_tags: bool = False) -> dict:
    """transformers' run_ner.py defaults with a plain Trainer (``return_tags``: also the gold and predicted tags)."""
    import datasets
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, Trainer
    from transformers import TrainingArguments, set_seed

    set_seed(args.seed)
    words, tags = read(train_path, args.max_train_samples)
    test_words, test_tags = read(test_path, args.max_test_samples)
    labels = sorted({t for seq in tags for t in seq})  # run_ner.py: sorted label list from the training data
    label2id = {lab: i for i, lab in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def encode(batch_words, batch_tags=None):
        enc = tokenizer(batch_words, truncation=True, is_split_into_words=True)
        if batch_tags is not None:
            all_labels = []
            for i, seq in enumerate(batch_tags):
                prev, row = None, []
                for wid in enc.word_ids(i):
                    row.append(-100 if wid is None or wid == prev else label2id.get(seq[wid], label2id["O"]))
                    prev = wid
                all_labels.append(row)
            enc["labels"] = all_labels
        return enc

    train_ds = datasets.Dataset.from_dict(dict(encode(words, tags)))
    test_enc = encode(test_words)
    test_ds = datasets.Dataset.from_dict({k: test_enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")
                                          if k in test_enc})
    model = AutoModelForTokenClassification.from_pretrained(
        model_path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    training_args = TrainingArguments(
        output_dir=out, num_train_epochs=args.epochs, seed=args.seed, use_cpu=not torch.cuda.is_available(),
        save_strategy="no", report_to="none", disable_tqdm=True, logging_strategy="epoch",
        # everything else at its default: batch 8, lr 5e-5, AdamW, linear schedule, fp32, random batches
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_ds, processing_class=tokenizer,
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    train_metrics = trainer.train().metrics
    logits = trainer.predict(test_ds).predictions  # sequential sampler: rows in dataset order
    pred_tags = []
    for i, seq in enumerate(test_words):
        out_tags, prev = ["O"] * len(seq), None
        for pos, wid in enumerate(test_enc.word_ids(i)):
            if wid is not None and wid != prev:
                out_tags[wid] = labels[int(logits[i][pos].argmax())]
            prev = wid
        pred_tags.append(from_scheme(out_tags, "IOB2"))  # stray I-X read as B-X, as the recipe does
    metrics = entity_metrics(test_tags, pred_tags)
    found = {"train_runtime": train_metrics["train_runtime"], "train_sentences": len(words),
             "samples_per_s": len(words) * args.epochs / train_metrics["train_runtime"],
             "test_f1": metrics["f1"], "test_lenient_f1": metrics["lenient_f1"]}
    return {**found, "gold_tags": test_tags, "predicted_tags": pred_tags} if return_tags else found


def run_ours(model_path: str, train_path: str, test_path: str, args, out: str) -> dict:
    """The recipe with its own defaults, in-process."""
    extra = ["--max_predict_samples", str(args.max_test_samples)] if args.max_test_samples else []
    if args.max_train_samples:
        extra += ["--max_train_samples", str(args.max_train_samples)]
    results = run_recipe("ner", [
        "--model_name_or_path", model_path, "--output_dir", out, "--train_file", train_path, "--test_file", test_path,
        "--do_train", "--do_predict", "--num_train_epochs", str(args.epochs), "--seed", str(args.seed),
        "--bootstrap_resamples", "0", *extra, *args.recipe_args,
    ])
    return {"train_runtime": results["train_runtime"], "train_sentences": results["train_samples"],
            "samples_per_s": results["train_samples"] * args.epochs / results["train_runtime"],
            "test_f1": results["test_f1"], "test_lenient_f1": results["test_lenient_f1"],
            "pipeline_agreement": results.get("test_pipeline_agreement")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ncbi_disease"], choices=["ncbi_disease", "anatem"])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--max_train_samples", type=int, default=None, help="first N training sentences (all)")
    parser.add_argument("--max_test_samples", type=int, default=None, help="first N test sentences (all)")
    parser.add_argument("--epochs", type=float, default=3.0, help="epochs for both systems (run_ner.py default 3)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--recipe_args", nargs=argparse.REMAINDER, default=[],
                        help="extra recipe flags, e.g. --recipe_args --use_crf (must come last)")
    parser.add_argument("--results_dir", default=os.path.join(ROOT, "benchmarks", "results"))
    parser.add_argument("--json", default=None, help="Also write the rows to this JSON file (used by run_all.py).")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.model):
        sys.exit(f"error: {args.model}: model folder not found")

    rows = []
    for name in args.datasets:
        train_path, test_path = (os.path.join(DATA, name, f) for f in ("train.tsv", "test.tsv"))
        if not (os.path.isfile(train_path) and os.path.isfile(test_path)):
            print(f"skipping {name}: {os.path.dirname(train_path)} not found", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory(prefix="bench-ner-") as tmp:
            base = run_baseline(args.model, train_path, test_path, args, os.path.join(tmp, "baseline"))
            ours = run_ours(args.model, train_path, test_path, args, os.path.join(tmp, "recipe"))
        rows.append({"dataset": name, "baseline": base, "recipe": ours,
                     "speedup": ours["samples_per_s"] / base["samples_per_s"],
                     "f1_difference": ours["test_f1"] - base["test_f1"]})

    setup = {"model": os.path.basename(os.path.normpath(args.model)), "epochs": args.epochs,
             "max_train_samples": args.max_train_samples, "max_test_samples": args.max_test_samples,
             "seed": args.seed, "recipe_args": args.recipe_args, "torch": torch.__version__,
             "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
             "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    lines = [
        f"NER benchmark: {setup['model']}, {args.epochs:g} epochs, train sentences "
        f"{args.max_train_samples or 'all'}, test sentences {args.max_test_samples or 'all'}, "
        f"{setup['threads']} threads", "",
        "| data | run | train samples/s | speed ratio | strict test F1 | lenient test F1 |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        b, r = row["baseline"], row["recipe"]
        lines.append(f"| {row['dataset']} | baseline (run_ner.py defaults) | {b['samples_per_s']:.1f} | 1.00 | "
                     f"{b['test_f1']:.4f} | {b['test_lenient_f1']:.4f} |")
        lines.append(f"| {row['dataset']} | recipe (defaults) | {r['samples_per_s']:.1f} | {row['speedup']:.2f} | "
                     f"{r['test_f1']:.4f} | {r['test_lenient_f1']:.4f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    os.makedirs(args.results_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(args.results_dir, f"ner_{stamp}.json"), "w", encoding="utf-8") as f:
        json.dump({"setup": setup, "rows": rows}, f, indent=2)
    with open(os.path.join(args.results_dir, f"ner_{stamp}.md"), "w", encoding="utf-8") as f:
        f.write(table)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"setup": setup, "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
