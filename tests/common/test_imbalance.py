"""shared/training/imbalance.py: class weights, focal losses and oversampling against scikit-learn and hand-computed
values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from shared.core.errors import DataError
from shared.training.imbalance import binary_focal_loss, class_weights, focal_loss, make_loss_func, oversample
from shared.training.imbalance import positive_weights


def test_balanced_weights_match_scikit_learn():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(class_weights(labels, 3, "balanced"), expected)
    np.testing.assert_allclose(expected, [10 / 18, 10 / 9, 10 / 3])


def test_inverse_sqrt_weights_hand_computed_and_normalised():
    labels = np.array([0] * 4 + [1] * 1 + [-100] * 5)  # -100 (ignored sub-tokens) must not count
    w = class_weights(labels, 2, "inverse_sqrt")
    raw = np.array([1 / 2, 1.0])  # 1/sqrt(4), 1/sqrt(1)
    np.testing.assert_allclose(w, raw * 5 / (raw @ [4, 1]))
    assert (w * [4, 1]).sum() == pytest.approx(5)  # average weight over examples is 1
    assert class_weights(labels, 2, "none") is None


def test_class_weights_reject_missing_class_and_unknown_strategy():
    with pytest.raises(DataError, match=r"class id\(s\) \[2\]"):
        class_weights([0, 1, 1], 3, "balanced")
    with pytest.raises(DataError, match="unknown class weighting"):
        class_weights([0, 1], 2, "sqrt")


def test_positive_weights_for_multilabel():
    hot = np.array([[1, 0], [0, 0], [0, 1], [0, 1]])
    np.testing.assert_allclose(positive_weights(hot, "balanced"), [3.0, 1.0])
    np.testing.assert_allclose(positive_weights(hot, "inverse_sqrt"), [np.sqrt(3), 1.0])


def test_focal_loss_gamma_zero_is_weighted_cross_entropy():
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, -100])
    weight = torch.tensor([0.5, 1.0, 2.0])
    ours = focal_loss(logits, targets, gamma=0.0, weight=weight, reduction="sum")
    expected = F.cross_entropy(logits, targets, weight=weight, reduction="sum", ignore_index=-100)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_loss_hand_computed():
    logits = torch.log(torch.tensor([[0.8, 0.2], [0.4, 0.6]]))  # softmax gives these probabilities back
    targets = torch.tensor([0, 0])
    expected = -((0.2**2) * np.log(0.8) + (0.6**2) * np.log(0.4)) / 2
    assert focal_loss(logits, targets, gamma=2.0).item() == pytest.approx(expected, rel=1e-5)


def test_binary_focal_gamma_zero_is_bce_with_pos_weight():
    torch.manual_seed(1)
    logits, targets = torch.randn(4, 3), torch.randint(0, 2, (4, 3)).float()
    pos_weight = torch.tensor([1.0, 2.0, 3.0])
    expected = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
    assert binary_focal_loss(logits, targets, 0.0, pos_weight).item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_func_divides_by_num_items_for_gradient_accumulation():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    loss_func = make_loss_func(None, 0.0)
    plain = F.cross_entropy(logits, labels)
    assert loss_func({"logits": logits}, labels).item() == pytest.approx(plain.item(), rel=1e-6)
    # over two accumulation steps of 4 items each, each micro-batch contributes sum/8
    assert loss_func({"logits": logits}, labels, num_items_in_batch=8).item() == pytest.approx(plain.item() / 2, rel=1e-6)


def test_oversample_balances_classes_and_keeps_every_original_row():
    from datasets import Dataset

    labels = [0] * 8 + [1] * 2 + [2] * 1
    ds = Dataset.from_dict({"labels": labels, "row": list(range(len(labels)))})
    out = oversample(ds, labels, seed=0)
    assert np.bincount(out["labels"]).tolist() == [8, 8, 8]
    assert set(range(len(labels))) <= set(out["row"])
    with pytest.raises(DataError, match="single-label"):
        oversample(ds, np.zeros((11, 2)), seed=0)


def test_class_weights_allow_absent_classes_for_tag_schemes():
    labels = np.array([0, 0, 0, 1])  # class 2 (say I-X) never occurs
    w = class_weights(labels, 3, "balanced", allow_absent=True)
    assert w[2] == 1.0
    np.testing.assert_allclose(w[:2], compute_class_weight("balanced", classes=np.arange(2), y=labels))
