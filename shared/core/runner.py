"""Run a recipe in this Python process: the one way tests, notebooks and benchmarks call a recipe.

A recipe is a script (``recipes/<task>/train.py``), not a module of a package, so it is loaded from its file. Each
file gets a module name of its own (derived from its absolute path), so a copied recipe (``recipes/my_ner/``) and
the original load side by side in one process without replacing each other.

    from shared.core.runner import run_recipe
    results = run_recipe("ner", ["--config", "recipes/ner/configs/demo.yaml", "--output_dir", "out"])

``run_recipe`` calls the recipe's ``main`` exactly as its command line does: a bad input ends with exit status 2
(``SystemExit``) after one ``error: ...`` line on stderr. ``raise_errors=True`` raises the ``DataError`` instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

# The recipes folder of this checkout (the package is installed in place: `pip install -e .`).
RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


def recipe_file(recipe: str | os.PathLike, entry: str = "train") -> Path:
    """``recipes/<recipe>/<entry>.py`` for a recipe name, the entry point of a recipe folder, a file path, or a
    command of the recipes folder itself (``export_onnx.py``, ``verify_onnx.py``, ``serve.py``)."""
    path = Path(recipe)
    if path.suffix == ".py":  # a script: a path, or a command of the recipes folder ("export_onnx.py")
        return (RECIPES_DIR / path if not path.exists() and len(path.parts) == 1 else path).resolve()
    if not path.is_dir() and os.sep not in str(recipe) and "/" not in str(recipe):
        path = RECIPES_DIR / str(recipe)
    file = path.resolve() / f"{entry}.py"
    if not file.is_file():
        raise FileNotFoundError(f"no recipe entry point {file}")
    return file


def load_recipe(recipe: str | os.PathLike, entry: str = "train") -> ModuleType:
    """The recipe's module (imported once per file and process; later calls return the same module)."""
    file = recipe_file(recipe, entry)
    name = f"{file.parent.name}_{file.stem}"  # "ner_train": also the name its log lines carry
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) != str(file):  # another file of that name
        name += "_" + hashlib.sha1(str(file).encode()).hexdigest()[:8]
        loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their string annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def run_recipe(recipe: str | os.PathLike, args: list[str], entry: str = "train", raise_errors: bool = False):
    """Run the recipe's ``main(args)`` in-process and return what it returns (the results dict for ``train``)."""
    main = load_recipe(recipe, entry).main
    if raise_errors:
        main = getattr(main, "__wrapped__", main)  # main_guard keeps the undecorated function here
    return main([str(a) for a in args])
