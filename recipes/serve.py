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
why; nothing of a request is logged. It listens on 127.0.0.1 unless --host says otherwise.

Access: with a bearer token (--token_file FILE, or the SERVE_TOKEN environment variable; never a command-line value,
which every user of the machine sees in `ps`) every request needs `Authorization: Bearer <token>`, else 401; GET
/health answers {"status": "ok"} alone without it. Listening beyond this machine (--host other than loopback) needs a
token, or --allow_unauthenticated to say that anyone who reaches the port may use it.

    python -c "import secrets; print(secrets.token_urlsafe(32))" > serve_token   # readable by you only (umask 077)
    python recipes/serve.py --model_dir out --host 0.0.0.0 --token_file serve_token
    curl -s localhost:8000/predict -H "Authorization: Bearer $(cat serve_token)" -H 'Content-Type: application/json' \
        -d '{"text": "chest pain"}'

docs/deployment.md has a Dockerfile that runs it offline.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
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
from shared.deploy.ensemble import load_folder_predictor
from shared.deploy.predictors import BACKENDS
from shared.deploy.service import MAX_ITEMS, MAX_REQUEST_BYTES

logger = logging.getLogger(__name__)

TOKEN_VARIABLE = "SERVE_TOKEN"
MIN_TOKEN_CHARS = 16
MAX_TOKEN_FILE_BYTES = 4096
# RFC 6750's b64token: what an Authorization: Bearer header can carry as it is
BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


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
    token_file: str | None = field(default=None, metadata={
        "help": f"A file holding the bearer token every request must carry (Authorization: Bearer <token>; at least "
                f"{MIN_TOKEN_CHARS} characters). Or set it in the {TOKEN_VARIABLE} environment variable."})
    allow_unauthenticated: bool = field(default=False, metadata={
        "help": "Serve without a token on an address other than loopback: anyone who can reach the port may use the "
                "model."})
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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def service_token(serve_args: ServeArguments) -> str | None:
    """The bearer token (--token_file, or the SERVE_TOKEN environment variable), or None; a DataError for a
    missing, empty or malformed one, and for a non-loopback --host without a token nor --allow_unauthenticated.
    The token itself is never part of a message."""
    from_env = os.environ.get(TOKEN_VARIABLE)
    if serve_args.token_file is not None and from_env is not None:
        raise DataError(f"give the token in --token_file or in the {TOKEN_VARIABLE} environment variable, not both")
    if serve_args.token_file is not None:
        where = f"token file {serve_args.token_file}"
        try:
            with open(serve_args.token_file, "rb") as f:
                raw = f.read(MAX_TOKEN_FILE_BYTES + 1)
        except FileNotFoundError:
            raise DataError(f"{where} does not exist") from None
        except OSError as e:
            raise DataError(f"cannot read {where}: {e.strerror or type(e).__name__}") from None
        if len(raw) > MAX_TOKEN_FILE_BYTES:
            raise DataError(f"{where} is larger than {MAX_TOKEN_FILE_BYTES} bytes: it should hold the token only")
        token = raw.decode("latin-1").strip()
    elif from_env is not None:
        where, token = f"the {TOKEN_VARIABLE} environment variable", from_env.strip()
    else:
        if not (is_loopback(serve_args.host) or serve_args.allow_unauthenticated):
            raise DataError(f"--host {serve_args.host} listens beyond this machine, and without a token anyone who "
                            f"reaches the port may use the model: give one (--token_file FILE or the {TOKEN_VARIABLE} "
                            "environment variable), or pass --allow_unauthenticated")
        return None
    if serve_args.allow_unauthenticated:
        raise DataError(f"--allow_unauthenticated, but {where} sets a token: drop one of them")
    if not token:
        raise DataError(f"{where} is empty")
    if not BEARER_TOKEN.fullmatch(token):
        raise DataError(f"{where} holds characters a bearer token cannot carry (one line of letters, digits and "
                        "-._~+/, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if len(token) < MIN_TOKEN_CHARS:
        raise DataError(f"{where} holds a token of {len(token)} characters; use at least {MIN_TOKEN_CHARS} random "
                        "ones, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token


def build_app(args: list[str] | None = None):
    """(the application, the parsed arguments): what main serves, and what tests start on a port of their own."""
    (serve_args,) = parse_args(ServeArguments, args=args, description=__doc__,
                               usage="%(prog)s (--model_dir DIR | --ner_model DIR [--assertion_model DIR] "
                                     "[--relation_model DIR]) [--backend onnx] [--host H] [--port P] "
                                     "[--token_file FILE] [options]")
    token = service_token(serve_args)  # before loading any model: a deployment mistake costs seconds
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
        predictor = load_folder_predictor(serve_args.model_dir, serve_args.backend, serve_args.batch_size,
                                          serve_args.threads)
    limits = Limits(serve_args.max_words, serve_args.max_windows, serve_args.max_pairs)
    app = create_app(predictor, serve_args.max_request_bytes, serve_args.max_items, limits, token)
    app.state.token_required = token is not None
    return app, serve_args


@main_guard
def main(args: list[str] | None = None) -> None:
    setup_logging()
    try:
        import uvicorn
    except ImportError:
        raise DataError('serve.py needs FastAPI and uvicorn: pip install -e ".[deploy]"') from None
    app, serve_args = build_app(args)
    logger.info("serving %s (%s) on http://%s:%d, %s", serve_args.model_dir or serve_args.ner_model,
                serve_args.backend, serve_args.host, serve_args.port,
                "a bearer token required" if app.state.token_required else "no token required")
    if not app.state.token_required and not is_loopback(serve_args.host):
        logger.warning("no token (--allow_unauthenticated): anyone who can reach port %d may use the model",
                       serve_args.port)
    uvicorn.run(app, host=serve_args.host, port=serve_args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
