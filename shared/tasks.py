"""The tasks this project trains, and the record of its task that every trained folder carries.

:data:`TASKS` names each task once: the recipe that trains it, its headline metric, the input settings its recipe
records, and its predictor (the reading path of ``predict.py``, ``export_onnx.py``, ``verify_onnx.py`` and
``serve.py``). A task added later is one more entry here.

Every folder a recipe or ``export_onnx.py`` writes holds a task record in its ``config.json``::

    "recipe": {"task": "text_classification", "version": 1,
               "inputs": {"text_column": "section", "text_pair_column": "text", ...}}

``inputs`` are the settings a predictor needs to read new inputs exactly as training read them (columns, pair
columns, the data format, marker tokens); the model's own settings (windows, thresholds, calibration, tag scheme)
sit beside it in ``config.json`` as before. Tools read the task with :func:`folder_record` and never guess it from
the model's head: a folder of another task, or one written before records existed, gets one line saying what to do.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from typing import Any

from shared.core.errors import DataError

RECORD_KEY = "recipe"
RECORD_VERSION = 1


@dataclass(frozen=True)
class Task:
    """One task: ``name`` is its recipe folder under ``recipes/``; ``inputs`` the recorded settings with the values
    a predictor takes when the record leaves one out; ``predictor`` / ``input_arguments`` are ``module:attribute``
    references to its ``predict.py``'s predictor and input options (imported when used, so that naming a task loads
    no model code)."""

    name: str
    title: str
    metric: str
    inputs: dict[str, Any]
    predictor: str
    input_arguments: str

    @property
    def a_title(self) -> str:
        """The title with its article: 'an image classification', 'a text classification'."""
        return f"{'an' if self.title[0] in 'aeiou' else 'a'} {self.title}"

    @property
    def recipe(self) -> str:
        return f"recipes/{self.name}/"

    def how_to_predict(self) -> str:
        """Where a user runs this task's folders on new inputs."""
        return f"use {self.recipe}predict.py"

    def predictor_class(self):
        return _resolve(self.predictor)

    def input_arguments_class(self):
        return _resolve(self.input_arguments)


def _resolve(reference: str):
    module, attribute = reference.split(":")
    return getattr(importlib.import_module(module), attribute)


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("text_classification", "text classification", "macro_f1",
         {"text_column": "text", "text_pair_column": None, "label_column": "label", "label_separator": None},
         "shared.deploy.predictors:TextClassifier", "shared.deploy.predictors:TextInputArguments"),
    Task("ner", "named entity recognition", "f1",
         {"data_format": None, "tokens_column": "tokens", "tags_column": "ner_tags", "conll_tag_column": -1,
          "overlapping_entities": "error"},  # folders trained before the option read overlaps as errors
         "shared.deploy.predictors:EntityTagger", "shared.deploy.predictors:NerInputArguments"),
    Task("image_classification", "image classification", "macro_f1",
         {"image_column": "image", "label_column": "label", "label_separator": None},
         "shared.deploy.predictors:ImageClassifier", "shared.deploy.predictors:ImageInputArguments"),
    Task("assertion_status", "assertion status", "macro_f1", {"data_format": "i2b2", "markers": None},
         "shared.deploy.concepts:AssertionClassifier", "shared.deploy.concepts:AssertionInputArguments"),
    Task("relation_extraction", "relation extraction", "f1",
         {"data_format": None, "candidate_types": None, "entity_types": None, "markers": None},
         "shared.deploy.concepts:RelationClassifier", "shared.deploy.concepts:RelationInputArguments"),
)}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise DataError(f"unknown task '{name}' (this project trains: {', '.join(TASKS)})")
    return TASKS[name]


@dataclass
class TaskRecord:
    """What a folder says about itself: its task and the input settings its recipe read with."""

    task: Task
    inputs: dict[str, Any]

    def input(self, name: str, given=None):
        """A setting: the one the user gave (not None), else the recorded one."""
        return given if given is not None else self.inputs.get(name)


def task_record(task: str, **inputs) -> dict:
    """The ``config.json`` entry a recipe saves with its model (``save_trained(config_updates=...)``)."""
    spec = get_task(task)
    unknown = set(inputs) - set(spec.inputs)
    if unknown:  # a programming error in a recipe, not a user's
        raise ValueError(f"{task} records no input setting(s) {sorted(unknown)}")
    return {RECORD_KEY: {"task": task, "version": RECORD_VERSION, "inputs": {**spec.inputs, **inputs}}}


def read_folder_config(model_dir: str) -> dict:
    """``config.json`` of a trained or exported folder, or a one-line error."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isdir(model_dir):
        raise DataError("model folder does not exist", path=model_dir)
    if not os.path.isfile(path):
        raise DataError("not a trained model folder (no config.json); pass the --output_dir of a recipe's training "
                        "run or of export_onnx.py", path=model_dir)
    try:
        with open(path, encoding="utf-8-sig") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read config.json: {str(e).splitlines()[0]}", path=model_dir) from None
    if not isinstance(config, dict):
        raise DataError("config.json is not a JSON object", path=model_dir)
    return config


def record_of(config: dict, model_dir: str) -> TaskRecord:
    """The task record in a folder's ``config.json``, or one line: a folder written before records existed is told
    how to upgrade (add the entry by hand, or train again)."""
    record = config.get(RECORD_KEY)
    if record is None:
        raise DataError(
            f"config.json records no task (a folder written before task records, or not by this project's recipes): "
            f"train it again, or add \"{RECORD_KEY}\": {{\"task\": \"<{'|'.join(TASKS)}>\"}} to its config.json",
            path=model_dir)
    if not isinstance(record, dict) or not isinstance(record.get("task"), str):
        raise DataError(f"config.json: \"{RECORD_KEY}\" must be an object naming a \"task\"", path=model_dir)
    if record.get("version", RECORD_VERSION) > RECORD_VERSION:
        raise DataError(f"config.json: task record version {record['version']} is newer than this code reads "
                        f"({RECORD_VERSION}); update the project", path=model_dir)
    if record["task"] not in TASKS:
        raise DataError(f"config.json names task '{record['task']}', which this project does not train (it trains "
                        f"{', '.join(TASKS)})", path=model_dir)
    task = TASKS[record["task"]]
    inputs = record.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise DataError(f"config.json: \"{RECORD_KEY}\".inputs must be an object", path=model_dir)
    return TaskRecord(task, {**task.inputs, **{k: v for k, v in inputs.items() if k in task.inputs}})


def folder_record(model_dir: str) -> TaskRecord:
    """The task record of a trained or exported folder (one line when there is none)."""
    return record_of(read_folder_config(model_dir), model_dir)


def folder_task(model_dir: str) -> Task:
    return folder_record(model_dir).task


def require_task(model_dir: str, expected: str) -> TaskRecord:
    """The folder's record when it holds ``expected``'s model; else one line naming where its own task predicts."""
    record = folder_record(model_dir)
    if record.task.name != expected:
        raise DataError(f"this folder holds {record.task.a_title} model, not {TASKS[expected].a_title} one: "
                        f"{record.task.how_to_predict()}", path=model_dir)
    return record
