"""What tests/forked_cli.py's server imports once: the project's package and the parts of transformers the recipes
and the tiny test models use. Importing is all it does; nothing is configured or run."""

import importlib
import pkgutil

import shared

for module in pkgutil.walk_packages(shared.__path__, "shared."):
    try:
        importlib.import_module(module.name)
    except Exception:  # an optional dependency not installed, or a module that fails: the command imports it, or
        pass           # fails on it, itself, as a fresh interpreter would

import transformers  # noqa: E402

for name in ("Trainer", "TrainingArguments", "AutoConfig", "AutoTokenizer", "AutoImageProcessor",
             "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
             "AutoModelForImageClassification", "DataCollatorWithPadding", "DataCollatorForTokenClassification",
             "BertForSequenceClassification", "BertForTokenClassification", "ViTForImageClassification",
             "BertTokenizerFast"):
    getattr(transformers, name, None)
