"""Resuming a stopped run: which checkpoint to resume from, and a training order that a resumed run reproduces.

``--resume_from_checkpoint`` takes a checkpoint folder, ``true`` for the newest *complete* ``checkpoint-<step>``
in ``--output_dir``, or ``auto``: that checkpoint if there is one, a fresh start otherwise (what a restart script on a
preemptible machine runs every time). Trainer writes a checkpoint in place (weights, optimizer, scheduler, RNG states, and
``trainer_state.json`` last), not through a temporary folder: a run killed while saving leaves a ``checkpoint-<step>``
without ``trainer_state.json``, which ``transformers.trainer_utils.get_last_checkpoint`` would still pick (and
``Trainer.train`` then fails on). :func:`resolve_checkpoint` skips such folders.

:class:`EpochSeededSampling` makes the length-grouped training order (``train_sampling_strategy="group_by_length"``)
a function of the seed and the epoch. Trainer's ``LengthGroupedSampler`` draws its permutation from the global torch
RNG when an epoch starts; a run resumed in the middle of epoch 2 or later starts that epoch with a different RNG
state than the uninterrupted run had (Trainer restores the checkpoint's RNG only after skipping the batches already
trained), so it skipped the wrong batches and trained on a different order. Seeded per epoch, as accelerate's
``SeedableRandomSampler`` does for random sampling, the resumed run ends with exactly the same weights.
"""

from __future__ import annotations

import json
import logging
import os
import re

import torch
from transformers import TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from shared.core.errors import DataError

logger = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"  # written last by Trainer._save_checkpoint: its presence marks a complete save
LATEST = {"true", "yes", "1", "last", "latest"}
AUTO = "auto"
NONE = {"", "false", "no", "0", "none"}


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint folder whose save finished (a readable ``trainer_state.json``)."""
    try:
        with open(os.path.join(path, TRAINER_STATE), encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The ``checkpoint-<step>`` folder in ``output_dir`` with the highest step whose save finished, or None."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        ((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := CHECKPOINT.match(name))), reverse=True
    )
    for _, name in steps:
        path = os.path.join(output_dir, name)
        if os.path.isdir(path):
            if is_complete_checkpoint(path):
                return path
            logger.warning("skipping %s: incomplete (the run stopped while saving it)", path)
    return None


def resolve_checkpoint(training_args) -> str | None:
    """What to pass to ``trainer.train(resume_from_checkpoint=...)`` for ``--resume_from_checkpoint``.

    None (no flag, ``false``) starts afresh; ``true`` (also ``True``, ``last``, a YAML ``true``) is the newest complete
    checkpoint in ``--output_dir``; ``auto`` is that checkpoint, or None when there is none; anything else must be a
    complete checkpoint folder. Problems are a :class:`DataError` (one line), raised before any training.
    """
    value = training_args.resume_from_checkpoint
    if value is None or value is False:
        return None
    text = str(value).strip()
    if text.lower() in NONE:
        return None
    if not training_args.do_train:
        raise DataError("--resume_from_checkpoint continues training: it needs --do_train")
    if text.lower() == AUTO:
        found = last_complete_checkpoint(training_args.output_dir)
        logger.info("--resume_from_checkpoint auto: %s", "resuming" if found else "no complete checkpoint, starting fresh")
        return found
    if value is True or text.lower() in LATEST:
        found = last_complete_checkpoint(training_args.output_dir)
        if found is None:
            raise DataError("--resume_from_checkpoint true: no complete checkpoint-<step> folder in --output_dir "
                            "(save them with --save_strategy steps --save_steps N)", path=training_args.output_dir)
        return found
    if not os.path.isdir(text):
        raise DataError("--resume_from_checkpoint folder does not exist", path=text)
    if not is_complete_checkpoint(text):
        raise DataError(f"not a complete Trainer checkpoint (no readable {TRAINER_STATE}: the run stopped while saving "
                        "it); resume from an earlier checkpoint, or pass --resume_from_checkpoint true", path=text)
    return text


def load_checkpoint_weights(model, checkpoint: str) -> None:
    """Load a checkpoint's weights into ``model`` the way ``from_pretrained`` does, key renaming included.

    ``Trainer.train(resume_from_checkpoint=...)`` reads ``model.safetensors`` with a plain non-strict
    ``load_state_dict``. transformers 5 saves some architectures (ViT, ...) under their original checkpoint key names
    and renames them only in ``from_pretrained``, so that load matches just the classifier head and leaves the encoder
    at its starting weights, with a warning (huggingface/transformers#43701). Loaded here first, Trainer's own load
    then only rewrites the keys that matched, with the same values. Adapters (PEFT), wrappers that are not a
    ``PreTrainedModel`` (saved as their raw state dict, which loads as it is) and FSDP / DeepSpeed are left to Trainer.
    """
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel) or getattr(model, "_hf_peft_config_loaded", False):
        return
    if not any(os.path.isfile(os.path.join(checkpoint, name))
               for name in ("model.safetensors", "model.safetensors.index.json")):
        return
    loaded = type(model).from_pretrained(checkpoint, config=model.config, use_safetensors=True)
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded


def train_with_resume(trainer, checkpoint: str | None):
    """``trainer.train()``, resuming from ``checkpoint`` (what :func:`resolve_checkpoint` returned, or None) with every
    weight restored (:func:`load_checkpoint_weights`). With ``--load_best_model_at_end`` the best checkpoint's weights
    are reloaded the same way afterwards (Trainer's own reload has the same key-renaming gap)."""
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
    plain = not (getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False))
    if checkpoint is not None and plain:
        load_checkpoint_weights(trainer.model, checkpoint)
    output = trainer.train(resume_from_checkpoint=checkpoint)
    best = trainer.state.best_model_checkpoint
    if trainer.args.load_best_model_at_end and best and os.path.isdir(best) and plain:
        load_checkpoint_weights(trainer.model, best)
    return output


def data_seed(training_args) -> int:
    """The seed of the training data's order and augmentation: ``--data_seed``, else ``--seed`` (as Trainer does)."""
    return training_args.data_seed if training_args.data_seed is not None else training_args.seed


def _find_sampler(obj, depth: int = 4):
    """The ``LengthGroupedSampler`` inside a (possibly accelerate-wrapped) training DataLoader, or None."""
    if isinstance(obj, LengthGroupedSampler):
        return obj
    if depth == 0 or obj is None:
        return None
    for name in ("sampler", "batch_sampler", "base_dataloader"):
        found = _find_sampler(getattr(obj, name, None), depth - 1)
        if found is not None:
            return found
    return None


class EpochSeededSampling(TrainerCallback):
    """Make each epoch's training data a function of the seed and the epoch, so that a run resumed mid-epoch skips
    exactly the batches it had trained and continues with the same ones (see the module docstring):

    - Trainer's length-grouped sampler is seeded with ``data_seed`` (or ``seed``) + epoch (a no-op for the random
      sampler, which accelerate already seeds per epoch);
    - a training dataset with ``set_epoch`` (``shared.images.augment.PixelDataset``: augmentation seeded per image and
      epoch) is told the epoch. accelerate's ``DataLoaderShard.set_epoch`` skips the dataset when the sampler also
      has ``set_epoch``, which is the case in a resumed epoch, so it is done here.
    """

    def __init__(self):
        self.sampler = None
        self.dataset = None
        self.generator = torch.Generator()

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.sampler = _find_sampler(train_dataloader)
        if self.sampler is not None:
            self.sampler.generator = self.generator
        dataset = getattr(train_dataloader, "dataset", None)
        self.dataset = dataset if hasattr(dataset, "set_epoch") else None

    def on_epoch_begin(self, args, state, control, **kwargs):
        # Called before each epoch's DataLoader iterator is created; a resumed run's state.epoch is the checkpoint's
        # (e.g. 1.5 in the middle of the second epoch), so int() is the index of the epoch about to run.
        epoch = int(state.epoch or 0)
        if self.sampler is not None:
            self.generator.manual_seed(data_seed(args) + epoch)
        if self.dataset is not None:
            self.dataset.set_epoch(epoch)
