"""shared/evaluation/forward.py: the one prediction path, in the examples' order and in float32."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from shared.evaluation.forward import plain_forward, predict_in_order


class Echo(nn.Module):
    """Logits = the input ids as floats, so the output says which example it came from, and in which dtype."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, input_ids, attention_mask=None):
        class Out:
            logits = input_ids.float() * self.weight
        return Out()


def collate(items):
    width = max(len(i["input_ids"]) for i in items)
    return {"input_ids": torch.tensor([i["input_ids"] + [0] * (width - len(i["input_ids"])) for i in items]),
            "labels": torch.zeros(len(items))}


def test_rows_come_back_in_the_examples_order_whatever_the_batching():
    examples = [{"input_ids": [k] * (1 + (7 * k) % 5)} for k in range(11)]
    lengths = [len(e["input_ids"]) for e in examples]
    out = predict_in_order(Echo(), examples, collate, batch_size=3, lengths=lengths)
    assert [int(row[0]) for row in out] == list(range(11))


def test_postprocess_gets_the_batch_indices():
    examples = [{"input_ids": [k, k]} for k in range(5)]
    seen = []

    def post(logits, indices):
        seen.append(indices)
        return logits.argmax(-1)

    predict_in_order(Echo(), examples, collate, batch_size=2, postprocess=post)
    assert sorted(i for batch in seen for i in batch) == list(range(5))


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner = nn.Linear(4, 3)

    def forward(self, x):
        class Out:
            logits = self.inner(x)
        return Out()


def test_accelerates_mixed_precision_wrapper_is_bypassed():
    """After bf16 training, accelerate leaves forward wrapped in bf16 autocast; predictions are float32 regardless."""
    from accelerate import Accelerator

    model = Accelerator(mixed_precision="bf16", cpu=True).prepare_model(Linear())
    assert "_original_forward" in model.__dict__  # accelerate's wrapper is in place
    x = torch.randn(6, 4) * 10
    exact = (x @ model.inner.weight.detach().T + model.inner.bias.detach()).numpy()
    assert not np.allclose(model(x).logits.detach().float().numpy(), exact, rtol=1e-6)  # the wrapper rounds to bf16
    np.testing.assert_allclose(plain_forward(model)(x).logits.detach().numpy(), exact, rtol=1e-6)
    out = predict_in_order(model, [{"x": row} for row in x], lambda items: {"x": torch.stack([i["x"] for i in items])}, 4)
    np.testing.assert_allclose(np.stack(out), exact, rtol=1e-6)
