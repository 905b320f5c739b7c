"""A model folder whose weights cannot load is one line before anything loads (shared.training.models.check_weights,
which every loader passes through with the folder's config): cut short, a Git LFS pointer, a missing shard, no
weights at all. The command-line paths (predict.py, serve.py, train.py) are in tests/recipes/test_deploy.py."""

from __future__ import annotations

import json
import re

import pytest

from shared.core.errors import DataError
from shared.training.models import check_weights


@pytest.fixture
def saved(tmp_path):
    """A folder as save_pretrained writes it: config.json and a small, whole model.safetensors."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    save_file({"weight": torch.zeros(64, 64), "bias": torch.zeros(64)}, folder / "model.safetensors")
    check_weights(str(folder))  # whole: no error
    return folder


def refusal(folder, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        check_weights(str(folder), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_weights_cut_short_or_left_as_an_lfs_pointer_name_the_file(saved):
    weights = saved / "model.safetensors"
    whole = weights.read_bytes()
    for size, why in ((len(whole) - 1, "incomplete metadata, file not fully covered"), (5, "header too small")):
        weights.write_bytes(whole[:size])
        assert refusal(saved) == (f"{weights}: model.safetensors is incomplete or damaged ({why}); copy or save it "
                                  "again")
    weights.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 1024\n")
    assert refusal(saved) == (f"{weights}: a Git LFS pointer, not the weights: fetch them (git lfs pull) or download "
                              "the model again")


def test_every_safetensors_file_of_the_folder_is_checked_and_extras_are_not_weights(saved):
    crf = saved / "crf.safetensors"
    crf.write_bytes((saved / "model.safetensors").read_bytes()[:100])
    assert re.fullmatch(rf"{re.escape(str(crf))}: crf\.safetensors is incomplete or damaged \(.+\); copy or save it "
                        "again", refusal(saved))
    (saved / "model.safetensors").rename(saved / "other.safetensors")
    crf.unlink()
    assert refusal(saved) == f"no weights in {saved} (expected model.safetensors)"
    check_weights(str(saved), require_model=False)  # an ONNX export: model.onnx holds the weights


def test_no_weights_is_not_told_to_allow_pickles_but_a_pickle_is(tmp_path):
    folder = tmp_path / "config_only"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    for allow_pickle in (False, True):
        assert refusal(folder, allow_pickle=allow_pickle) == f"no weights in {folder} (expected model.safetensors)"
    (folder / "pytorch_model.bin").write_bytes(b"")
    assert "--allow_pickle_weights" in refusal(folder)
    check_weights(str(folder), allow_pickle=True)


def test_a_shard_its_index_names_must_be_there(saved):
    (saved / "model.safetensors").rename(saved / "model-00001-of-00002.safetensors")
    index = saved / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"weight": "model-00001-of-00002.safetensors",
                                                "bias": "model-00002-of-00002.safetensors"}}))
    assert refusal(saved) == (f"{index}: names 1 weight file(s) that are missing (model-00002-of-00002.safetensors); "
                              "copy the whole folder again")
    index.write_text("{not json")
    assert refusal(saved).startswith(f"{index}: not a readable shard index")
