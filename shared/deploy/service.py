"""A small HTTP service for a trained or exported folder (FastAPI; ``recipes/serve.py`` runs it with uvicorn).

    GET  /health   -> {"status": "ok", "task", "labels", "backend"} (with a token: only {"status": "ok"} without it)
    POST /predict  text classifier: {"text": "...", "text_pair": "..."} or {"texts": [...], "text_pairs": [...]}
                   NER:             {"text": "a note"} or {"texts": [...]}: entities with character offsets
                   assertion:       {"text": "a note", "concepts": [{"start", "end", "type"}, ...]}: each concept's
                                    assertion and probabilities
                   relations:       the same body: relations between the concepts (ids T1, T2, ... as given)
                   the chain:       {"text": "a note"} or {"texts": [...]}: concepts (with assertions) and relations,
                                    as pipeline.py's notes.jsonl
                   images:          the image file itself as the body (Content-Type image/png, image/jpeg, ...,
                                    application/dicom for a .dcm)

Answers are JSON: ``prediction`` and ``probabilities`` per text or image (the saved thresholds and calibration
applied, as in predict.py; ``prediction_set``, the conformal set of labels, when the folder was trained with
``--conformal_alpha``), ``entities`` (type, start, end, text) per note. Requests are bounded
(``max_request_bytes``, ``max_items``; for the chain also the words, NER windows and candidate pairs one request may
cause, :class:`shared.deploy.chain.Limits`): a larger body is 413, a malformed one 400 or 415, each with one line saying
why. Nothing of a request is logged or kept, and error messages never repeat its content. Predictions run one at a
time (a lock), so memory stays that of one batch.

With a ``token`` every request must carry ``Authorization: Bearer <token>`` (compared in constant time); without it
the answer is 401 with ``WWW-Authenticate: Bearer``, before the body is read. ``GET /health`` alone answers without a
token, with ``{"status": "ok"}`` only, so that a container's liveness probe needs no secret and learns nothing of the
model; a wrong token is 401 there too.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoint's `Request` annotation at definition time
import hmac
import io
import json
import logging
import threading

import numpy as np

from shared.core.errors import DataError
from shared.images.pixels import ImageTooLarge, is_dicom
from shared.images.readers import ImageSet

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 5_000_000
MAX_ITEMS = 64


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _texts(body: dict, key: str, plural: str, max_items: int, required: bool = True) -> list[str] | None:
    if key in body and plural in body:
        raise BadRequest(400, f"give '{key}' or '{plural}', not both")
    if key in body:
        values = [body[key]]
    elif plural in body:
        values = body[plural]
        if not isinstance(values, list) or not values:
            raise BadRequest(400, f"'{plural}' must be a non-empty list of strings")
    elif required:
        raise BadRequest(400, f"the JSON body needs '{key}' (a string) or '{plural}' (a list of strings)")
    else:
        return None
    if len(values) > max_items:
        raise BadRequest(413, f"{len(values)} items in one request; at most {max_items}")
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise BadRequest(400, f"item {i} of '{plural if plural in body else key}' is not a non-empty string")
    return values


def _json_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(400, "the body is not valid UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "the JSON body must be an object")
    return body


def _classified(predictor, outputs) -> list[dict]:
    answers = [{"prediction": label, "probabilities": {name: float(p) for name, p in zip(predictor.labels, probs)}}
               for label, probs in zip(outputs.labels, np.asarray(outputs.probs))]
    if outputs.sets is not None:  # a folder trained with --conformal_alpha: the labels its set holds
        for answer, labels in zip(answers, outputs.sets):
            answer["prediction_set"] = labels
    return answers


def answer(predictor, raw: bytes, content_type: str, max_items: int = MAX_ITEMS, limits=None) -> dict:
    """The JSON answer to one POST /predict body, or :class:`BadRequest`."""
    content_type = (content_type or "").split(";")[0].strip().lower()
    if predictor.task == "image_classification":
        if not (content_type.startswith("image/") or content_type in ("application/octet-stream",
                                                                       "application/dicom")):
            raise BadRequest(415, "send the image file itself as the body, with an image/* Content-Type")
        return _image_answer(predictor, raw)
    if content_type not in ("application/json", ""):
        raise BadRequest(415, "send a JSON body (Content-Type: application/json)")
    body = _json_body(raw)
    if predictor.task in ("assertion_status", "relation_extraction"):
        return _concept_answer(predictor, body, max_items)
    texts = _texts(body, "text", "texts", max_items)
    if predictor.task == "pipeline":
        return _chain_answer(predictor, body, texts, limits)
    if predictor.task == "ner":
        unknown = set(body) - {"text", "texts"}
        if unknown:
            raise BadRequest(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        found = [predictor.entities(text) for text in texts]
        return {"entities": found[0]} if "text" in body else {"results": [{"entities": f} for f in found]}
    unknown = set(body) - {"text", "texts", "text_pair", "text_pairs"}
    if unknown:
        raise BadRequest(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    pairs = _texts(body, "text_pair", "text_pairs", max_items, required=False)
    if pairs is not None and len(pairs) != len(texts):
        raise BadRequest(400, f"{len(texts)} texts but {len(pairs)} text pairs")

    try:
        results = _classified(predictor, predictor.predict(texts, pairs))
    except DataError as e:  # e.g. a pair too long for the windows: the reason, never the text
        raise BadRequest(400, e.reason) from None
    return results[0] if "text" in body else {"results": results}


def _concept_answer(predictor, body: dict, max_items: int) -> dict:
    """One note with its concepts (character offsets): each concept's assertion with its probabilities, or the
    relations between them (concept ids T1, T2, ... in the order given)."""
    from shared.deploy.chain import assert_facts, facts_of, relate_facts

    unknown = set(body) - {"text", "concepts"}
    if unknown:
        raise BadRequest(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(400, "the JSON body needs 'text': the note, a non-empty string")
    if "concepts" not in body:
        raise BadRequest(400, "the JSON body needs 'concepts': [{\"start\", \"end\", \"type\"}, ...]")
    if isinstance(body["concepts"], list) and len(body["concepts"]) > max_items:
        raise BadRequest(413, f"{len(body['concepts'])} concepts in one request; at most {max_items}")
    try:
        facts = facts_of(text, body["concepts"])
        if predictor.task == "assertion_status":
            asserted = assert_facts(predictor, [text], [facts])[0]
            sets = predictor.conformal.named(np.array([probs for _, probs in asserted]).reshape(-1, len(
                predictor.labels)), predictor.labels) if predictor.conformal else None
            return {"concepts": [{"id": f.id, "type": f.type, "start": f.start, "end": f.end,
                                  "assertion": f.assertion,
                                  "probabilities": {n: float(p) for n, p in zip(predictor.labels, probs)},
                                  **({"prediction_set": sets[k]} if sets is not None else {})}
                                 for k, (f, probs) in enumerate(asserted)]}
        relations = relate_facts(predictor, [text], [facts])[0]
    except DataError as e:
        raise BadRequest(400, e.reason) from None
    return {"relations": [{"type": t, "arg1": a, "arg2": b} for t, a, b in relations]}


def _chain_answer(chain, body: dict, texts: list[str], limits) -> dict:
    """Raw notes in, each note's concepts (with assertions) and relations out, as pipeline.py's notes.jsonl."""
    from shared.deploy.chain import LimitExceeded

    unknown = set(body) - {"text", "texts"}
    if unknown:
        raise BadRequest(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    try:
        notes = chain.annotate(texts, limits=limits)
    except LimitExceeded as e:  # one huge note would hold the lock for everyone else
        raise BadRequest(413, e.reason) from None
    except DataError as e:
        raise BadRequest(400, e.reason) from None
    found = [{k: v for k, v in note.as_json().items() if k != "note"} for note in notes]
    return found[0] if "text" in body else {"results": found}


def _image_answer(predictor, raw: bytes) -> dict:
    from PIL import UnidentifiedImageError

    from shared.images.decode import load_pil



    if not raw:
        raise BadRequest(400, "the body is empty; send the image file")
    if is_dicom(raw):  # decoded with the folder's pixel mapping; header values are never read into the answer
        source = {"bytes": raw}
    else:
        try:
            source = load_pil(io.BytesIO(raw))
        except ImageTooLarge as e:  # a decompression bomb: refused before its pixels are decoded
            raise BadRequest(413, e.reason) from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise BadRequest(400, "the body is not an image PIL can read (PNG, JPEG, TIFF, BMP, ...) or a DICOM "
                                  "file") from None
    try:
        decoded = predictor.decode(ImageSet([source], [None], [("<request>", None)], "<request>"))
    except ImageTooLarge as e:
        raise BadRequest(413, e.reason) from None
    except DataError as e:  # e.g. compressed DICOM without its decoder: the reason only
        raise BadRequest(400, e.reason) from None
    return _classified(predictor, predictor.predict(decoded))[0]


def bearer_refusal(authorization: str | None, token: bytes) -> tuple[str, str] | None:
    """None when an ``Authorization`` header value carries ``token`` as its bearer credentials, else (the one-line
    reason, the ``WWW-Authenticate`` value) of the 401. hmac.compare_digest: the time taken does not tell how much of
    a guess was right."""
    if authorization is None:
        return "this service needs a bearer token: send 'Authorization: Bearer <token>'", "Bearer"
    scheme, _, credentials = authorization.strip().partition(" ")
    # header values arrive decoded as latin-1: encoding back gives the bytes sent, whatever they are
    if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.strip().encode("latin-1"), token):
        return "the bearer token is not this service's", 'Bearer error="invalid_token"'
    return None


def create_app(predictor, max_request_bytes: int = MAX_REQUEST_BYTES, max_items: int = MAX_ITEMS, limits=None,
               token: str | None = None):
    """The FastAPI application serving ``predictor`` (a :mod:`shared.deploy.predictors` or
    :mod:`shared.deploy.concepts` predictor, or a :class:`shared.deploy.chain.Chain` with its ``limits``); with
    ``token`` (ASCII), only to requests that carry it as a bearer token."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="Medical fine-tuning recipes: prediction service", docs_url=None, redoc_url=None,
                  openapi_url=None)
    lock = threading.Lock()
    predictor.model  # load the weights (or the ONNX session) before the first request  # noqa: B018

    expected = token.encode("ascii") if token else None

    def refusal(request: Request) -> JSONResponse | None:
        """The 401 answer to a request without the token, or None (no token set, or the right one given)."""
        if expected is None:
            return None
        refused = bearer_refusal(request.headers.get("authorization"), expected)
        if refused is None:
            return None
        return JSONResponse({"error": refused[0]}, status_code=401, headers={"WWW-Authenticate": refused[1]})

    @app.get("/health")
    def health(request: Request):
        if expected is not None and request.headers.get("authorization") is None:
            return {"status": "ok"}  # a liveness probe: nothing of the model without the token
        if (refused := refusal(request)) is not None:
            return refused
        return {"status": "ok", "task": predictor.task, "labels": list(predictor.labels),
                "backend": predictor.backend}

    @app.post("/predict")
    async def predict(request: Request):
        if (refused := refusal(request)) is not None:  # before the body is read: no work for strangers
            return refused
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_request_bytes):
            return JSONResponse({"error": f"the body is larger than {max_request_bytes} bytes"}, status_code=413)
        raw = bytearray()
        async for chunk in request.stream():  # a body sent without Content-Length is bounded too
            raw += chunk
            if len(raw) > max_request_bytes:
                return JSONResponse({"error": f"the body is larger than {max_request_bytes} bytes"}, status_code=413)
        try:
            from starlette.concurrency import run_in_threadpool

            def run():
                with lock:
                    return answer(predictor, bytes(raw), request.headers.get("content-type", ""), max_items,
                                  limits)

            return await run_in_threadpool(run)
        except BadRequest as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        except Exception as e:  # never log or echo the input (a traceback's message may quote it): the kind only
            logger.error("prediction failed: %s", type(e).__name__)
            return JSONResponse({"error": "prediction failed (see the service log)"}, status_code=500)

    return app
