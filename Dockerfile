# The prediction service (recipes/serve.py) for a trained or exported folder, CPU only.
#
#   docker build -t medical-recipes-serve .
#   mkdir -m 700 secrets && python -c "import secrets; print(secrets.token_urlsafe(32))" > secrets/serve_token
#   chmod 644 secrets/serve_token   # the container's user (uid 10001) reads it; the 700 folder keeps others out
#   docker run --rm -p 8000:8000 -v "$PWD/out_onnx:/model:ro" -e BACKEND=onnx \
#       -v "$PWD/secrets/serve_token:/run/secrets/serve_token:ro" medical-recipes-serve
#   curl -s localhost:8000/predict -H "Authorization: Bearer $(cat secrets/serve_token)" \
#       -H 'Content-Type: application/json' -d '{"text": "chest pain"}'
#
# Every request needs that bearer token (a mounted file, like the model, so that it shows neither in `ps` nor in
# `docker inspect`; Docker Compose and Kubernetes secrets mount the same way; point TOKEN_FILE elsewhere if yours is
# mounted at another path). Without the file the container stops at once with one line saying so. GET /health answers
# {"status": "ok"} without the token, for liveness probes.
#
# The build needs the package indexes only (PyPI and PyTorch's CPU wheel index; point PIP_INDEX_URL /
# TORCH_INDEX_URL at a mirror inside a hospital network). The model is mounted read-only at run time, never baked
# into the image; the container runs offline (HF_HUB_OFFLINE) as a non-root user and logs no request content.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg \
    BACKEND=pytorch PORT=8000 TOKEN_FILE=/run/secrets/serve_token

WORKDIR /app
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY recipes ./recipes
RUN pip install -e ".[deploy]" && useradd --create-home --uid 10001 serve
USER serve

EXPOSE 8000
CMD ["sh", "-c", "exec python recipes/serve.py --model_dir /model --backend \"$BACKEND\" --host 0.0.0.0 --port \"$PORT\" --token_file \"$TOKEN_FILE\""]
