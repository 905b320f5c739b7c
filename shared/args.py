"""Arguments every recipe shares, the ``--config`` loader, safe model loading and the one-line error guard."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import socket
import sys
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import transformers
from transformers import HfArgumentParser, TrainingArguments

from shared.errors import DataError

logger = logging.getLogger(__name__)

# "bert-base-uncased" or "org/name": anything else that is not an existing folder is a missing local path.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


@dataclass
class ModelArguments:
    """Which pretrained model to start from and how to adapt it (shared by every recipe)."""

    model_name_or_path: str = field(
        metadata={"help": "A local model folder (works offline) or a Hugging Face Hub id (needs network)."}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run Python code shipped with the model. Off by default: only enable for code you trust."},
    )
    allow_pickle_weights: bool = field(
        default=False,
        metadata={"help": "Allow loading pickled `.bin` weights when no safetensors file exists (pickle can run code)."},
    )
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (PEFT) instead of every weight."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: str | None = field(
        default=None,
        metadata={"help": "Comma-separated module names to adapt; default: the attention projections of the architecture."},
    )
    merge_lora: bool = field(
        default=False,
        metadata={"help": "Merge the trained adapters into the base weights and save a plain model (no PEFT needed)."},
    )
    freeze_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Keep the input (token/patch) embeddings fixed. For a small BERT they are ~half the weights: "
            "updating them on a few thousand examples costs a third of each step and mostly overfits rare tokens."
        },
    )
    freeze_layers: float = field(
        default=0,
        metadata={
            "help": "Freeze the embeddings and the bottom encoder layers: a whole number N freezes N layers, a "
            "fraction in (0, 1) that share of the model's layers, rounded down (0.34: 2 of MiniLM's 6, 4 of "
            "BERT-base's 12); 0 trains everything. Frozen layers need no backward pass: each one saves ~1/6 of a "
            "6-layer model's step."
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel for training ('eager', 'sdpa', 'flash_attention_2', ...). Unset: the model's "
            "default (SDPA) on a GPU, 'eager' on a CPU, where SDPA trained a small BERT 1.2-2x slower with bf16 "
            "autocast (its math path with dropout, its fused kernel's backward without)."
        },
    )
    dropout: float | None = field(
        default=None,
        metadata={
            "help": "Set every dropout probability in the model's config (hidden, attention, classifier) to this "
            "value; unset keeps the model's own (0.1 for BERT). On a CPU, drawing the random dropout masks takes "
            "about a quarter of a small BERT's training step, so 0 trains faster (see the NER recipe README)."
        },
    )
    layerwise_lr_decay: float = field(
        default=1.0,
        metadata={"help": "Layer-wise LR decay: layer l from the top gets lr * decay**l (1.0 = same LR everywhere)."},
    )
    class_weighting: str = field(
        default="none",
        metadata={"help": "Loss weights per class from training frequencies.", "choices": ["none", "balanced", "inverse_sqrt"]},
    )
    focal_gamma: float = field(
        default=0.0, metadata={"help": "Focal loss gamma (0 = plain cross-entropy); down-weights easy examples."}
    )
    oversample: bool = field(
        default=False,
        metadata={"help": "Repeat minority-class training examples until every class is as frequent as the largest."},
    )

    def __post_init__(self):
        if self.lora_r <= 0:
            raise DataError(f"--lora_r must be positive, got {self.lora_r}")
        if not 0.0 < self.layerwise_lr_decay <= 1.0:
            raise DataError(f"--layerwise_lr_decay must be in (0, 1], got {self.layerwise_lr_decay}")
        if self.focal_gamma < 0:
            raise DataError(f"--focal_gamma must be >= 0, got {self.focal_gamma}")
        if self.freeze_layers < 0 or (self.freeze_layers > 1 and not float(self.freeze_layers).is_integer()):
            raise DataError(f"--freeze_layers must be a whole number of layers or a fraction in (0, 1), got {self.freeze_layers}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise DataError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.merge_lora and not self.use_lora:
            raise DataError("--merge_lora needs --use_lora")


@dataclass
class DataArguments:
    """Where the data comes from (shared by every recipe; recipes subclass it for their own columns)."""

    dataset_name: str | None = field(
        default=None, metadata={"help": "A Hub dataset id (needs network) instead of local files."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset configuration name."})
    train_file: str | None = field(default=None, metadata={"help": "Training data file."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation data file (model selection, thresholds)."})
    test_file: str | None = field(
        default=None,
        metadata={"help": "Test data file. With labels it is scored (test_* metrics); without, predictions only."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N validation examples."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep only the first N test examples."})
    bootstrap_resamples: int = field(
        default=1000, metadata={"help": "Bootstrap resamples for the 95% confidence intervals of test metrics (0 = off)."}
    )
    validation_split_percentage: float | None = field(
        default=None,
        metadata={"help": "Hold out this percent of the training data as the validation split when there is no "
                          "validation file: 10 by default when --do_eval needs one; given explicitly it always makes "
                          "one (and turns --do_eval on). Stratified by label (single-label); see --group_column."},
    )
    group_column: str | None = field(
        default=None,
        metadata={"help": "Table column naming the patient / note each row belongs to: validation splits and "
                          "cross-validation folds keep every group in one split. NER groups by document "
                          "automatically (i2b2/BRAT files, CoNLL -DOCSTART-); for NER JSON it names a record field. "
                          "Text classification also warns when a supplied validation/test file with the column "
                          "shares groups with training, and resamples whole groups for its test CIs."},
    )
    num_folds: int | None = field(
        default=None,
        metadata={"help": "Cross-validation: cut the training data into K folds (stratified, group-aware) and score "
                          "fold --fold as the test split, training on the rest. No --test_file. "
                          "recipes/cross_validate.py runs every fold."},
    )
    fold: int | None = field(default=None, metadata={"help": "Which fold (0 .. K-1) of --num_folds is the test split."})

    def __post_init__(self):
        for name in ("train_file", "validation_file", "test_file"):
            path = getattr(self, name)
            if path is not None and not os.path.exists(path):
                raise DataError(f"--{name} does not exist", path=path)
        for name in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise DataError(f"--{name} must be positive, got {value}")
        if self.validation_split_percentage is not None:
            if not 0 < self.validation_split_percentage < 100:
                raise DataError(f"--validation_split_percentage must be in (0, 100), got {self.validation_split_percentage}")
            if self.validation_file is not None:
                raise DataError("give --validation_file or --validation_split_percentage, not both")
        if self.group_column is not None and not self.group_column.strip():
            raise DataError("--group_column is empty")
        if self.num_folds is not None or self.fold is not None:
            if self.num_folds is None or self.fold is None:
                raise DataError("--num_folds and --fold go together (recipes/cross_validate.py runs every fold)")
            if self.num_folds < 2:
                raise DataError(f"--num_folds must be at least 2, got {self.num_folds}")
            if not 0 <= self.fold < self.num_folds:
                raise DataError(f"--fold must be in 0..{self.num_folds - 1} for --num_folds {self.num_folds}, got {self.fold}")
            if self.test_file is not None:
                raise DataError("--num_folds scores a fold of the training data as the test split: drop --test_file")


def bf16_supported() -> bool:
    """bf16 pays off on GPUs that support it and on CPUs with native bf16 (AVX512-BF16 / AMX); elsewhere it is slow."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _read_config(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise DataError("config file does not exist", path=path)
    try:
        with open(path, encoding="utf-8") as f:
            if path.endswith((".yaml", ".yml")):
                import yaml

                config = yaml.safe_load(f) or {}
            elif path.endswith(".json"):
                config = json.load(f)
            else:
                raise DataError("config must be .yaml, .yml or .json", path=path)
    except (ValueError, ImportError) as e:  # yaml.YAMLError and json.JSONDecodeError are ValueErrors
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot parse config: {str(e).splitlines()[0]}", path=path) from None
    if not isinstance(config, dict):
        raise DataError("config must be a mapping of argument names to values", path=path)
    return config


def parse_args(*dataclass_types, defaults: dict[str, Any] | None = None, args: list[str] | None = None):
    """Parse dataclass arguments from the command line, optionally seeded by ``--config file.yaml|json``.

    Precedence: command-line flags > config file > ``defaults`` (the recipe's own) > dataclass defaults.
    """
    argv = list(sys.argv[1:] if args is None else args)
    config: dict[str, Any] = {}
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise DataError("--config needs a file path")
        config_path = argv[i + 1]
        del argv[i : i + 2]
        config = _read_config(config_path)
    elif len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):  # transformers' own convention
        config_path = argv[0]
        config, argv = _read_config(config_path), []

    parser = HfArgumentParser(dataclass_types)
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(config) - known)
    if unknown:
        raise DataError(f"unknown argument(s) in config: {', '.join(unknown)}", path=config_path)
    unknown = sorted(set(defaults or {}) - known)
    if unknown:
        raise ValueError(f"recipe defaults name unknown arguments: {', '.join(unknown)}")
    merged = {**(defaults or {}), **config}
    parser.set_defaults(**merged)
    for action in parser._actions:  # a value from the config satisfies a required flag
        if action.dest in merged:
            action.required = False
    return parser.parse_args_into_dataclasses(args=argv)


def recipe_defaults() -> dict[str, Any]:
    """Training defaults shared by the recipes: fast on this hardware, safe for clinical data."""
    return {
        "bf16": bf16_supported(),
        "use_cpu": not torch.cuda.is_available(),
        "report_to": "none",
        "push_to_hub": False,
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_strategy": "epoch",
        "disable_tqdm": True,
    }


def setup_logging(training_args: TrainingArguments) -> None:
    """Log to stderr from the main process only; never log examples (clinical text stays out of logs)."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stderr)],
    )
    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.getLogger().setLevel(level)
    transformers.utils.logging.set_verbosity(logging.WARNING)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.disable_progress_bar()
    import datasets

    datasets.utils.logging.set_verbosity(logging.WARNING)
    datasets.disable_progress_bars()


def attention_implementation(model_args: ModelArguments, device) -> str | None:
    """``--attn_implementation``, or 'eager' when training on a CPU (see its help); None keeps the model's default."""
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


def classification_config(model_args: ModelArguments, label_names: list[str], multi_label: bool):
    """The model's config with a fresh classification head over ``label_names`` (single- or multi-label)."""
    from transformers import AutoConfig

    return load_pretrained(
        AutoConfig,
        model_args,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )


def load_for_training(auto_cls, model_args: ModelArguments, config, device, **kwargs):
    """The pretrained model to fine-tune: ``config`` with ``--dropout`` applied, the ``--attn_implementation`` kernel
    (eager when training on a CPU), safe loading as in :func:`load_pretrained`."""
    if changed := set_dropout(config, model_args.dropout):
        logger.info("dropout %g (%s)", model_args.dropout, ", ".join(changed))
    return load_pretrained(auto_cls, model_args, config=config,
                           attn_implementation=attention_implementation(model_args, device), **kwargs)


def load_pretrained(auto_cls, model_args: ModelArguments, **kwargs):
    """``auto_cls.from_pretrained`` with safe defaults and a clear one-line error when the model cannot be had.

    Weights load only from safetensors unless ``--allow_pickle_weights``; remote code runs only if asked.
    """
    name = model_args.model_name_or_path
    is_processor = "Tokenizer" in auto_cls.__name__ or "Processor" in auto_cls.__name__
    if not is_processor:
        kwargs.setdefault("use_safetensors", not model_args.allow_pickle_weights)
    kwargs.setdefault("trust_remote_code", model_args.trust_remote_code)
    if os.path.isdir(name):
        if not is_processor:
            files = os.listdir(name)
            has_safetensors = any(f.endswith(".safetensors") for f in files)
            if not has_safetensors and not model_args.allow_pickle_weights:
                raise DataError(
                    "model folder has no safetensors weights; convert it, or pass --allow_pickle_weights "
                    "if you trust the pickled .bin file",
                    path=name,
                )
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
        raise


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


def main_guard(main: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``main``; a :class:`DataError` becomes one line on stderr and exit status 2 (no traceback).

    In a multi-process run (torchrun / accelerate launch) the process group is destroyed before returning.
    """

    def wrapped(*args, **kwargs):
        from shared.distributed import end_process_group

        try:
            result = main(*args, **kwargs)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            end_process_group()
            raise SystemExit(2) from None
        end_process_group()  # under torchrun / accelerate launch: leave the process group cleanly, as torch asks
        return result

    return wrapped
