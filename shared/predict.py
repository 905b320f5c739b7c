"""Predictions that come back in the dataset's own order.

transformers 5.x also applies ``train_sampling_strategy="group_by_length"`` to evaluation, with a shuffled
``LengthGroupedSampler``: ``Trainer.predict`` then returns rows in a different order than the dataset, and
metrics computed against the dataset's labels are silently wrong. We predict with a sequential sampler instead,
over the rows sorted by length (so batches still carry little padding), and put the results back in order.
"""

from __future__ import annotations

import contextlib

import numpy as np


@contextlib.contextmanager
def sequential_evaluation(trainer):
    """Temporarily make Trainer's evaluation sampler sequential (restored afterwards)."""
    strategy = trainer.args.train_sampling_strategy
    trainer.args.train_sampling_strategy = "sequential"
    try:
        yield
    finally:
        trainer.args.train_sampling_strategy = strategy


def predict_in_order(trainer, dataset, lengths=None, metric_key_prefix: str = "test"):
    """``trainer.predict(dataset)`` whose ``predictions`` row ``i`` belongs to ``dataset[i]``.

    ``lengths`` (e.g. token counts) lets the rows be predicted shortest first for less padding; the output
    order is the dataset's regardless. Returns the ``PredictionOutput`` with reordered predictions/label_ids.
    """
    order = np.arange(len(dataset)) if lengths is None else np.argsort(np.asarray(lengths), kind="stable")
    with sequential_evaluation(trainer):
        output = trainer.predict(dataset.select(order.tolist()), metric_key_prefix=metric_key_prefix)
    restore = np.empty_like(order)
    restore[order] = np.arange(len(order))

    def unsort(values):
        if values is None:
            return None
        if isinstance(values, (tuple, list)):
            return type(values)(unsort(v) for v in values)
        return np.asarray(values)[restore]

    return output._replace(predictions=unsort(output.predictions), label_ids=unsort(output.label_ids))
