"""The one prediction path of every recipe: model outputs for every example, in the examples' own order, in float32.

Why not ``Trainer.predict``: in transformers 5.x ``train_sampling_strategy="group_by_length"`` also applies to
evaluation, with a shuffled ``LengthGroupedSampler``, so ``Trainer.predict`` returns rows in another order than the
dataset and metrics computed against the dataset's labels are silently wrong. Here examples are batched shortest
first (little padding) and the outputs put back in order.

Why float32: it is what the saved folder computes in ``pipeline()`` and in any export, so the scores and prediction
files describe the model users get. After bf16 training, accelerate leaves the model's ``forward`` wrapped in bf16
autocast (its original forward kept as ``_original_forward``); that wrapper is bypassed here.

Under ``torchrun`` / ``accelerate launch`` every process predicts every example (the same batches in the same
order, so sharded FSDP models run their collectives in step); only the main process writes the results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def plain_forward(model: torch.nn.Module) -> Callable:
    """``model.forward`` without accelerate's mixed-precision wrapper (set on the model during bf16/fp16 training)."""
    return model.__dict__.get("_original_forward", model.forward)


@torch.no_grad()
def predict_in_order(model: torch.nn.Module, examples: Sequence, collate: Callable[[list], dict],
                     batch_size: int, lengths: Sequence[int] | None = None,
                     postprocess: Callable[[torch.Tensor, list[int]], torch.Tensor] | None = None) -> list[np.ndarray]:
    """``model(**batch).logits`` (or ``postprocess(logits, indices)``) for every example, row ``i`` for ``examples[i]``.

    ``collate`` turns a list of examples into a batch of tensors (a data collator); ``labels`` and ``length`` are
    not passed to the model. ``lengths`` (token counts) orders the batches shortest first. ``postprocess`` gets the
    float32 logits of a batch and the indices of its examples (e.g. CRF decoding). Returns one array per example
    (token tasks: padded to its batch's width; read only the example's own positions).
    """
    order = np.arange(len(examples)) if lengths is None else np.argsort(np.asarray(lengths), kind="stable")
    device = next(model.parameters()).device
    forward = plain_forward(model)
    out: list[np.ndarray | None] = [None] * len(examples)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size].tolist()
            batch = collate([examples[i] for i in indices])
            inputs = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "length")}
            logits = forward(**inputs).logits.float()
            result = postprocess(logits, indices) if postprocess is not None else logits
            result = result.cpu().numpy()
            for row, i in enumerate(indices):
                out[i] = result[row]
    finally:
        model.train(was_training)
    return out
