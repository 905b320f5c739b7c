"""Arguments every recipe shares, ``--config`` files, logging and the one-line error guard of every command line.

Precedence: command-line flags > ``--config`` file (YAML or JSON) > the recipe's ``RECIPE_DEFAULTS`` > the dataclass
defaults. Whatever a user can get wrong on the command line or in a config (a misspelt flag, a value of the wrong
type, an unknown key) is one :class:`DataError` line naming the flag, or the config file, line and key;
:func:`main_guard` prints it as ``error: ...`` and exits with status 2, no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import transformers
from transformers import HfArgumentParser

from shared.core.distributed import end_process_group
from shared.core.errors import DataError
from shared.core.outputs import check_output_dir
from shared.core.resume import resolve_checkpoint

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Which pretrained model to start from and how to adapt it (shared by every recipe)."""

    _argument_group_name = "model"

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
        metadata={"help": "Comma-separated module names to adapt (a list in a config file); default: the attention "
                          "query/value projections of the architecture (CNNs: their convolutions, see the image "
                          "recipe's README)."},
    )
    merge_lora: bool = field(
        default=False,
        metadata={"help": "Merge the trained adapters into the base weights and save a plain model (no PEFT needed)."},
    )
    freeze_embeddings: bool = field(
        default=False, metadata={"help": "Keep the input (token or patch) embeddings, a CNN's stem, fixed."}
    )
    freeze_layers: float = field(
        default=0,
        metadata={"help": "Freeze the embeddings and the bottom encoder layers (a CNN's stages): a whole number N "
                          "freezes N layers, a fraction in (0, 1) that share of the model's layers, rounded down; 0 "
                          "trains everything."},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention kernel for training ('eager', 'sdpa', 'flash_attention_2', ...). Unset: the "
                          "model's default on a GPU, 'eager' on a CPU (faster there; see docs/running-a-recipe.md)."},
    )
    dropout: float | None = field(
        default=None,
        metadata={"help": "Set every dropout probability in the model's config (hidden, attention, classifier) to "
                          "this value; unset keeps the model's own."},
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

    def lora_targets(self) -> list[str] | None:
        """``--lora_target_modules`` as a list (None: the architecture's defaults)."""
        if not self.lora_target_modules:
            return None
        return [t.strip() for t in self.lora_target_modules.split(",") if t.strip()]


@dataclass
class ClassifierModelArguments(ModelArguments):
    """Model arguments of the recipes that classify whole examples (text, images): they can also oversample."""

    oversample: bool = field(
        default=False,
        metadata={"help": "Repeat minority-class training examples until every class is as frequent as the largest "
                          "(single-label data)."},
    )
    calibration: str = field(
        default="temperature",
        metadata={"help": "After training, fit temperature scaling on the validation split (one temperature; one per "
                          "label for multi-label) and fold it into the classifier head, so the saved model's "
                          "probabilities are calibrated; multi-label thresholds are then tuned on them. Needs a "
                          "validation split (otherwise nothing is fitted). 'none' keeps the raw probabilities.",
                  "choices": ["temperature", "none"]},
    )


@dataclass
class DataArguments:
    """Where the data comes from (shared by every recipe; recipes subclass it for their own columns)."""

    _argument_group_name = "data"

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
    drop_fold: bool = field(
        default=False,
        metadata={"help": "With --num_folds and --fold: leave that fold out of the training data and score nothing on "
                          "it (recipes/tune.py's nested cross-validation: a trial never scores the outer fold)."},
    )
    explain: int = field(
        default=0,
        metadata={"help": "Explain the predictions for the first N test examples (text: word attributions by "
                          "integrated gradients, as {test}_explanations.html/.json; images: heat-map overlays in "
                          "test_explanations/: attention rollout for ViTs, Grad-CAM for CNNs). These files hold note text / image content: sensitive, like the "
                          "predictions. 0: none."},
    )

    def __post_init__(self):
        if self.dataset_config_name is not None and self.dataset_name is None:
            raise DataError("--dataset_config_name needs --dataset_name")
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
        if self.explain < 0:
            raise DataError(f"--explain must be at least 0, got {self.explain}")
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
        elif self.drop_fold:
            raise DataError("--drop_fold leaves out fold --fold of --num_folds: give both")


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """transformers' ``TrainingArguments`` plus ``--overwrite_output_dir`` (which transformers 5 dropped)."""

    _argument_group_name = "training (transformers' TrainingArguments, and --overwrite_output_dir)"

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Write into an --output_dir that holds results of an earlier run: that run's results, "
                          "reports, predictions, plots and model card are removed first (its checkpoints too when "
                          "this run trains). Without it such a folder is refused."},
    )


PREDICT_USAGE = "%(prog)s --model_dir DIR --input PATH --output_dir DIR [--backend pytorch|onnx] [options]"


@dataclass
class PredictArguments:
    """What every deployment command takes: the trained (or exported) folder, the input and where results go."""

    _argument_group_name = "prediction"

    model_dir: str = field(metadata={"help": "A recipe's --output_dir (plain, merged LoRA, or adapter + head; with or "
                                             "without CRF), or the --output_dir of export_onnx.py (--backend onnx)."})
    input: str = field(metadata={"help": "The data to predict, in any format the recipe's train.py reads; labels "
                                         "are optional (when present the metric is reported)."})
    output_dir: str = field(metadata={"help": "Where the predictions go (a new or empty folder)."})
    backend: str = field(default="pytorch", metadata={
        "help": "'pytorch' runs the trained weights; 'onnx' runs model.onnx of an export folder with ONNX Runtime "
                "(CUDA when available, else CPU).", "choices": ["pytorch", "onnx"]})
    batch_size: int = field(default=64, metadata={"help": "Windows / images per forward pass (the recipes' "
                                                          "--per_device_eval_batch_size default)."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Replace the predictions of an earlier predict.py run in --output_dir."})

    def __post_init__(self):
        if self.batch_size < 1:
            raise DataError(f"--batch_size must be at least 1, got {self.batch_size}")
        for name in ("model_dir", "input"):
            if not os.path.exists(getattr(self, name)):
                raise DataError(f"--{name} does not exist", path=getattr(self, name))
        out = os.path.realpath(self.output_dir)
        for name in ("model_dir", "input"):
            inside = os.path.realpath(getattr(self, name))
            if inside == out or inside.startswith(out + os.sep):
                raise DataError(f"--output_dir must not be or hold the --{name}", path=self.output_dir)


def bf16_supported() -> bool:
    """bf16 pays off on GPUs that support it and on CPUs with native bf16 (AVX512-BF16 / AMX); elsewhere it is slow."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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


# ------------------------------------------------------------------------------------------------ parsing
class ArgumentParser(HfArgumentParser):
    """``HfArgumentParser`` whose errors are one :class:`DataError` line (argparse prints usage and exits) and whose
    help strings may contain a plain ``%`` (argparse %-formats them: "95% confidence" crashed ``--help``)."""

    USAGE = ("%(prog)s [--config FILE] --model_name_or_path MODEL --output_dir DIR [--do_train] [--do_eval] "
             "[--do_predict] [options]")

    def __init__(self, dataclass_types, **kwargs):
        kwargs.setdefault("usage", self.USAGE)
        super().__init__(dataclass_types, **kwargs)
        self.add_argument("--config", metavar="FILE",
                          help="YAML or JSON file of arguments (name: value); flags on the command line override it.")
        for action in self._actions:
            if action.help:
                action.help = re.sub(r"%(?!\()", "%%", action.help)

    def error(self, message: str):
        # "argument --learning_rate/--learning-rate: ..." names the flag once, as the user typed it
        raise DataError(re.sub(r"(--\w+)/--[\w-]+", r"\1", message))

    def option_names(self) -> list[str]:
        return [o for action in self._actions for o in action.option_strings if o.startswith("--")]

    def by_dest(self) -> dict[str, Any]:
        return {action.dest: action for action in self._actions}


def _closest(name: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def _config_lines(path: str, text: str) -> dict[str, int]:
    """The line of every top-level key of a YAML config (for error messages); empty when it cannot tell."""
    if not path.endswith((".yaml", ".yml")):
        return {}
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(key.value): key.start_mark.line + 1 for key, _ in node.value}


def read_config(path: str) -> tuple[dict[str, Any], dict[str, int]]:
    """A ``--config`` file as ``({key: value}, {key: line})``; problems are one :class:`DataError` line."""
    if not os.path.isfile(path):
        raise DataError("config file does not exist", path=path)
    if not path.endswith((".yaml", ".yml", ".json")):
        raise DataError("config must be .yaml, .yml or .json", path=path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 (byte {e.start}); re-save the file as UTF-8", path=path) from None
    if path.endswith(".json"):
        try:
            config = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as e:
            raise DataError(f"cannot parse config: {e.msg}", path=path, line=e.lineno) from None
    else:
        import yaml

        try:
            config = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise DataError(f"cannot parse config: {problem}", path=path,
                            line=None if mark is None else mark.line + 1) from None
    if not isinstance(config, dict):
        raise DataError("config must be a mapping of argument names to values", path=path)
    lines = _config_lines(path, text)
    return {str(k).lstrip("-"): v for k, v in config.items()}, {k.lstrip("-"): v for k, v in lines.items()}


def _takes_a_path(dest: str) -> bool:
    return dest.endswith(("_file", "_dir", "_path", "_root")) or dest == "input"


def _config_value(action, value, where: Callable[[str], DataError], accepts_none: bool = True):
    """A config value checked and converted the way argparse converts the same value given as a flag.

    ``null`` (``key: ~`` or ``key:``) is None where None is what leaving the key out gives (``accepts_none``); any
    other option refuses it rather than quietly falling back to a default: an empty value is more often a slip (a
    value on the wrong line, a template variable left unfilled) than a wish, and removing the line is the one way to
    say "the default"."""
    convert = action.type
    if value is None:
        if not accepts_none:
            kind = {"string_to_bool": "true or false", "int": "a whole number", "float": "a number"}.get(
                getattr(convert, "__name__", ""), "a value")
            raise where(f"empty (null) value where {kind} is needed; remove the line to use the default")
        return value
    if isinstance(value, dict) or convert is None:
        return value
    if isinstance(value, (list, tuple)):
        if action.nargs in ("+", "*"):
            return [_config_value(type(action)(option_strings=[], dest=action.dest, type=convert), v, where)
                    for v in value]
        if _takes_a_path(action.dest):
            raise where(f"takes one path, got a list {value!r}")
        help_text = (action.help or "").lower()
        if convert is not str or not ("comma-separated" in help_text or "list of" in help_text) or \
                not all(isinstance(v, (str, int, float)) for v in value):
            raise where(f"expected a single value, got a list {value!r}")
        value = ",".join(str(v) for v in value)  # comma-separated options (--lora_target_modules query,value)
    if isinstance(value, bool) and convert in (int, float, str):
        raise where(f"expected {getattr(convert, '__name__', 'a value')}, got {str(value).lower()}")
    if convert is int and isinstance(value, float) and not value.is_integer():
        raise where(f"expected a whole number, got {value}")
    try:
        converted = convert(value if convert is not str else str(value))
    except (TypeError, ValueError, KeyError, argparse.ArgumentTypeError):
        kind = getattr(convert, "__name__", "")
        kind = {"string_to_bool": "true or false", "int": "a whole number", "float": "a number"}.get(kind, "a valid value")
        raise where(f"expected {kind}, got {value!r}") from None
    if action.choices is not None and converted not in action.choices:
        raise where(f"{value!r} is not one of {', '.join(map(str, action.choices))}")
    return converted


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    """(config path, the other arguments) from ``--config PATH``, ``--config=PATH`` or a lone ``run.yaml``."""
    found = [i for i, a in enumerate(argv) if a == "--config" or a.startswith("--config=")]
    if len(found) > 1:
        raise DataError("give --config once")
    if found:
        i = found[0]
        if "=" in argv[i]:
            path, rest = argv[i].split("=", 1)[1], argv[:i] + argv[i + 1:]
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            path, rest = argv[i + 1], argv[:i] + argv[i + 2:]
        else:
            raise DataError("--config needs a file path")
        if not path:
            raise DataError("--config needs a file path")
        return path, rest
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):  # transformers' own convention
        return argv[0], []
    return None, argv


def parse_args(*dataclass_types, defaults: dict[str, Any] | None = None, args: list[str] | None = None,
               description: str | None = None, usage: str | None = None):
    """Parse dataclass arguments from the command line, optionally seeded by ``--config file.yaml|json``.

    Precedence: command-line flags > config file > ``defaults`` (the recipe's own) > dataclass defaults. A user
    mistake is one :class:`DataError` line: an unknown flag names the closest valid one; a config key or value names
    the config file, the key's line and the key.
    """
    argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
    config_path, argv = _split_config_flag(argv)
    parser = ArgumentParser(dataclass_types, description=description and description.strip().splitlines()[0],
                            **({"usage": usage} if usage else {}))
    actions = parser.by_dest()
    unknown = sorted(set(defaults or {}) - set(actions))
    if unknown:
        raise ValueError(f"recipe defaults name unknown arguments: {', '.join(unknown)}")
    merged, from_config = dict(defaults or {}), set()
    if config_path is not None:
        # null leaves an option unset, as leaving the key out does; where that would not give None it is refused
        accepts_none = {dest for dest, action in actions.items()
                        if not action.required and (defaults or {}).get(dest, action.default) is None}
        config, lines = read_config(config_path)
        for key, value in config.items():
            def where(problem, key=key):
                return DataError(f"{key}: {problem}", path=config_path, line=lines.get(key))

            if key not in actions or key in ("help", "config"):
                suggestion = _closest(key, sorted(k for k in actions if k not in ("help", "config")))
                raise DataError(f"unknown argument '{key}'{suggestion}", path=config_path, line=lines.get(key))
            merged[key] = _config_value(actions[key], value, where, key in accepts_none)
            from_config.add(key)
    parser.set_defaults(**merged)
    for action in parser._actions:  # a value from the config satisfies a required flag
        if action.dest in merged:
            action.required = False
    try:
        namespace, remaining = parser.parse_known_args(argv)  # --help exits here; type / choice errors are DataErrors
    except DataError as e:
        if "arguments are required" in str(e):  # a misspelt required flag: name the misspelling, not the absence
            options = parser.option_names()
            for arg in argv:
                name = arg.split("=", 1)[0]
                if name.startswith("--") and not any(o.startswith(name) for o in options):  # abbreviations are fine
                    raise DataError(f"unknown option {name}" + _closest(name, options)) from None
        raise
    given = from_config | _given_on_command_line(parser, argv)
    for arg in remaining:
        name = arg.split("=", 1)[0]
        if name.startswith("-"):
            raise DataError(f"unknown option {name}" + _closest(name, parser.option_names()))
        raise DataError(f"unexpected argument {arg!r} (options start with --)")
    values = vars(namespace)
    outputs = []
    for dtype in parser.dataclass_types:
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        try:
            outputs.append(dtype(**{k: v for k, v in values.items() if k in names}))
        except DataError:
            raise
        except ValueError as e:  # TrainingArguments.__post_init__ refuses a combination of options
            raise DataError(" ".join(str(e).split())) from None
        outputs[-1].__dict__[GIVEN] = frozenset(given & names)
    return tuple(outputs)


GIVEN = "_given_by_user"


def given(arguments) -> frozenset[str]:
    """The fields of a dataclass from :func:`parse_args` that the user set (command line or ``--config``), even to
    the default value: defaults derived from the data (``shared.training.adaptive``) never override them."""
    return arguments.__dict__.get(GIVEN, frozenset())


def _given_on_command_line(parser: ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations the command line names (abbreviated flags and ``--no_*`` forms included): the same parse
    with every default suppressed leaves only what was typed."""
    saved, parser_defaults = [(action, action.default, action.required) for action in parser._actions], parser._defaults
    try:
        parser._defaults = {}  # set_defaults() values would be filled in too
        for action in parser._actions:
            action.default, action.required = argparse.SUPPRESS, False
        typed, _ = parser.parse_known_args(argv)
    finally:
        parser._defaults = parser_defaults
        for action, default, required in saved:
            action.default, action.required = default, required
    return set(vars(typed))


def setup_logging(training_args=None) -> None:
    """Log to stderr from the main process only (``training_args`` None: a one-process command such as predict.py);
    never log examples (clinical text stays out of logs)."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stderr)],
    )
    level = logging.INFO if training_args is None or training_args.should_log else logging.WARNING
    logging.getLogger().setLevel(level)
    transformers.utils.logging.set_verbosity(logging.WARNING)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.disable_progress_bar()
    import datasets

    datasets.utils.logging.set_verbosity(logging.WARNING)
    datasets.disable_progress_bars()
    # transformers' own deprecation, raised inside PEFT's LoRA wrapping: nothing a user of the recipe can act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass
class Run:
    """What :func:`start_run` found: the splits the ``--do_*`` flags ask for, the earlier run's files to remove before
    writing, the checkpoint to resume from."""

    splits: list[str]
    earlier_results: list[str]
    checkpoint: str | None


def start_run(training_args) -> Run:
    """Steps 2 and 3 of every recipe: the splits to run, logging (metadata only: no example text or image reaches the logs), the output
    folder (an earlier run's results refused or, when allowed, listed for removal before this run writes), the
    checkpoint to resume from (all before any data is read), then the seed, before anything random."""

    wanted = requested_splits(training_args)  # nothing to do is an error before anything else
    setup_logging(training_args)
    run = Run(wanted, check_output_dir(training_args), resolve_checkpoint(training_args))
    logger.info("device %s, bf16 %s, %d process(es)", training_args.device, training_args.bf16, training_args.world_size)
    transformers.set_seed(training_args.seed)
    return run


def main_guard(main: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``main``; a :class:`DataError` becomes one line on stderr and exit status 2 (no traceback).

    In a multi-process run (torchrun / accelerate launch) the process group is destroyed before returning. The
    undecorated function stays reachable as ``main.__wrapped__`` (``shared.core.runner.run_recipe(raise_errors=True)``).
    """

    @functools.wraps(main)
    def wrapped(*args, **kwargs):

        try:
            result = main(*args, **kwargs)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            end_process_group()
            raise SystemExit(2) from None
        end_process_group()  # under torchrun / accelerate launch: leave the process group cleanly, as torch asks
        return result

    return wrapped


SPLIT_FLAGS = {"train": "--do_train", "validation": "--do_eval", "test": "--do_predict"}


def requested_splits(training_args) -> list[str]:
    """The splits the ``--do_train/--do_eval/--do_predict`` flags ask for; none is a one-line error."""
    wanted = [split for split, flag in SPLIT_FLAGS.items() if getattr(training_args, flag[2:])]
    if not wanted:
        raise DataError("nothing to do: pass at least one of --do_train, --do_eval, --do_predict")
    return wanted
