#!/usr/bin/env python
"""Classify new notes with a folder the text recipe trained (or its ONNX export), without the training stack.

    python recipes/text_classification/predict.py --model_dir out --input notes.csv --output_dir predictions
    python recipes/text_classification/predict.py --model_dir out_onnx --backend onnx --input notes.jsonl ...

Steps, the same in every predict.py: 1 arguments -> 2 output folder -> 3 model folder -> 4 input -> 5 predict ->
6 write. The input (CSV/TSV/JSON/JSONL/parquet) is read and checked as train.py reads --test_file, before the weights
load; long notes are read in the windows the folder was trained with, thresholds and calibration saved with the
model are applied: the same predictions as train.py --do_predict on that folder.

Outputs in --output_dir: predictions.csv (predictions.jsonl for JSON input): row, label (when the input has one),
prediction, prediction_set (a folder trained with --conformal_alpha) and prob_<class>, never the note text;
predict_results.json (counts, speed, macro_f1 on labelled input).
"""

from __future__ import annotations

import logging
import sys
import time

try:
    import shared.core.args  # noqa: F401  (this project's package, and through it torch and transformers)
except ImportError as error:
    print(f"error: this project is not installed ({error}): install it as its README.md says, torch first, then "
          "`pip install -e .`", file=sys.stderr)
    raise SystemExit(2) from None

from shared.core.args import PREDICT_USAGE, PredictArguments, main_guard, parse_args, setup_logging
from shared.core.outputs import StagedFolder, check_prediction_dir
from shared.deploy.ensemble import load_folder_predictor
from shared.deploy.predictors import TextInputArguments, prediction_results, write_prediction_results

logger = logging.getLogger(__name__)


@main_guard
def main(args: list[str] | None = None) -> dict:
    # 1. Arguments: command line > --config.
    predict_args, input_args = parse_args(PredictArguments, TextInputArguments, args=args,
                                             description=__doc__, usage=PREDICT_USAGE)
    setup_logging()

    # 2. The output folder, before anything is read: new, empty, or an earlier run's (--overwrite_output_dir).
    check_prediction_dir(predict_args.output_dir, predict_args.overwrite_output_dir)

    # 3. The model folder: labels, windows, thresholds (the weights load when first used).
    predictor = load_folder_predictor(predict_args.model_dir, predict_args.backend, predict_args.batch_size,
                                      task="text_classification")  # or an ensemble of fold models (cross_validate.py)

    # 4. Input: read and validated, one line naming file and row on a mistake.
    inp = predictor.read(predict_args.input, input_args.text_column, input_args.text_pair_column,
                         input_args.label_column, input_args.label_separator, input_args.delimiter,
                         input_args.encoding)
    logger.info("%d notes from %s; %s labels", len(inp.texts), predict_args.input, len(predictor.labels))

    # 5. Predict.
    start = time.perf_counter()
    outputs = predictor.predict(inp.texts, inp.pairs, inp.table.where)
    seconds = time.perf_counter() - start

    # 6. Write: the predictions and predict_results.json, all or nothing.
    with StagedFolder(predict_args.output_dir) as folder:
        files = predictor.write(folder.path, inp, outputs, input_args.label_separator,
                                jsonl=predict_args.input.lower().endswith((".json", ".jsonl")))
        metric = ("macro_f1", predictor.score(inp.gold, outputs)) if inp.gold is not None else None
        results = prediction_results(predictor, len(inp.texts), seconds, files, metric)
        write_prediction_results(folder.path, results)
    logger.info("predictions for %d notes written to %s", len(inp.texts), predict_args.output_dir)
    return results


if __name__ == "__main__":
    main()
