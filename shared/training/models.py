"""Loading models safely: a pretrained checkpoint to fine-tune, or a folder a recipe saved, with one-line errors.

- Weights load from safetensors only unless ``--allow_pickle_weights``; code shipped with a model runs only with
  ``--trust_remote_code``. A folder that cannot serve, or a Hub id that cannot be reached, is a one-line
  :class:`DataError`.
- :func:`load_for_training` says in ONE line what fine-tuning adds on purpose (a new classification head, unused
  pooler weights) instead of transformers' load-report table, and keeps any other missing, unexpected or
  mismatched weight loud.
- :func:`load_trained` is the one loader of what :func:`shared.training.lora.save_model` wrote: a plain (or merged)
  model folder, or a LoRA adapter + head over its base model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import socket
import urllib.parse
from typing import Callable

from shared.core.args import given
from shared.core.errors import DataError
from shared.training.lora import apply_lora, head_modules
from shared.training.optim import freeze

logger = logging.getLogger(__name__)

# "bert-base-uncased" or "org/name": anything else that is not an existing folder is a missing local path.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
ADAPTER_CONFIG = "adapter_config.json"
# What transformers / PEFT load a model's weights from: safetensors (one file, shards named by their index, an adapter)
MODEL_WEIGHTS_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
MODEL_WEIGHTS = {MODEL_WEIGHTS_FILE, SHARD_INDEX, "adapter_model.safetensors"}
PICKLED_WEIGHTS = {"pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin"}
LFS_POINTER = b"version https://git-lfs"
# Checkpoint weights a fine-tuned classifier does not use, on purpose: poolers (token classification has none) and
# pre-training heads (masked-LM, next-sentence, ...).
PRETRAINING_ONLY = re.compile(r"(^|\.)(pooler|cls|lm_head|mask_token)(\.|$)")
# Architectures whose position ids start after the padding index: max_position_embeddings - (pad_token_id + 1).
PADDING_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "bart", "mbart"}


# ------------------------------------------------------------------------------------------------ loading
def require_fast(tokenizer, why: str) -> None:
    """Word alignment and sliding windows need what only Rust-backed ("fast") tokenizers provide."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"tokenizer {type(tokenizer).__name__} is not a fast (Rust-backed) tokenizer; {why}. "
                        "Use a model that ships a tokenizer.json.")


def load_pretrained(auto_cls, model_args, name: str | None = None, **kwargs):
    """``auto_cls.from_pretrained`` with safe defaults and a clear one-line error when the model cannot be had.

    ``name`` defaults to ``--model_name_or_path``. Weights load only from safetensors unless
    ``--allow_pickle_weights``; remote code runs only if asked.
    """
    name = name or model_args.model_name_or_path
    is_processor = "Tokenizer" in auto_cls.__name__ or "Processor" in auto_cls.__name__
    is_config = "Config" in auto_cls.__name__
    if not (is_processor or is_config):
        kwargs.setdefault("use_safetensors", not model_args.allow_pickle_weights)
    kwargs.setdefault("trust_remote_code", model_args.trust_remote_code)
    if os.path.isdir(name):
        onnx_export = is_config and os.path.isfile(os.path.join(name, "model.onnx"))  # no PyTorch weights by design
        if not is_processor:  # the config too: a folder whose weights cannot load fails on its first load
            check_weights(name, model_args.allow_pickle_weights, require_model=not onnx_export)
    elif not HUB_ID.fullmatch(name):
        raise DataError("model folder does not exist", path=name)
    elif not hub_reachable():  # only a cached copy can serve: fail in seconds, not after a minute of retries
        kwargs["local_files_only"] = True
    try:
        return auto_cls.from_pretrained(name, **kwargs)
    except OSError as e:
        if os.path.isdir(name):
            raise DataError(f"cannot load {auto_cls.__name__}: {str(e).splitlines()[0]}", path=name) from None
        raise DataError(hub_unreachable_message(name)) from None
    except ValueError as e:  # transformers refuses custom code (config.json auto_map) without trust_remote_code
        if "trust_remote_code" in str(e) and not kwargs["trust_remote_code"]:
            raise DataError(
                "the model's config.json asks to run Python code shipped with it (auto_map); pass "
                "--trust_remote_code only if you trust that code",
                path=name,
            ) from None
        raise DataError(f"cannot load {auto_cls.__name__}: {str(e).splitlines()[0]}", path=name) from None


def check_weights(folder: str, allow_pickle: bool = False, require_model: bool = True) -> None:
    """A one-line :class:`DataError` for a model folder whose weights cannot load, before anything is: no weights
    at all, only pickled ones (without ``--allow_pickle_weights``), a shard its index names that is missing, or any
    ``.safetensors`` file cut short or damaged (an interrupted copy or save; its header and size are checked, not
    its tensors). Every loader of a folder (training, evaluation, predict.py, serve.py, the ONNX export) passes
    here through :func:`load_pretrained`'s first call, the config's."""
    names = set(os.listdir(folder))
    if SHARD_INDEX in names:
        try:
            with open(os.path.join(folder, SHARD_INDEX), encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise DataError("not a readable shard index (a JSON object with a 'weight_map'); copy or save the "
                            "model again", path=os.path.join(folder, SHARD_INDEX)) from None
        missing = [shard for shard in shards if shard not in names]
        if missing:
            raise DataError(f"names {len(missing)} weight file(s) that are missing ({', '.join(missing[:3])}"
                            f"{' ...' if len(missing) > 3 else ''}); copy the whole folder again",
                            path=os.path.join(folder, SHARD_INDEX))
    for name in sorted(names):
        if name.endswith(".safetensors"):
            _check_safetensors(os.path.join(folder, name))
    if not require_model or names & MODEL_WEIGHTS:
        return
    pickled = sorted(names & PICKLED_WEIGHTS)
    if not pickled:
        if ENSEMBLE_KEY in names_in_config(folder):
            raise DataError("this folder is an ensemble of fold models (cross_validate.py --keep_fold_models): "
                            "predict.py, serve.py and pipeline.py read it; to train from, evaluate or export one "
                            "model, pass a member folder (fold_0, ...)", path=folder)
        raise DataError(f"no weights in {folder} (expected {MODEL_WEIGHTS_FILE})")
    if not allow_pickle:
        raise DataError("model folder has no safetensors weights; convert it, or pass --allow_pickle_weights if you "
                        "trust the pickled .bin file", path=folder)


ENSEMBLE_KEY = "ensemble"  # the config.json entry of a folder of fold models (shared.deploy.ensemble)


def names_in_config(folder: str) -> set[str]:
    """The top-level keys of a folder's ``config.json`` (none when it is missing or unreadable)."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8-sig") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return set()
    return set(config) if isinstance(config, dict) else set()


def _check_safetensors(path: str) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with open(path, "rb") as f:
            start = f.read(len(LFS_POINTER))
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror or type(e).__name__}", path=path) from None
    if start == LFS_POINTER:
        raise DataError("a Git LFS pointer, not the weights: fetch them (git lfs pull) or download the model again",
                        path=path)
    try:
        with safe_open(path, framework="pt"):  # reads the header; fails when the file is shorter than it says
            pass
    except (SafetensorError, OSError) as e:
        reason = str(e).splitlines()[0].removeprefix("Error while deserializing header: ")[:200]
        raise DataError(f"{os.path.basename(path)} is incomplete or damaged ({reason}); copy or save it again",
                        path=path) from None


def hub_unreachable_message(name: str) -> str:
    return (
        f"'{name}' is not a local folder and cannot be loaded from the Hugging Face Hub (offline or unknown id); "
        "download it where you have network (`hf download <id> --local-dir models/<name>`) and pass that "
        "folder: --model_name_or_path models/<name>"
    )


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub (or ``HF_ENDPOINT``) answers a TCP connection; False at once when ``HF_HUB_OFFLINE`` is set.

    When it does not, a Hub id can still load from the local cache (``local_files_only``).
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urllib.parse.urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


@contextlib.contextmanager
def _no_load_report():
    """transformers 5 logs a table of missing/unexpected weights; the caller reports them itself. (A filter, not a
    higher level: transformers runs a tensor-parallel check, with its own warning, when that logger's level is set.)"""
    report_logger = logging.getLogger("transformers.modeling_utils")
    dropped = _DropLoadReport()
    report_logger.addFilter(dropped)
    try:
        yield
    finally:
        report_logger.removeFilter(dropped)


def report_loading(model, info: dict, num_labels: int | None = None) -> str:
    """One INFO line for what fine-tuning changes on purpose (new head weights, unused pooler / pre-training head),
    a WARNING for every other missing, unexpected or mismatched weight. Returns the INFO line."""

    heads = tuple(f"{name}." for name in head_modules(model))
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(info.get("mismatched_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    new_head = [k for k in missing if k.startswith(heads)] + [k for k, *_ in mismatched if k.startswith(heads)]
    unused = [k for k in unexpected if PRETRAINING_ONLY.search(k)]
    parts = []
    if new_head:
        names = sorted({k.split(".", 1)[0] for k in new_head})
        parts.append(f"new {'/'.join(names)} head" + (f" for {num_labels} labels" if num_labels else ""))
    if unused:
        groups = sorted({PRETRAINING_ONLY.search(k).group(2) for k in unused})
        parts.append(f"{', '.join(groups)} weights of the checkpoint unused")
    line = "; ".join(parts)
    if line:
        logger.info(line)
    for what, keys in (("not in the checkpoint (initialised at random)", [k for k in missing if not k.startswith(heads)]),
                       ("in the checkpoint but not in the model (ignored)", [k for k in unexpected if k not in unused]),
                       ("of another shape in the checkpoint (initialised at random)",
                        [k for k, *_ in mismatched if not k.startswith(heads)])):
        if keys:
            logger.warning("%d weight(s) %s: %s", len(keys), what, ", ".join(keys[:10]) + (" ..." if len(keys) > 10 else ""))
    return line


def load_for_training(auto_cls, model_args, config, device, **kwargs):
    """The pretrained model to fine-tune: ``config`` with ``--dropout`` applied, the ``--attn_implementation`` kernel
    (eager when training on a CPU), safe loading as in :func:`load_pretrained`, one line on what was new."""
    if changed := set_dropout(config, model_args.dropout):
        logger.info("dropout %g (%s)", model_args.dropout, ", ".join(changed))
    with _no_load_report():
        model, info = load_pretrained(auto_cls, model_args, config=config, output_loading_info=True,
                                      attn_implementation=attention_implementation(model_args, device), **kwargs)
    report_loading(model, info, getattr(config, "num_labels", None))
    return model


def load_trained(auto_cls, model_args, prepare_base: Callable | None = None, **kwargs):
    """A model folder a recipe saved (``--model_name_or_path``): plain or merged, or LoRA adapter + head.

    An adapter folder names its base model (``adapter_config.json``) and carries the trained config (labels); the
    base is loaded with that config and the adapter (with the head's weights) put on top. A vocabulary that grew in
    training (the concept recipes' marker tokens: the config's ``vocab_size``) is restored first: the base loads at
    its own size and its input embeddings are resized, so that the adapter's trained rows land on rows that exist.
    ``prepare_base(config, base_name)`` may adjust the config for the base checkpoint and return a function applied
    to the loaded base before the adapter (the image recipe re-interpolates position embeddings this way).
    """
    folder = model_args.model_name_or_path
    adapter_config = os.path.join(folder, ADAPTER_CONFIG)
    if not os.path.isfile(adapter_config):
        return load_pretrained(auto_cls, model_args, **kwargs)
    from peft import PeftModel
    from transformers import AutoConfig

    with open(adapter_config, encoding="utf-8") as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base:
        raise DataError(f"{ADAPTER_CONFIG} names no base model (base_model_name_or_path)", path=folder)
    config = load_pretrained(AutoConfig, model_args)
    after = prepare_base(config, base) if prepare_base else None
    base_args = dataclasses.replace(model_args, model_name_or_path=base)
    trained_vocab = _vocab_size(config)
    if trained_vocab is not None:
        base_vocab = _vocab_size(load_pretrained(AutoConfig, base_args))
        if base_vocab is not None and base_vocab != trained_vocab:
            config.get_text_config().vocab_size = base_vocab  # the checkpoint's embeddings load as they are
        else:
            trained_vocab = None
    with _no_load_report():  # the head's weights come with the adapter
        model = load_pretrained(auto_cls, base_args, config=config, **kwargs)
    if trained_vocab is not None:
        # rows the base lacks: the adapter brings the trained ones (trainable_token_indices), so no mean-resizing
        model.resize_token_embeddings(trained_vocab, mean_resizing=False)
    if after is not None:
        after(model)
    return PeftModel.from_pretrained(model, folder)


def _vocab_size(config) -> int | None:
    """The token vocabulary a config's input embeddings hold (a text model's), or None (images)."""
    size = getattr(config.get_text_config(), "vocab_size", None)
    return size if isinstance(size, int) else None


def model_for_run(auto_cls, model_args, config, training_args, resize: Callable | None = None,
                  prepare_base: Callable | None = None, trainable_tokens: list[int] | None = None, **kwargs):
    """Step 6 of every recipe: ``(model, frozen encoder layers)``. Training: the pretrained model with a fresh head
    (``config``), ``resize(model)`` if given (the image recipe's resolution, the concept recipes' added tokens),
    ``--freeze_layers`` / ``--freeze_embeddings``, then LoRA adapters with ``--use_lora`` (the input-embedding rows
    of ``trainable_tokens`` trained and saved with them). Otherwise: the fine-tuned folder as saved
    (:func:`load_trained`; ``prepare_base`` as there), resized the same way."""

    if training_args.do_train:
        model = load_for_training(auto_cls, model_args, config, training_args.device, **kwargs)
    else:  # --attn_implementation as given (the CPU-training default is eager): the kernel the scores came from
        if model_args.attn_implementation:
            kwargs.setdefault("attn_implementation", model_args.attn_implementation)
        model = load_trained(auto_cls, model_args, prepare_base=prepare_base, **kwargs)
    if resize is not None:
        resize(model)
    if not training_args.do_train:
        return model, 0
    frozen_layers = freeze(model, model_args)
    if model_args.use_lora:
        model = apply_lora(model, model_args, trainable_tokens=trainable_tokens)
    return model, frozen_layers


# ------------------------------------------------------------------------------------------------ configuration
def attention_implementation(model_args, device) -> str | None:
    """``--attn_implementation``, or 'eager' when training on a CPU (faster there); None keeps the model's default."""
    if model_args.attn_implementation:
        return model_args.attn_implementation
    return "eager" if getattr(device, "type", device) == "cpu" else None


def set_dropout(config, probability: float | None) -> list[str]:
    """Set every ``*dropout*`` probability of a model config (``hidden_dropout_prob``, ``attention_probs_dropout_prob``,
    ``classifier_dropout``, DistilBERT's ``dropout``, ...) to ``probability``; returns the names changed.

    ``None`` leaves the config alone. Names vary by architecture, so this matches them by name rather than listing them.
    """
    if probability is None:
        return []
    names = [k for k, v in config.to_dict().items()
             if "dropout" in k and (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))]
    for name in names:
        setattr(config, name, probability)
    return names


def classification_config(model_args, label_names: list[str], multi_label: bool = False, **kwargs):
    """The model's config with a fresh classification head over ``label_names`` (single- or multi-label)."""
    from transformers import AutoConfig

    problem = {"problem_type": "multi_label_classification" if multi_label else "single_label_classification"}
    return load_pretrained(
        AutoConfig,
        model_args,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        **{**problem, **kwargs},
    )


def max_sequence_length(requested: int, tokenizer, config) -> int:
    """``--max_seq_length``, capped by what the model can read: ``tokenizer.model_max_length`` and the config's
    ``max_position_embeddings`` (older clinical BERT folders set no ``model_max_length``). Warns when it caps."""
    limits = []
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 1_000_000:  # unset is a huge sentinel
        limits.append((tokenizer_max, "tokenizer.model_max_length"))
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        if getattr(config, "model_type", None) in PADDING_OFFSET_POSITIONS:
            positions -= (getattr(config, "pad_token_id", None) or 0) + 1
        limits.append((positions, "max_position_embeddings"))
    if not limits:
        return requested
    limit, source = min(limits)
    if requested > limit:
        logger.warning("--max_seq_length %d is longer than the model reads (%s %d): using %d",
                       requested, source, limit, limit)
        return limit
    return requested


def requested_max_length(data_args, config, training: bool) -> int:
    """``--max_seq_length`` as given; a run that only evaluates or predicts with a fine-tuned folder, without the flag,
    reads in the windows the folder was trained with (``max_seq_length`` in its config.json), as ``predict.py`` does."""

    saved = None if training else getattr(config, "max_seq_length", None)
    return data_args.max_seq_length if saved is None or "max_seq_length" in given(data_args) else int(saved)


def trained_labels(config) -> tuple[list[str], bool]:
    """``(label names in id order, multi-label?)`` of a fine-tuned classifier's config."""
    names = [config.id2label[i] for i in range(config.num_labels)]
    return names, config.problem_type == "multi_label_classification"
