"""Session fixtures: tiny models built from config (CPU, seconds). Real data and weights in ``../shared`` are used by
integration tests only, which skip when it is absent (tests/helpers.py: ``real_asset``). A run that leaves the git
checkout changed fails (tests/clean_checkout.py). The test lanes (markers in pyproject.toml) are set here."""

from __future__ import annotations

import csv
import os

import pytest

from shared.training.tiny_models import build_tiny_bert, build_tiny_vit
from tests.clean_checkout import pytest_sessionfinish, pytest_sessionstart, pytest_terminal_summary  # noqa: F401
from tests.helpers import TEXT_SAMPLE, TOY_CORPUS, build_tiny_ner_model

# Never reach for the network in tests; everything is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """The lanes that follow from what a test is: a notebook (an nbval cell), a test that reads ../shared through
    ``real_asset`` (integration) and a two-process test are marked here, so `-m "not slow"` leaves out the notebooks
    and the two-process runs without a decorator on each; other slow tests carry ``@pytest.mark.slow``."""
    for item in items:
        function = getattr(item, "function", None)
        if item.path.suffix == ".ipynb":
            item.add_marker("notebook")
            item.add_marker("slow")
        elif function is not None and "real_asset" in function.__code__.co_names:
            item.add_marker("integration")
        if item.get_closest_marker("multiprocess"):
            item.add_marker("slow")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tiny pretrained-looking BERT folder whose vocabulary covers the bundled text sample data."""
    corpus = list(TOY_CORPUS)
    with (TEXT_SAMPLE / "train.csv").open(encoding="utf-8") as f:
        corpus += [row["text"] for row in csv.DictReader(f)]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), corpus)


@pytest.fixture(scope="session")
def tiny_ner_model(tmp_path_factory) -> str:
    """A tiny BERT whose 300-word vocabulary comes from the NER sample notes."""
    return build_tiny_ner_model(tmp_path_factory.mktemp("tiny_ner_bert"))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> str:
    """A 2-layer ViT (hidden 32, 32 px, patch 8) built from config, saved with its image processor."""
    return build_tiny_vit(tmp_path_factory.mktemp("tiny_vit"))


@pytest.fixture
def serve():
    """Start recipes/serve.py's application with uvicorn on a free localhost port; yields a function
    ``start(serve.py arguments) -> base URL``. Servers stop at the end of the test."""
    import socket
    import threading
    import time

    import uvicorn

    from shared.core.runner import load_recipe

    servers = []

    def start(*args):
        app, _ = load_recipe("serve.py").build_app([str(a) for a in args])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False))
        threading.Thread(target=server.run, daemon=True).start()
        servers.append(server)
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        assert server.started
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.should_exit = True
