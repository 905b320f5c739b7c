#!/usr/bin/env python
"""Tag new notes with a folder the NER recipe trained (or its ONNX export), without the training stack.

    python recipes/ner/predict.py --model_dir out --input notes/ --output_dir predictions
    python recipes/ner/predict.py --model_dir out_onnx --backend onnx --input sentences.conll ...

Steps, the same in every predict.py: 1 arguments -> 2 output folder -> 3 model folder -> 4 input -> 5 predict ->
6 write. The input (an i2b2 folder of .txt [+ .con], a BRAT folder of .txt [+ .ann], CoNLL, JSON/JSONL) is read and
checked as train.py reads --test_file, before the weights load; long sentences are cut into the windows the folder
was trained with, never truncated, and a CRF folder is decoded with its constrained Viterbi: the same entities as
train.py --do_predict on that folder.

Outputs in --output_dir: the input written back in its own format with the predicted entities (.con files, .ann
files, the CoNLL file, or JSON lines), which hold the note words (sensitive); predict_results.json (counts, speed,
strict entity F1 on labelled input).
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
from shared.deploy.predictors import NerInputArguments, prediction_results, write_prediction_results

logger = logging.getLogger(__name__)


@main_guard
def main(args: list[str] | None = None) -> dict:
    # 1. Arguments: command line > --config.
    predict_args, input_args = parse_args(PredictArguments, NerInputArguments, args=args,
                                             description=__doc__, usage=PREDICT_USAGE)
    setup_logging()

    # 2. The output folder, before anything is read: new, empty, or an earlier run's (--overwrite_output_dir).
    check_prediction_dir(predict_args.output_dir, predict_args.overwrite_output_dir)

    # 3. The model folder: labels, tag scheme, windows, CRF (the weights load when first used).
    predictor = load_folder_predictor(predict_args.model_dir, predict_args.backend, predict_args.batch_size,
                                      task="ner")  # or an ensemble of fold models (cross_validate.py)

    # 4. Input: read and validated, one line naming file and line on a mistake.
    split = predictor.read(predict_args.input, input_args.data_format, input_args.tokens_column,
                           input_args.tags_column, input_args.conll_tag_column, input_args.overlapping_entities)
    logger.info("%d sentences from %s (%s)", len(split), split.source, split.format)

    # 5. Predict.
    start = time.perf_counter()
    outputs = predictor.predict(split.words)
    seconds = time.perf_counter() - start

    # 6. Write: the input in its own format with the predicted entities, and predict_results.json, all or nothing.
    with StagedFolder(predict_args.output_dir) as folder:
        files = predictor.write(folder.path, split, outputs)
        metric = ("f1", predictor.score(split.tags, outputs)) if split.tags is not None else None
        results = prediction_results(predictor, len(split), seconds, files, metric,
                                     words=sum(len(w) for w in split.words))
        write_prediction_results(folder.path, results)
    logger.info("%d prediction file(s) written to %s", len(files), predict_args.output_dir)
    return results


if __name__ == "__main__":
    main()
