"""Benchmark: the NER -> relation chain end to end on DDI 2013, from raw text to scored drug-drug interactions.

1. The NER recipe learns the DDI training entities (drug, brand, group, drug_n) from the BRAT folder; the entities
   flat tags cannot hold (discontinuous mentions, words shared by two mentions) are read with
   ``--overlapping_entities first_fragment``. Its own test score (strict entity F1, seqeval) is against the test
   entities as that rule reads them.
2. The relation recipe learns the DDI training relations (mechanism, effect, advise, int) on the gold entities; its
   test score is the positive micro-F1 on the gold test entities (the number a relation paper reports).
3. ``recipes/pipeline.py`` runs both on the DDI test documents given as raw ``.txt`` only, and the chain's output is
   scored against **every** gold entity and relation (:func:`shared.concepts.brat.end_to_end_scores`): an entity
   counts when its span and type match exactly; a relation only when both entity spans, their types and the
   relation type match (either argument order, as DDI scores). Gold entities the tags cannot hold count as misses.
   95% CIs by bootstrap over documents.
4. Speed of the whole chain on this machine: notes/s for PyTorch and for the ONNX exports of both folders, one note
   per call (a service answering one request) and 32 notes per call, in one process one after the other.

    python benchmarks/bench_chain_ddi.py                       # the README's measurement (2-core CPU: ~30 min)
    python benchmarks/bench_chain_ddi.py --max_train_docs 100 --ner_epochs 1 --speed_notes 20   # a quick look

Writes ``benchmarks/results/chain_ddi_<timestamp>.{json,md}``. The data: DDI 2013 (Herrero-Zazo et al. 2013) as
BRAT, e.g. from https://github.com/isegura/DDICorpus converted with the brat conversion of the corpus' XML, in
``../shared/data/relations/ddi/{train,test}``; the encoder: sentence-transformers/all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from shared.concepts.brat import end_to_end_scores  # noqa: E402
from shared.core.runner import run_recipe  # noqa: E402
from shared.formats.brat import read_brat  # noqa: E402

SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
DDI = os.path.join(SHARED, "data", "relations", "ddi")
MODEL = os.path.join(SHARED, "models", "all-MiniLM-L6-v2")


def subset(source: str, target: str, docs: int | None, text_only: bool = False) -> str:
    """The first ``docs`` documents of a BRAT folder (all when None), optionally as raw ``.txt`` only."""
    os.makedirs(target, exist_ok=True)
    names = sorted(n[:-4] for n in os.listdir(source) if n.endswith(".txt"))[:docs]
    for name in names:
        for suffix in (".txt",) if text_only else (".txt", ".ann"):
            shutil.copy(os.path.join(source, name + suffix), os.path.join(target, name + suffix))
    return target


def chain_speed(ner: str, relation: str, backend: str, texts: list[str], notes_per_call: int) -> float:
    """Notes per second of the chain on ``texts``, ``notes_per_call`` notes at a time (the weights loaded first)."""
    from shared.deploy.chain import Chain

    chain = Chain.from_folders(ner, relation_model=relation, backend=backend)
    chain.model  # noqa: B018  (load the weights or sessions before the clock starts)
    chain.annotate(texts[:2])  # warm-up
    start = time.perf_counter()
    for k in range(0, len(texts), notes_per_call):
        chain.annotate(texts[k:k + notes_per_call])
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--ddi", default=DDI)
    parser.add_argument("--ner_epochs", type=float, default=2.0)
    parser.add_argument("--relation_epochs", type=float, default=1.0)
    parser.add_argument("--max_train_docs", type=int, default=None, help="The first N training documents only.")
    parser.add_argument("--speed_notes", type=int, default=None, help="Time the chain on the first N test notes.")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work_dir", default=None, help="Keep the trained folders here (default: a temp folder).")
    parser.add_argument("--results_dir", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args()
    for path in (args.model, args.ddi):
        if not os.path.isdir(path):
            sys.exit(f"error: {path} does not exist (see ../shared/README.md, or pass --model / --ddi)")
    work = args.work_dir or tempfile.mkdtemp(prefix="chain_ddi_")
    common = ["--model_name_or_path", args.model, "--seed", str(args.seed), "--bootstrap_resamples",
              str(args.resamples)]
    train = subset(os.path.join(args.ddi, "train"), os.path.join(work, "train"), args.max_train_docs)
    test = os.path.join(args.ddi, "test")
    raw = subset(test, os.path.join(work, "raw"), None, text_only=True)
    started = time.perf_counter()

    # 1-2. The two recipes, each with its own defaults.
    folders = {"ner": os.path.join(work, "ner"), "relation": os.path.join(work, "relation")}
    ner = {}
    if not os.path.isfile(os.path.join(folders["ner"], "config.json")):
        ner = run_recipe("ner", [*common, "--train_file", train, "--test_file", test, "--data_format", "brat",
                                 "--overlapping_entities", "first_fragment", "--num_train_epochs",
                                 str(args.ner_epochs), "--output_dir", folders["ner"], "--do_train", "--do_predict"])
    relation = {}
    if not os.path.isfile(os.path.join(folders["relation"], "config.json")):
        relation = run_recipe("relation_extraction", [
            *common, "--train_file", train, "--test_file", test, "--num_train_epochs", str(args.relation_epochs),
            "--output_dir", folders["relation"], "--do_train", "--do_predict"])
    trained = time.perf_counter()

    # 3. The chain on raw text, scored against every gold entity and relation.
    chain_out = os.path.join(work, "chain")
    shutil.rmtree(chain_out, ignore_errors=True)
    run_recipe("pipeline.py", ["--ner_model", folders["ner"], "--relation_model", folders["relation"], "--input", raw,
                               "--output_dir", chain_out, "--output_format", "brat"])
    gold = read_brat(test, allow_overlaps=True)
    predicted = {doc.doc_id: doc for doc in read_brat(chain_out, allow_overlaps=True)}
    scores = end_to_end_scores(gold, [predicted[doc.doc_id] for doc in gold], args.resamples, args.seed)

    # 4. Speed: the ONNX exports (parity-gated on the test documents), then PyTorch and ONNX one after the other.
    exports = {name: os.path.join(work, f"{name}_onnx") for name in folders}
    for name, extra in (("ner", ["--overlapping_entities", "first_fragment"]), ("relation", [])):
        if not os.path.isfile(os.path.join(exports[name], "model.onnx")):
            run_recipe("export_onnx.py", ["--model_dir", folders[name], "--input", test, "--output_dir",
                                          exports[name], "--max_examples", "256", *extra])
    texts = [open(os.path.join(raw, n), encoding="utf-8").read() for n in sorted(os.listdir(raw))]
    texts = texts[:args.speed_notes] if args.speed_notes else texts
    speed = {}
    for backend, ner_dir, relation_dir in (("pytorch", folders["ner"], folders["relation"]),
                                           ("onnx", exports["ner"], exports["relation"])):
        for per_call in (1, 32):
            speed[f"{backend}_{per_call}"] = chain_speed(ner_dir, relation_dir, backend, texts, per_call)

    results = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "model": os.path.basename(os.path.normpath(args.model)), "train_docs": len(os.listdir(train)) // 2,
        "test_docs": len(gold), "ner_epochs": args.ner_epochs, "relation_epochs": args.relation_epochs,
        "ner_test": {k: v for k, v in ner.items() if k.startswith("test_f1") or k in ("test_precision", "test_recall")},
        "relation_gold_entities": {k: v for k, v in relation.items()
                                   if k.startswith(("test_f1", "test_precision", "test_recall"))},
        "end_to_end": scores, "notes_per_second": speed, "speed_notes": len(texts),
        "training_minutes": round((trained - started) / 60, 1),
        "minutes": round((time.perf_counter() - started) / 60, 1), "work_dir": work,
    }
    rel_f1 = relation.get("test_f1")
    if rel_f1:
        results["goal_e2e_over_gold"] = scores["relation_f1"] / rel_f1
    results["goal_onnx_over_pytorch_batch1"] = speed["onnx_1"] / speed["pytorch_1"]
    os.makedirs(args.results_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    with open(os.path.join(args.results_dir, f"chain_ddi_{stamp}.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    table = markdown(results)
    with open(os.path.join(args.results_dir, f"chain_ddi_{stamp}.md"), "w", encoding="utf-8") as f:
        f.write(table)
    print(table)


def ci(values: dict, name: str) -> str:
    low, high = values.get(f"{name}_ci_low"), values.get(f"{name}_ci_high")
    value = values.get(name)
    if value is None:
        return "—"
    return f"{value:.3f}" + (f" ({low:.3f}–{high:.3f})" if low is not None else "")


def markdown(r: dict) -> str:
    e2e, rel, ner, speed = r["end_to_end"], r["relation_gold_entities"], r["ner_test"], r["notes_per_second"]
    lines = [
        f"DDI 2013 test ({r['test_docs']} documents), {r['model']}, NER {r['ner_epochs']:g} epoch(s), relations "
        f"{r['relation_epochs']:g} epoch(s), {r['train_docs']} training documents; {r['date']}, {r['machine']}.",
        "",
        "| score | precision | recall | F1 (95% CI over documents) |",
        "|---|---|---|---|",
        f"| NER, the recipe's test score (strict, entities as first_fragment reads them) | "
        f"{ner.get('test_precision', float('nan')):.3f} | {ner.get('test_recall', float('nan')):.3f} | "
        f"{ci(ner, 'test_f1')} |",
        f"| NER in the chain, against every gold entity (exact span and type) | {e2e['entity_precision']:.3f} | "
        f"{e2e['entity_recall']:.3f} | {ci(e2e, 'entity_f1')} |",
        f"| relations on gold entities (the relation recipe's test score) | "
        f"{rel.get('test_precision', float('nan')):.3f} | {rel.get('test_recall', float('nan')):.3f} | "
        f"{ci(rel, 'test_f1')} |",
        f"| **relations end to end** (raw text in; both spans, types and the relation type must match) | "
        f"{e2e['relation_precision']:.3f} | {e2e['relation_recall']:.3f} | **{ci(e2e, 'relation_f1')}** |",
        "",
        f"End to end / gold entities: {r.get('goal_e2e_over_gold', float('nan')):.2f} (goal ≥ 0.8).",
        "",
        f"| chain speed ({r['speed_notes']} test notes) | PyTorch notes/s | ONNX Runtime notes/s | ONNX / PyTorch |",
        "|---|---|---|---|",
    ]
    for per_call in (1, 32):
        pt, ox = speed[f"pytorch_{per_call}"], speed[f"onnx_{per_call}"]
        lines.append(f"| {per_call} note(s) per call | {pt:.2f} | {ox:.2f} | {ox / pt:.2f} |")
    lines += ["", f"ONNX / PyTorch at one note per call: {r['goal_onnx_over_pytorch_batch1']:.2f} (goal ≥ 1.5). "
                  f"Training took {r['training_minutes']} min, the whole run {r['minutes']} min."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
