"""The output folder of a run: results of two runs never mix in one ``--output_dir``.

A folder that already holds results of an earlier run (result, report and prediction files, plots, a model card,
checkpoints) is refused before anything is read or written, unless ``--overwrite_output_dir`` (transformers'
convention) or ``--resume_from_checkpoint`` says that this run may write there. What the earlier run left is then
removed just before this run writes its own files, so a file this run does not produce (say ``eval_report.json``
when it has no validation split) cannot be mistaken for one of its results. Model weights, tokenizer and config
files are left in place: an evaluate-only run may read its model from the folder it writes to. Checkpoints are
removed only when an overwriting run trains (a later ``--resume_from_checkpoint auto`` must not pick up a
checkpoint of the earlier run).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil

from shared.core.errors import DataError
from shared.core.resume import NONE

logger = logging.getLogger(__name__)

# Files and folders a recipe writes besides the model itself.
RESULT_PATTERNS = (
    "all_results.json", "*_results.json", "*_report.json", "*_predictions", "*_predictions.*", "*.png",
    "thresholds.json",
)
CARD = "README.md"  # counts only when it is a model card this project wrote (it carries CARD_MARKER)
CARD_MARKER = "<!-- model card written by the medical fine-tuning recipes -->"
CHECKPOINT_PATTERN = "checkpoint-*"


def earlier_results(output_dir: str) -> list[str]:
    """Names in ``output_dir`` that an earlier run wrote (results, reports, predictions, plots, card, checkpoints)."""
    if not os.path.isdir(output_dir):
        return []
    patterns = RESULT_PATTERNS + (CHECKPOINT_PATTERN,)
    names = [name for name in os.listdir(output_dir) if any(fnmatch.fnmatch(name, p) for p in patterns)]
    if _is_our_card(os.path.join(output_dir, CARD)):
        names.append(CARD)
    return sorted(names)


def _is_our_card(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return CARD_MARKER in f.read(4096)
    except OSError:
        return False


def check_output_dir(training_args) -> list[str]:
    """What this run must remove from ``--output_dir`` before it writes (see the module docstring).

    Raises a one-line :class:`DataError` when the folder holds an earlier run's results and neither
    ``--overwrite_output_dir`` nor ``--resume_from_checkpoint`` is given. Reads only; :func:`remove_earlier_results`
    does the removing.
    """

    output_dir = training_args.output_dir
    overwrite = getattr(training_args, "overwrite_output_dir", False)
    resume = training_args.resume_from_checkpoint
    resuming = training_args.do_train and resume not in (None, False) and str(resume).strip().lower() not in NONE
    training = training_args.do_train
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise DataError("--output_dir is a file, not a folder", path=output_dir)
    found = earlier_results(output_dir)
    if found and not (overwrite or resuming):
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise DataError(f"--output_dir holds results of an earlier run ({shown}); pass --overwrite_output_dir to "
                        "replace them, --resume_from_checkpoint to continue that run, or choose a new folder",
                        path=output_dir)
    if overwrite and training and not resuming:  # an overwriting run that trains makes its own checkpoints
        return found
    return [name for name in found if not fnmatch.fnmatch(name, CHECKPOINT_PATTERN)]  # a resumed run needs them


def remove_earlier_results(output_dir: str, names: list[str]) -> None:
    """Delete ``names`` (from :func:`check_output_dir`) from ``output_dir``; logs how many, never which."""
    for name in names:
        path = os.path.join(output_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
    if names:
        logger.info("removed %d file(s)/folder(s) of an earlier run from --output_dir", len(names))


# ------------------------------------------------------------------------------------------------ predict.py
PREDICT_RESULTS = "predict_results.json"  # written last by every predict.py run: marks a folder it may replace


def check_prediction_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse, before anything is read, a ``--output_dir`` that is a file or holds files, unless it holds an earlier
    predict.py run's predictions and ``--overwrite_output_dir`` is given."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise DataError("--output_dir is a file, not a folder", path=output_dir)
    names = [n for n in os.listdir(output_dir) if not n.startswith(".")] if os.path.isdir(output_dir) else []
    if not names:
        return
    if PREDICT_RESULTS not in names:
        raise DataError("--output_dir holds files that predict.py did not write; choose a new or empty folder",
                        path=output_dir)
    if not overwrite:
        raise DataError("--output_dir holds the predictions of an earlier run; pass --overwrite_output_dir to "
                        "replace them, or choose a new folder", path=output_dir)


class StagedFolder:
    """Write a command's files into a sibling folder and put it in place of ``output_dir`` only when all are written,
    so a failed or interrupted run leaves nothing half-written (and an earlier run's folder as it was).

        with StagedFolder(output_dir) as folder:
            write(folder.path, ...)
    """

    def __init__(self, output_dir: str):
        self.output_dir = os.path.normpath(output_dir)
        parent = os.path.dirname(os.path.abspath(self.output_dir))
        os.makedirs(parent, exist_ok=True)
        import tempfile

        self.path = tempfile.mkdtemp(prefix="." + os.path.basename(self.output_dir) + ".partial-", dir=parent)

    def __enter__(self) -> "StagedFolder":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            if isinstance(value, DataError) and self.path in str(value):  # never name the hidden staging folder
                raise value.renamed(self.path, self.output_dir) from None
            return
        if os.path.isdir(self.output_dir):
            shutil.rmtree(self.output_dir)
        os.replace(self.path, self.output_dir)
