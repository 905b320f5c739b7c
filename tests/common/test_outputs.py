"""shared/core/outputs.py: an output folder that holds an earlier run's results is refused, or cleaned when allowed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared.core.errors import DataError
from shared.core.outputs import CARD_MARKER, check_output_dir, earlier_results, remove_earlier_results


def args(out, overwrite=False, resume=None, train=True):
    return SimpleNamespace(output_dir=str(out), overwrite_output_dir=overwrite, resume_from_checkpoint=resume,
                           do_train=train)


def earlier_run(out):
    out.mkdir()
    for name in ("all_results.json", "eval_report.json", "test_roc.png", "thresholds.json", "model.safetensors",
                 "config.json", "notes.txt"):
        (out / name).write_text("x")
    (out / "README.md").write_text(f"---\n---\n{CARD_MARKER}\n# card\n")
    (out / "test_predictions").mkdir()
    (out / "checkpoint-4").mkdir()
    return out


def test_a_new_or_empty_folder_is_fine(tmp_path):
    assert check_output_dir(args(tmp_path / "new")) == []
    (tmp_path / "empty").mkdir()
    assert check_output_dir(args(tmp_path / "empty")) == []


def test_earlier_results_are_refused_with_one_line(tmp_path):
    out = earlier_run(tmp_path / "out")
    with pytest.raises(DataError) as info:
        check_output_dir(args(out))
    assert str(info.value).startswith(f"{out}: --output_dir holds results of an earlier run (README.md, "
                                      "all_results.json, checkpoint-4 and 4 more); pass --overwrite_output_dir")


def test_overwrite_removes_results_and_checkpoints_but_keeps_model_files(tmp_path):
    out = earlier_run(tmp_path / "out")
    names = check_output_dir(args(out, overwrite=True))
    assert "checkpoint-4" in names and "model.safetensors" not in names
    remove_earlier_results(str(out), names)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "notes.txt"]


def test_resuming_keeps_the_checkpoints_and_an_evaluation_keeps_them_too(tmp_path):
    out = earlier_run(tmp_path / "out")
    assert "checkpoint-4" not in check_output_dir(args(out, resume="auto"))
    assert "checkpoint-4" not in check_output_dir(args(out, overwrite=True, train=False))
    with pytest.raises(DataError, match="holds results of an earlier run"):
        check_output_dir(args(out, resume="false"))


def test_a_readme_that_is_not_our_model_card_is_not_a_result(tmp_path):
    (tmp_path / "README.md").write_text("# a downloaded model's own card\n")
    assert earlier_results(str(tmp_path)) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        check_output_dir(args(tmp_path / "file"))


def test_a_staged_folder_that_fails_names_the_folder_the_user_gave_never_the_hidden_staging_one(tmp_path):
    import os

    from shared.core.outputs import StagedFolder

    out = tmp_path / "export"
    with pytest.raises(DataError) as info:
        with StagedFolder(str(out)) as folder:
            raise DataError(f"ONNX Runtime cannot load the model (from {folder.path})",
                            path=os.path.join(folder.path, "model.onnx"))
    assert str(info.value) == f"{out}/model.onnx: ONNX Runtime cannot load the model (from {out})"
    assert ".partial" not in str(info.value) and not out.exists() and os.listdir(tmp_path) == []
