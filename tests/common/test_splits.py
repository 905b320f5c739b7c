"""shared/data/splits.py: group-aware, stratified, deterministic held-out splits and k folds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from shared.core.args import DataArguments
from shared.core.errors import DataError
from shared.data.splits import carve_splits, fold_indices, split_indices, splits_to_carve, table_groups
from tests.helpers import ROOT

SAMPLE = ROOT / "recipes" / "text_classification" / "sample_data"


def random_data(seed: int, n: int = 150, n_groups: int = 30):
    rng = np.random.default_rng(seed)
    labels = rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.3, 0.1])
    groups = [f"patient{g}" for g in rng.integers(0, n_groups, size=n)]
    return n, list(labels), groups


@pytest.mark.parametrize("seed", range(8))
def test_no_group_crosses_a_split_or_a_fold(seed):
    n, labels, groups = random_data(seed)
    fraction = [0.1, 0.15, 0.2, 0.3, 0.5, 0.7][seed % 6]
    for y in (labels, None):  # stratified (StratifiedGroupKFold) and not (GroupShuffleSplit)
        keep, holdout = split_indices(n, fraction, y, groups, seed=seed)
        assert len(keep) and len(holdout)
        assert not {groups[i] for i in keep} & {groups[i] for i in holdout}
        assert sorted(np.concatenate([keep, holdout])) == list(range(n))
        for fold in range(4):
            keep, holdout = fold_indices(n, 4, fold, y, groups, seed=seed)
            assert not {groups[i] for i in keep} & {groups[i] for i in holdout}


@pytest.mark.parametrize("groups", [False, True])
def test_k_folds_partition_the_data_each_example_held_out_once(groups):
    n, labels, group_ids = random_data(1)
    held = np.concatenate([fold_indices(n, 5, f, labels, group_ids if groups else None, seed=7)[1] for f in range(5)])
    assert sorted(held) == list(range(n))  # every example held out exactly once
    keep, holdout = fold_indices(n, 5, 2, labels, group_ids if groups else None, seed=7)
    assert sorted(np.concatenate([keep, holdout])) == list(range(n))


def test_stratification_keeps_class_proportions():
    labels = ["a"] * 120 + ["b"] * 60 + ["c"] * 20
    keep, holdout = split_indices(len(labels), 0.2, labels, seed=0)
    counts = {c: sum(labels[i] == c for i in holdout) for c in "abc"}
    assert counts == {"a": 24, "b": 12, "c": 4}
    for fold in range(5):
        _, holdout = fold_indices(len(labels), 5, fold, labels, seed=0)
        assert {c: sum(labels[i] == c for i in holdout) for c in "abc"} == {"a": 24, "b": 12, "c": 4}


def test_deterministic_under_seed_and_different_across_seeds():
    n, labels, groups = random_data(2)
    for y, g in ((labels, groups), (labels, None), (None, groups), (None, None)):
        first = split_indices(n, 0.2, y, g, seed=5)
        again = split_indices(n, 0.2, y, g, seed=5)
        assert all(np.array_equal(a, b) for a, b in zip(first, again))
        assert not np.array_equal(first[1], split_indices(n, 0.2, y, g, seed=6)[1])
        assert np.array_equal(fold_indices(n, 3, 1, y, g, seed=5)[1], fold_indices(n, 3, 1, y, g, seed=5)[1])


def test_multilabel_and_rare_classes_fall_back_to_plain_splits():
    multi = [["a"], ["a", "b"], []] * 10
    keep, holdout = split_indices(30, 0.2, multi, seed=0)
    assert len(holdout) == 6
    rare = ["a"] * 19 + ["b"]  # one 'b': cannot be stratified
    keep, holdout = split_indices(20, 0.25, rare, seed=0)
    assert len(holdout) == 5


def test_bad_arguments_are_clear_errors():
    with pytest.raises(DataError, match="at least 2 folds"):
        fold_indices(10, 1, 0)
    with pytest.raises(DataError, match=r"fold must be in 0..2"):
        fold_indices(10, 3, 3)
    with pytest.raises(DataError, match="needs at least 5 groups, the training data has 2"):
        fold_indices(10, 5, 0, groups=["x", "y"] * 5)
    with pytest.raises(DataError, match="at least 2 groups"):
        split_indices(10, 0.2, groups=["x"] * 10)
    with pytest.raises(DataError, match=r"must be in \(0, 1\)"):
        split_indices(10, 1.5)


@pytest.mark.parametrize("kwargs, message", [
    ({"validation_split_percentage": 0}, r"--validation_split_percentage must be in \(0, 100\), got 0"),
    ({"validation_split_percentage": 100}, r"must be in \(0, 100\)"),
    ({"num_folds": 1, "fold": 0}, "--num_folds must be at least 2, got 1"),
    ({"num_folds": 3, "fold": 3}, r"--fold must be in 0..2 for --num_folds 3, got 3"),
    ({"num_folds": 3}, "--num_folds and --fold go together"),
    ({"num_folds": 3, "fold": 0, "test_file": str(SAMPLE / "test.csv")}, "drop --test_file"),
    ({"validation_split_percentage": 10, "validation_file": str(SAMPLE / "validation.csv")}, "not both"),
    ({"drop_fold": True}, "--drop_fold leaves out fold --fold of --num_folds: give both"),
])
def test_data_arguments_validation(kwargs, message):
    with pytest.raises(DataError, match=message):
        DataArguments(**kwargs)


def test_splits_to_carve_and_carve_splits_never_overlap():
    data = DataArguments(num_folds=4, fold=1, validation_split_percentage=20)
    training = SimpleNamespace(do_eval=False, do_predict=False)
    carve = splits_to_carve(data, training, {"train"})
    assert carve == ["test", "validation"]
    assert not training.do_eval and not training.do_predict  # the arguments are read, never changed
    n, labels, groups = random_data(3)
    parts = carve_splits(n, data, carve, 0, labels, groups)
    assert sorted(np.concatenate(list(parts.values()))) == list(range(n))
    owners = {g: s for s, idx in parts.items() for g in {groups[i] for i in idx}}
    assert sum(len({groups[i] for i in idx}) for idx in parts.values()) == len(owners)  # one split per group
    # a validation file given: nothing carved; --do_eval without one: carved at the default 10%
    assert splits_to_carve(DataArguments(), SimpleNamespace(do_eval=True, do_predict=False), {"train", "validation"}) == []
    assert splits_to_carve(DataArguments(), SimpleNamespace(do_eval=True, do_predict=False), {"train"}) == ["validation"]
    with pytest.raises(DataError, match="needs --do_train|pass --do_train"):
        splits_to_carve(DataArguments(num_folds=2, fold=0), training, {"test"})


def test_a_dropped_fold_is_cut_as_the_test_fold_and_then_left_out():
    """--drop_fold (nested cross-validation's inner trials): the same training and validation rows as scoring the
    fold would leave, and no test split at all."""
    n, labels, groups = random_data(3)
    training = SimpleNamespace(do_eval=False, do_predict=False)
    scored = DataArguments(num_folds=4, fold=1, validation_split_percentage=20)
    dropped = DataArguments(num_folds=4, fold=1, validation_split_percentage=20, drop_fold=True)
    parts = carve_splits(n, scored, splits_to_carve(scored, training, {"train"}), 0, labels, groups)
    left = carve_splits(n, dropped, splits_to_carve(dropped, training, {"train"}), 0, labels, groups)
    assert set(left) == {"train", "validation"}
    for split in left:
        assert np.array_equal(left[split], parts[split])
    with pytest.raises(DataError, match="--drop_fold scores nothing on the fold it leaves out: drop --do_predict"):
        splits_to_carve(dropped, SimpleNamespace(do_eval=False, do_predict=True), {"train"})


def test_missing_group_column_names_the_file():
    from shared.data.tables import read_table

    with pytest.raises(DataError, match=r"train\.csv: group column 'patient_id' not found"):
        table_groups(read_table(str(SAMPLE / "train.csv")), "patient_id")


def test_warn_shared_groups_counts_without_naming_patients(caplog):
    from shared.data.splits import warn_shared_groups

    with caplog.at_level("WARNING", logger="shared.data.splits"):
        assert warn_shared_groups({"train": ["p1", "p2", "p3"], "validation": ["p4", "p4"],
                                   "test": ["p2", "p3", "p5", "p3"]}, "patient_id") == 1
    assert [r.getMessage() for r in caplog.records] == [
        "test shares 2 of its 3 groups ('patient_id') with the training data: its scores are optimistic for new "
        "patient_id"]
    assert warn_shared_groups({"test": ["p1"]}, "patient_id") == 0  # nothing to compare with
