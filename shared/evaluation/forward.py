"""The one prediction path of every recipe: model outputs for every example, in the examples' own order, in float32.

Why not ``Trainer.predict``: in transformers 5.x ``train_sampling_strategy="group_by_length"`` also applies to
evaluation, with a shuffled ``LengthGroupedSampler``, so ``Trainer.predict`` returns rows in another order than the
dataset and metrics computed against the dataset's labels are silently wrong. Here examples are batched shortest
first (little padding) and the outputs put back in order.

Why float32: it is what the saved folder computes in ``pipeline()`` and in any export, so the scores and prediction
files describe the model users get. After bf16 training, accelerate leaves the model's ``forward`` wrapped in bf16
autocast (its original forward kept as ``_original_forward``); that wrapper is bypassed here.

The model may also be an exported graph run by ONNX Runtime (:class:`shared.deploy.predictors.OnnxModel`): a callable
that takes the batch's tensors and returns float32 logits, so both backends share batching, order and postprocessing.

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
def predict_in_order(model: torch.nn.Module | Callable, examples: Sequence, collate: Callable[[list], dict],
                     batch_size: int, lengths: Sequence[int] | None = None,
                     postprocess: Callable[[torch.Tensor, list[int]], torch.Tensor] | None = None,
                     progress: bool = False) -> list[np.ndarray]:
    """``model(**batch).logits`` (or ``postprocess(logits, indices)``) for every example, row ``i`` for ``examples[i]``.

    ``collate`` turns a list of examples into a batch of tensors (a data collator); ``labels`` and ``length`` are
    not passed to the model. ``lengths`` (token counts) orders the batches shortest first. ``postprocess`` gets the
    float32 logits of a batch and the indices of its examples (e.g. CRF decoding). ``progress`` shows a progress bar
    over the batches (on a terminal). Returns one array per example (token tasks: padded to its batch's width; read
    only the example's own positions).
    """
    from tqdm.auto import tqdm

    order = np.arange(len(examples)) if lengths is None else np.argsort(np.asarray(lengths), kind="stable")
    is_module = isinstance(model, torch.nn.Module)
    if is_module:
        device, forward = next(model.parameters()).device, plain_forward(model)
        was_training = model.training
        model.eval()
    else:  # an exported graph (shared.deploy.predictors.OnnxModel) takes CPU tensors and returns the logits
        device, forward = torch.device("cpu"), None
    out: list[np.ndarray | None] = [None] * len(examples)
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="predicting", unit="batch", disable=not progress):
            indices = order[start:start + batch_size].tolist()
            batch = collate([examples[i] for i in indices])
            inputs = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "length")}
            logits = (forward(**inputs).logits if is_module else model(**inputs)).float()
            result = postprocess(logits, indices) if postprocess is not None else logits
            result = result.cpu().numpy()
            for row, i in enumerate(indices):
                out[i] = result[row]
    finally:
        if is_module:
            model.train(was_training)
    return out
