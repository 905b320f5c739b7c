#!/usr/bin/env python
"""Classify new images with a folder the image recipe trained (or its ONNX export), without the training stack.

    python recipes/image_classification/predict.py --model_dir out --input scans/ --output_dir predictions
    python recipes/image_classification/predict.py --model_dir out_onnx --backend onnx --input images.csv ...

Steps, the same in every predict.py: 1 arguments -> 2 output folder -> 3 model folder -> 4 input -> 5 predict ->
6 write. The input (class folders, a plain folder of images, a MedMNIST .npz (its test arrays), a CSV/JSONL/parquet
table of image paths) is read and checked as train.py reads --test_dir/--test_file, then decoded and resized as in
training; thresholds and calibration saved with the model are applied: the same predictions as train.py
--do_predict on that folder.

Outputs in --output_dir: predictions.csv (predictions.jsonl for a JSON table): row, label (when known), prediction,
prediction_set (a folder trained with --conformal_alpha) and prob_<class>, no image paths unless
--write_image_paths; predict_results.json (counts, speed, macro_f1 on labelled input).
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
from shared.deploy.predictors import ImageInputArguments, prediction_results, write_prediction_results
from shared.images.cache import automatic_cache_dir

logger = logging.getLogger(__name__)


@main_guard
def main(args: list[str] | None = None) -> dict:
    # 1. Arguments: command line > --config.
    predict_args, input_args = parse_args(PredictArguments, ImageInputArguments, args=args,
                                             description=__doc__, usage=PREDICT_USAGE)
    setup_logging()

    # 2. The output folder, before anything is read: new, empty, or an earlier run's (--overwrite_output_dir).
    check_prediction_dir(predict_args.output_dir, predict_args.overwrite_output_dir)

    # 3. The model folder: labels, image size and normalisation, thresholds (the weights load when first used).
    predictor = load_folder_predictor(predict_args.model_dir, predict_args.backend, predict_args.batch_size,
                                      task="image_classification")  # or an ensemble of fold models (cross_validate.py)

    # 4. Input: read, checked and decoded, one line naming the file (and row) on a mistake.
    images = predictor.read(predict_args.input, input_args.image_column, input_args.label_column,
                            input_args.label_separator, input_args.delimiter, input_args.encoding)
    size = predictor.image_size  # past the in-memory limit, into the user's disk cache (shared/images/cache.py)
    decoded = predictor.decode(images, input_args.skip_bad_images, automatic_cache_dir(len(images), (3, size, size)))
    logger.info("%d images from %s at %d px%s", len(decoded.kept), images.origin, predictor.image_size,
                f" ({len(decoded.bad)} unreadable skipped)" if decoded.bad else "")

    # 5. Predict.
    start = time.perf_counter()
    outputs = predictor.predict(decoded, input_args.tta)
    seconds = time.perf_counter() - start

    # 6. Write: the predictions and predict_results.json, all or nothing.
    with StagedFolder(predict_args.output_dir) as folder:
        files = predictor.write(folder.path, images, decoded, outputs, input_args.label_separator,
                                predict_args.input.lower().endswith((".json", ".jsonl")), input_args.write_image_paths)
        gold = [images.labels[i] for i in decoded.kept] if images.labeled else None
        metric = ("macro_f1", predictor.score(gold, outputs)) if gold is not None else None
        results = prediction_results(predictor, len(decoded.kept), seconds, files, metric,
                                     skipped_images=len(decoded.bad))
        write_prediction_results(folder.path, results)
    logger.info("predictions for %d images written to %s", len(decoded.kept), predict_args.output_dir)
    return results


if __name__ == "__main__":
    main()
