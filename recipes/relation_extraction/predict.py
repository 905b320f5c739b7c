#!/usr/bin/env python
"""Find the relations between the concepts of new notes with a folder the relation recipe trained (or its ONNX
export), without the training stack.

    python recipes/relation_extraction/predict.py --model_dir out --input notes/ --output_dir predictions
    python recipes/relation_extraction/predict.py --model_dir out --input notes/ --concepts_dir ner_predictions/ \\
        --output_dir predictions

Steps, the same in every predict.py: 1 arguments -> 2 output folder -> 3 model folder -> 4 input -> 5 predict ->
6 write. The input is an i2b2 folder (.txt + .con [+ .rel]) or a BRAT folder (.txt + .ann [with R lines]), in the
format and with the candidate types the folder was trained on unless --data_format / --candidate_types say
otherwise, read and checked as train.py reads --test_file before the weights load; --concepts_dir takes the concepts
from another folder (the NER predict.py output), as --test_concepts_dir does. Every candidate pair is marked
[E1] ... [/E1] / [E2] ... [/E2] in its sentence with the folder's tokenizer and length, and a relation type the
pair's concept types cannot take (i2b2) is ruled out: the same relations, bytes and all, as train.py --do_predict on
that folder. For raw notes, run the whole chain instead: recipes/pipeline.py.

Outputs in --output_dir: each note written back with the predicted relations (.txt + .con + .rel, or .txt + .ann
with its T lines and the predicted R lines; note text, sensitive), predictions.csv (one row per candidate pair: note,
where each concept is, label when known, prediction, probabilities; no text) and predict_results.json (counts,
speed, the positive-type micro-F1 on labelled input).
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
from shared.deploy.concepts import RelationInputArguments
from shared.deploy.ensemble import load_folder_predictor
from shared.deploy.predictors import prediction_results, write_prediction_results

logger = logging.getLogger(__name__)


@main_guard
def main(args: list[str] | None = None) -> dict:
    # 1. Arguments: command line > --config.
    predict_args, input_args = parse_args(PredictArguments, RelationInputArguments, args=args,
                                          description=__doc__, usage=PREDICT_USAGE)
    setup_logging()

    # 2. The output folder, before anything is read: new, empty, or an earlier run's (--overwrite_output_dir).
    check_prediction_dir(predict_args.output_dir, predict_args.overwrite_output_dir)

    # 3. The model folder: labels, markers, format and candidate types (the weights load when first used).
    predictor = load_folder_predictor(predict_args.model_dir, predict_args.backend, predict_args.batch_size,
                                      task="relation_extraction")  # or an ensemble of fold models (cross_validate.py)

    # 4. Input: read and validated, one line naming file and line on a mistake.
    pairs = predictor.read(predict_args.input, input_args.data_format, input_args.concepts_dir,
                           input_args.candidate_types)
    logger.info("%d candidate pairs in %d notes (%s)", len(pairs), len(pairs.notes), pairs.format)

    # 5. Predict.
    start = time.perf_counter()
    outputs = predictor.predict(pairs.words, pairs.allowed_mask(predictor.labels))
    seconds = time.perf_counter() - start

    # 6. Write: the notes with their relations, predictions.csv and predict_results.json, all or nothing.
    with StagedFolder(predict_args.output_dir) as folder:
        files = predictor.write(folder.path, pairs, outputs)
        metric = ("f1", predictor.score(pairs.labels, outputs)) if pairs.labels is not None else None
        results = prediction_results(predictor, len(pairs), seconds, files, metric, notes=len(pairs.notes),
                                     relations=sum(label != predictor.labels[predictor.none_id]
                                                   for label in outputs.labels))
        write_prediction_results(folder.path, results)
    logger.info("%d candidate pairs predicted, written to %s", len(pairs), predict_args.output_dir)
    return results


if __name__ == "__main__":
    main()
