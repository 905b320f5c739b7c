#!/usr/bin/env python
"""Export a trained folder to ONNX, checked against PyTorch on real inputs before it reports success.

    python recipes/export_onnx.py --model_dir out --input data/validation.csv --output_dir out_onnx
    python recipes/export_onnx.py --model_dir out --input data/validation.csv --output_dir out_int8 --quantize int8
    python recipes/text_classification/predict.py --model_dir out_onnx --backend onnx --input notes.csv ...

Works for the three recipes' folders (plain, merged LoRA or adapter + head; NER with or without CRF: the emission
scores are exported and Viterbi runs outside the graph). --input takes the same formats and options as the task's
predict.py (give --model_dir to list them); its first --max_examples examples are the parity sample: PyTorch and
ONNX Runtime must agree on every decision and within --tolerance on every logit, or the export is refused (exit 2,
nothing written). --quantize int8 is gated on the metric instead (labelled input), and reports its change.

Outputs in --output_dir: model.onnx (dynamic batch and sequence axes), the tokenizer or image processor,
config.json, crf.safetensors (CRF folders) and export.json (labels, thresholds, windows, inputs, the parity
measured). recipes/verify_onnx.py re-runs the same check on an export folder at any time.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

try:
    import shared.core.args  # noqa: F401  (this project's package, and through it torch and transformers)
except ImportError as error:
    print(f"error: this project is not installed ({error}): install it as its README.md says, torch first, then "
          "`pip install -e .`", file=sys.stderr)
    raise SystemExit(2) from None

from shared.core.args import main_guard, setup_logging
from shared.core.errors import DataError
from shared.core.outputs import StagedFolder
from shared.deploy.onnx_export import ParityArguments, export_folder
from shared.deploy.predictors import parse_task_arguments

logger = logging.getLogger(__name__)
USAGE = "%(prog)s --model_dir DIR --input PATH --output_dir DIR [--quantize int8] [options]"


@dataclass(kw_only=True)
class ExportArguments(ParityArguments):
    _argument_group_name = "export"

    model_dir: str = field(metadata={"help": "A recipe's --output_dir (the trained folder)."})
    input: str = field(metadata={"help": "Real inputs for the parity check (e.g. the validation file), in any format "
                                         "the task's predict.py reads; labelled input also gives the metric."})
    output_dir: str = field(metadata={"help": "The export folder (new or empty)."})
    quantize: str = field(default="none", metadata={"help": "'int8': ONNX Runtime dynamic int8 quantization of the "
                                                            "weights, gated on the metric.", "choices": ["none", "int8"]})


@main_guard
def main(args: list[str] | None = None) -> dict:
    # 1. Arguments: command line > --config; the folder's task adds its input options.
    export_args, input_args, task = parse_task_arguments(ExportArguments, args, __doc__, USAGE)
    setup_logging()

    # 2. The output folder, before anything is read: new or empty (an export is never merged into other files).
    out = export_args.output_dir
    if os.path.exists(out) and (not os.path.isdir(out) or any(not n.startswith(".") for n in os.listdir(out))):
        raise DataError("--output_dir exists and is not an empty folder; choose a new one", path=out)
    if os.path.realpath(out) == os.path.realpath(export_args.model_dir):
        raise DataError("--output_dir must differ from --model_dir", path=out)

    # 3. The model folder, and 4. the parity sample: read and validated as predict.py reads its input.
    predictor = task.predictor_class()(export_args.model_dir, "pytorch", export_args.batch_size)
    inputs, gold = predictor.examples(export_args.input, input_args, export_args.max_examples)

    # 5. Export and gate: nothing is left in --output_dir unless PyTorch and ONNX Runtime agree.
    quantize = None if export_args.quantize == "none" else export_args.quantize
    with StagedFolder(out) as folder:
        info = export_folder(predictor, inputs, gold, folder.path, quantize, export_args.tolerance,
                             export_args.max_metric_drop)
    parity = info["parity"]
    print(json.dumps({"exported": out, "quantization": info["quantization"], **parity}))
    logger.info("exported to %s: %d examples, largest logit difference %.2g, %s of the decisions changed%s", out,
                parity["examples"], parity["max_abs_logit_difference"], f"{parity['changed_decisions']:.1%}",
                f", {parity['metric']} {parity['metric_pytorch']:.4f} -> {parity['metric_onnx']:.4f}"
                if "metric" in parity else "")
    return info


if __name__ == "__main__":
    main()
