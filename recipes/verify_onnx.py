#!/usr/bin/env python
"""Check an ONNX export against the PyTorch folder it came from: the parity gate of export_onnx.py, on its own.

    python recipes/verify_onnx.py --model_dir out --onnx_dir out_onnx --input data/test.csv

Runs both on the first --max_examples examples of --input (any format the task's predict.py reads; give
--model_dir to list the input options). An fp32 export passes when every decision is the same and every logit
within --tolerance; an int8 export (export.json says which) when the metric on labelled input falls by at most
--max_metric_drop. Prints the measured parity as one JSON line; exit status 2 and one line when it fails, for
example after the graph was edited or the folder mixed up with another model's.
"""

from __future__ import annotations

import json
import logging
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
from shared.deploy.onnx_export import ParityArguments, check_parity, read_export_info
from shared.deploy.predictors import parse_task_arguments
from shared.tasks import folder_task

logger = logging.getLogger(__name__)
USAGE = "%(prog)s --model_dir DIR --onnx_dir DIR --input PATH [options]"


@dataclass(kw_only=True)
class VerifyArguments(ParityArguments):
    _argument_group_name = "verify"

    model_dir: str = field(metadata={"help": "The trained PyTorch folder (a recipe's --output_dir)."})
    onnx_dir: str = field(metadata={"help": "The export folder written by export_onnx.py."})
    input: str = field(metadata={"help": "Real inputs to compare on, in any format the task's predict.py reads."})


@main_guard
def main(args: list[str] | None = None) -> dict:
    # 1. Arguments: command line > --config; the folder's task adds its input options.
    verify_args, input_args, task = parse_task_arguments(VerifyArguments, args, __doc__, USAGE)
    setup_logging()

    # 2. Both folders: the same task and labels, an export folder written by export_onnx.py.
    info = read_export_info(verify_args.onnx_dir)
    if folder_task(verify_args.onnx_dir) != task:
        raise DataError(f"the export holds {folder_task(verify_args.onnx_dir).a_title} model, --model_dir "
                        f"{task.a_title} one", path=verify_args.onnx_dir)
    reference = task.predictor_class()(verify_args.model_dir, "pytorch", verify_args.batch_size)
    exported = task.predictor_class()(verify_args.onnx_dir, "onnx", verify_args.batch_size)
    if exported.labels != reference.labels:
        raise DataError("the export's labels differ from the PyTorch folder's: not an export of this model",
                        path=verify_args.onnx_dir)

    # 3. The inputs, read and validated as predict.py reads them; 4. the gate.
    inputs, gold = reference.examples(verify_args.input, input_args, verify_args.max_examples)
    report = check_parity(reference, exported, inputs, gold, info.get("quantization", "none") != "none",
                          verify_args.tolerance, verify_args.max_metric_drop, where=verify_args.onnx_dir)
    print(json.dumps({"verified": verify_args.onnx_dir, "quantization": info.get("quantization", "none"), **report}))
    return report


if __name__ == "__main__":
    main()
