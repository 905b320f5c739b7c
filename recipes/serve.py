#!/usr/bin/env python
"""Serve a trained or exported folder over HTTP (FastAPI + uvicorn; pip install -e ".[deploy]").

    python recipes/serve.py --model_dir out --port 8000
    python recipes/serve.py --model_dir out_onnx --backend onnx --host 0.0.0.0 --port 8000
    curl -s localhost:8000/predict -H 'Content-Type: application/json' -d '{"text": "chest pain on exertion"}'
    curl -s localhost:8000/predict -H 'Content-Type: image/png' --data-binary @scan.png
    python recipes/serve.py --ner_model ner_out --assertion_model assertion_out --relation_model relation_out
    curl -s localhost:8000/predict -H 'Content-Type: application/json' -d '{"text": "Denies chest pain."}'

Any recipe's folder: POST /predict takes {"text": ...} / {"texts": [...]} (classifiers and NER; a note's entities
come with character offsets), a note with its concepts {"text": ..., "concepts": [{"start", "end", "type"}]}
(assertion status, relations) or an image file as the body. With --ner_model (and --assertion_model,
--relation_model) it serves the chain of recipes/pipeline.py: raw notes in, concepts with their assertions and the
relations between them out, each request capped in words, NER windows and candidate pairs (--max_words,
--max_windows, --max_pairs: 413 beyond) so that one huge note cannot hold up the others; GET /health says the task, labels and
backend. Bodies are bounded (--max_request_bytes, --max_items: 413 beyond), malformed ones get a 4xx with one line
why; nothing of a request is logged. It listens on 127.0.0.1 unless --host says otherwise. The README's Deploy
section has a Dockerfile that runs it offline.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

try:
    import shared.core.args  # noqa: F401  (this project's package, and through it torch and transformers)
except ImportError as error:
    print(f"error: this project is not installed ({error}): install it as its README.md says, torch first, then "
          "`pip install -e .`", file=sys.stderr)
    raise SystemExit(2) from None

from shared.core.args import main_guard, parse_args, setup_logging
from shared.core.errors import DataError
from shared.deploy.chain import CHAIN_LIMITS, Chain, Limits, parse_type_map
from shared.deploy.predictors import BACKENDS, load_predictor
from shared.deploy.service import MAX_ITEMS, MAX_REQUEST_BYTES

logger = logging.getLogger(__name__)


@dataclass
class ServeArguments:
    _argument_group_name = "service"

    model_dir: str | None = field(default=None, metadata={
        "help": "A recipe's --output_dir, or an export_onnx.py folder (--backend onnx). Or serve the chain instead: "
                "--ner_model [--assertion_model] [--relation_model]."})
    ner_model: str | None = field(default=None, metadata={
        "help": "Serve the NER -> assertion -> relation chain (recipes/pipeline.py) with this NER folder: POST "
                "/predict takes raw notes."})
    assertion_model: str | None = field(default=None, metadata={"help": "The chain's assertion folder."})
    relation_model: str | None = field(default=None, metadata={"help": "The chain's relation folder."})
    type_map: str | None = field(default=None, metadata={
        "help": "The chain: rename NER types to the later models' names (Disease=problem,...)."})
    backend: str = field(default="pytorch", metadata={"help": "'pytorch' or 'onnx' (ONNX Runtime).",
                                                      "choices": list(BACKENDS)})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0: every interface, e.g. "
                                                             "in a container)."})
    port: int = field(default=8000, metadata={"help": "Port to listen on."})
    max_request_bytes: int = field(default=MAX_REQUEST_BYTES, metadata={"help": "Largest request body accepted."})
    max_items: int = field(default=MAX_ITEMS, metadata={"help": "Most texts in one request."})
    batch_size: int = field(default=64, metadata={"help": "Windows / images per forward pass."})
    threads: int | None = field(default=None, metadata={"help": "ONNX Runtime intra-op threads (default: all cores)."})
    max_words: int = field(default=CHAIN_LIMITS.max_words, metadata={
        "help": "The chain: most words one request may hold, all its notes together (413 beyond)."})
    max_windows: int = field(default=CHAIN_LIMITS.max_windows, metadata={
        "help": "The chain: most NER windows (forward-pass rows) one request may cause (413 beyond)."})
    max_pairs: int = field(default=CHAIN_LIMITS.max_pairs, metadata={
        "help": "The chain: most candidate pairs one request may give the relation model (413 beyond)."})

    def __post_init__(self):
        if (self.model_dir is None) == (self.ner_model is None):
            raise DataError("give --model_dir (one folder) or --ner_model (the chain), not both and not neither")
        if self.model_dir is not None and (self.assertion_model or self.relation_model or self.type_map):
            raise DataError("--assertion_model, --relation_model and --type_map belong to the chain: give "
                            "--ner_model instead of --model_dir")
        if min(self.max_words, self.max_windows, self.max_pairs) < 1:
            raise DataError("--max_words, --max_windows and --max_pairs must be at least 1")
        if not 0 < self.port < 65536:
            raise DataError(f"--port must be in 1..65535, got {self.port}")
        if self.max_request_bytes < 1 or self.max_items < 1:
            raise DataError("--max_request_bytes and --max_items must be at least 1")


def build_app(args: list[str] | None = None):
    """(the application, the parsed arguments): what main serves, and what tests start on a port of their own."""
    (serve_args,) = parse_args(ServeArguments, args=args, description=__doc__,
                               usage="%(prog)s (--model_dir DIR | --ner_model DIR [--assertion_model DIR] "
                                     "[--relation_model DIR]) [--backend onnx] [--host H] [--port P] [options]")
    try:
        import fastapi  # noqa: F401

        from shared.deploy.service import create_app
    except ImportError:
        raise DataError('serve.py needs FastAPI and uvicorn: pip install -e ".[deploy]"') from None
    if serve_args.ner_model:
        predictor = Chain.from_folders(serve_args.ner_model, serve_args.assertion_model, serve_args.relation_model,
                                       serve_args.backend, serve_args.batch_size, serve_args.threads,
                                       parse_type_map(serve_args.type_map))
    else:
        predictor = load_predictor(serve_args.model_dir, serve_args.backend, serve_args.batch_size,
                                   serve_args.threads)
    limits = Limits(serve_args.max_words, serve_args.max_windows, serve_args.max_pairs)
    return create_app(predictor, serve_args.max_request_bytes, serve_args.max_items, limits), serve_args


@main_guard
def main(args: list[str] | None = None) -> None:
    setup_logging()
    try:
        import uvicorn
    except ImportError:
        raise DataError('serve.py needs FastAPI and uvicorn: pip install -e ".[deploy]"') from None
    app, serve_args = build_app(args)
    logger.info("serving %s (%s) on http://%s:%d", serve_args.model_dir, serve_args.backend, serve_args.host,
                serve_args.port)
    uvicorn.run(app, host=serve_args.host, port=serve_args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
