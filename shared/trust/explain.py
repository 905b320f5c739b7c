"""Explanations of single predictions, written only when asked (``--explain N``): which words of a note, or which
region of an image, moved the model towards what it predicted.

- Text (classification and NER): integrated gradients over the input embeddings (Captum's
  ``LayerIntegratedGradients``; baseline: every token but the special ones replaced by padding), summed over the
  embedding dimensions and over the subwords of each whitespace-separated word. A long note is explained in the
  windows it was predicted from: with the mean of the windows' logits each window's attributions count 1/n; with
  their maximum only the window that gave it counts.
- Concepts (assertion status, relations): the same over the marked sentence the model read. The entity markers are
  special tokens, so the baseline keeps them: they are shown, flagged ``"marker"``, and never ranked as evidence.
- Images: ViT-style backbones, attention rollout over the patch grid (where the [CLS] token drew its information
  from; Grad-CAM on patch tokens missed a planted cue in most images); CNN backbones, Grad-CAM of the explained
  class on the last feature map. The heat map is upsampled to the image and laid over it.

What is written holds note text or image content, like the prediction files: the model card and README name these
files as sensitive. Nothing is logged but counts.
"""

from __future__ import annotations

import html
import logging
import os
import re
from collections.abc import Callable, Sequence

import numpy as np
import torch

from shared.concepts.markers import MARKER_TOKENS, fit_around
from shared.core.files import atomic_write_json, atomic_write_text, save_figure
from shared.data.labels import decisions
from shared.formats.tags import to_scheme
from shared.images.backbone import is_convolutional

logger = logging.getLogger(__name__)

IG_STEPS = 32  # integration steps; Captum's convergence delta is reported per explanation
WORD = re.compile(r"\S+")
PAGE_HEAD = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Explanations</title><style>"
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.8}"
    ".ex{border-bottom:1px solid #ccc;padding:1em 0}.w{padding:0.1em 0.15em;border-radius:0.2em}"
    ".meta{color:#444;font-size:0.9em}.mk{color:#555;font-weight:bold;font-size:0.85em}</style></head><body>"
    "<h1>Word attributions (integrated gradients)</h1><p class='meta'>Green: the word pushed the model towards its "
    "prediction; red: away from it. Contains note text: handle as patient data.</p>"
)


def words_of(text: str) -> list[tuple[int, int]]:
    """Character spans of the whitespace-separated words of ``text``."""
    return [m.span() for m in WORD.finditer(text)]


def _special_mask(tokenizer, ids: Sequence[int]) -> np.ndarray:
    return np.asarray(tokenizer.get_special_tokens_mask(list(ids), already_has_special_tokens=True), dtype=bool)


@torch.enable_grad()
def token_attributions(model, tokenizer, encoding: dict, score: Callable[[torch.Tensor], torch.Tensor],
                       steps: int = IG_STEPS) -> tuple[np.ndarray, float]:
    """Integrated-gradients attribution of every token of one encoded window to ``score(logits)`` (a scalar per
    example of the batch), and Captum's convergence delta (how far the attributions' sum is from
    score(input) - score(baseline))."""
    from captum.attr import LayerIntegratedGradients

    device = next(model.parameters()).device
    ids = torch.tensor([encoding["input_ids"]], device=device)
    extra = {k: torch.tensor([v], device=device) for k, v in encoding.items()
             if k in ("attention_mask", "token_type_ids")}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    baseline = ids.clone()
    baseline[0, torch.from_numpy(~_special_mask(tokenizer, encoding["input_ids"])).to(device)] = pad

    def forward(input_ids, *values):
        kwargs = {name: value.expand(len(input_ids), -1) for name, value in zip(extra, values)}
        return score(model(input_ids=input_ids, **kwargs).logits)

    explainer = LayerIntegratedGradients(forward, model.get_input_embeddings())
    attributions, delta = explainer.attribute(ids, baselines=baseline, additional_forward_args=tuple(extra.values()),
                                              n_steps=steps, internal_batch_size=steps,
                                              return_convergence_delta=True)
    return attributions.sum(dim=-1)[0].detach().float().cpu().numpy(), float(delta.abs().max())


def windows_of(tokenizer, text: str, pair: str | None, max_length: int, stride: int | None) -> list[tuple]:
    """The windows the recipe reads ``text`` (+ ``pair``) in, as (model inputs, character offsets, sequence id of
    each token): overlapping windows with ``stride`` (``--long_text chunk``, as ``encode_windows``), else the first
    one (``truncate``)."""
    chunk = stride is not None
    batch = tokenizer([text], None if pair is None else [pair], max_length=max_length, verbose=False,
                      truncation="only_second" if chunk and pair is not None else True, stride=stride or 0,
                      return_overflowing_tokens=chunk, return_offsets_mapping=True)
    return [({k: batch[k][w] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch},
             batch["offset_mapping"][w], batch.sequence_ids(w)) for w in range(len(batch["input_ids"]))]


def word_scores(texts: Sequence[str], windows: list[tuple], token_scores: list[np.ndarray],
                weights: Sequence[float]) -> list[dict]:
    """Per-word attributions of a note (``texts``: the text, and the pair if any) from its windows' token
    attributions: each token adds ``weight`` x its score to the word its first character falls in.
    Returns [{"word", "score", "segment"}] (segment 0: the text, 1: the pair)."""
    spans = [words_of(t) for t in texts]
    starts = [[s for s, _ in sp] for sp in spans]
    scores = [np.zeros(len(sp)) for sp in spans]
    for (_, offsets, segments), tokens, weight in zip(windows, token_scores, weights):
        if not weight:
            continue
        for token, ((start, end), segment) in enumerate(zip(offsets, segments)):
            if segment is None or end <= start:  # special tokens
                continue
            word = int(np.searchsorted(starts[segment], start, side="right")) - 1
            if word >= 0:
                scores[segment][word] += weight * tokens[token]
    return [{"word": t[s:e], "score": float(v), "segment": segment}
            for segment, (t, sp, sc) in enumerate(zip(texts, spans, scores)) for (s, e), v in zip(sp, sc)]


def explain_texts(model, tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, classes: Sequence[int],
                  max_length: int, stride: int | None, aggregation: str = "mean",
                  steps: int = IG_STEPS) -> list[dict]:
    """Word attributions towards class ``classes[i]`` of every note ``texts[i]`` (and ``pairs[i]``), read in the
    windows the recipe reads (:func:`windows_of`). Per note: {"words": [...], "windows": n, "convergence_delta"}."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for i, text in enumerate(texts):
            note = [text] if pairs is None else [text, pairs[i]]
            target = int(classes[i])
            windows = windows_of(tokenizer, text, None if pairs is None else pairs[i], max_length, stride)
            if aggregation == "first":  # only the first window made the prediction
                windows = windows[:1]
            scores, deltas, logits = [], [], []
            for inputs, _, _ in windows:
                tokens, delta = token_attributions(model, tokenizer, inputs, lambda z, t=target: z[:, t], steps)
                scores.append(tokens)
                deltas.append(delta)
                if aggregation == "max" and len(windows) > 1:
                    with torch.no_grad():
                        batch = {k: torch.tensor([v], device=device) for k, v in inputs.items()}
                        logits.append(float(model(**batch).logits[0, target]))
            if logits:  # max: only the window that gave the note's logit moved it
                weights = [float(k == int(np.argmax(logits))) for k in range(len(windows))]
            else:
                weights = [1.0 / len(windows)] * len(windows)
            out.append({"words": word_scores(note, windows, scores, weights), "windows": len(windows),
                        "convergence_delta": max(deltas)})
    finally:
        model.train(was_training)
    return out


def explain_text_predictions(output_dir: str, prefix: str, model, tokenizer, texts: Sequence[str],
                             pairs: Sequence[str] | None, rows: Sequence[int], probs: np.ndarray,
                             label_names: list[str], multi_label: bool, thresholds, max_length: int,
                             stride: int | None, aggregation: str, n: int) -> list[dict]:
    """Explain the first ``n`` predictions of a split of the text classifier and write them
    (:func:`write_text_explanations`): the predicted class, or for multi-label the most probable label."""

    n = min(n, len(texts))
    probs = np.asarray(probs)[:n]
    targets = probs.argmax(axis=1)
    decided = decisions(probs, label_names, multi_label, thresholds)
    found = explain_texts(model, tokenizer, list(texts[:n]), None if pairs is None else list(pairs[:n]), targets,
                          max_length, stride, aggregation)
    explained = [{"row": int(rows[i]), "prediction": decided[i], "explained_label": label_names[targets[i]],
                  "probability": float(probs[i, targets[i]]), **found[i]} for i in range(n)]
    write_text_explanations(output_dir, prefix, explained)
    return explained


def explain_marked_predictions(output_dir: str, prefix: str, model, tokenizer, sentences: Sequence[Sequence[str]],
                               rows: Sequence[int], probs: np.ndarray, label_names: list[str], max_length: int,
                               n: int) -> list[dict]:
    """Explain the first ``n`` predictions of a concept recipe (assertion status, relation) towards the predicted
    class and write them (:func:`write_text_explanations`). ``sentences``: each example's marked sentence as words;
    it is explained as the model read it (cut to ``max_length`` tokens around its markers, as
    ``shared.concepts.encode.encode_marked`` does). Marker words carry ``"marker": true``; their attribution is 0
    (the baseline keeps them), and :func:`top_words` skips them."""

    n = min(n, len(sentences))
    probs = np.asarray(probs)[:n]
    targets = probs.argmax(axis=1)
    read = [fit_around(tokenizer, list(words), max_length)[0] for words in sentences[:n]]
    found = explain_texts(model, tokenizer, [" ".join(words) for words in read], None, targets, max_length, None)
    explained = []
    for i, item in enumerate(found):
        for word in item["words"]:
            word["marker"] = word["word"] in MARKER_TOKENS
        label = label_names[targets[i]]
        explained.append({"row": int(rows[i]), "prediction": label, "explained_label": label,
                          "probability": float(probs[i, targets[i]]), **item})
    write_text_explanations(output_dir, prefix, explained)
    return explained


def _colour(score: float, scale: float) -> str:
    strength = 0.0 if scale == 0 else min(1.0, abs(score) / scale)
    rgb = (40, 160, 60) if score > 0 else (210, 50, 50)
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{0.85 * strength:.3f})"


def write_text_explanations(output_dir: str, prefix: str, explained: list[dict]) -> None:
    """``{prefix}_explanations.json`` (per example: row, prediction, probability, words and scores) and
    ``{prefix}_explanations.html`` (one self-contained page: each word highlighted green where it pushed towards the
    prediction, red where it pushed away, stronger for larger attributions)."""
    atomic_write_json(os.path.join(output_dir, f"{prefix}_explanations.json"), explained)
    parts = [PAGE_HEAD]
    for item in explained:
        words = item["words"]
        scale = max((abs(w["score"]) for w in words if not w.get("marker")), default=0.0)
        label = html.escape(str(item["prediction"]))
        scored_for = html.escape(str(item.get("explained_label", item["prediction"])))
        head = (f"<div class='ex'><p class='meta'>row {item['row']}: prediction <b>{label}</b>; words scored for "
                f"<b>{scored_for}</b> (probability {item['probability']:.3f})</p><p>")
        body, segment = [], 0
        for w in words:
            if w.get("segment", 0) != segment:
                segment = w["segment"]
                body.append("</p><p>")
            if w.get("marker"):  # an entity marker: where the concept is, not evidence
                body.append(f"<span class='mk'>{html.escape(w['word'])}</span>")
                continue
            body.append(f"<span class='w' style='background:{_colour(w['score'], scale)}' "
                        f"title='{w['score']:.4f}'>{html.escape(w['word'])}</span>")
        parts.append(head + " ".join(body) + "</p></div>")
    parts.append("</body></html>")
    atomic_write_text(os.path.join(output_dir, f"{prefix}_explanations.html"), "\n".join(parts))
    logger.info("%s: %d predictions explained in %s_explanations.{html,json}", prefix, len(explained), prefix)


def top_words(words: list[dict], k: int = 1) -> list[int]:
    """Indices of the ``k`` words with the largest attribution towards the prediction; entity markers never
    count."""
    order = np.argsort([-w["score"] for w in words], kind="stable")
    return [int(i) for i in order if not words[i].get("marker")][:k]


def _transformers_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@torch.no_grad()
def attention_rollout(model, pixel_values: torch.Tensor) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) of a ViT-style model: the attention of every layer, averaged over
    heads, with the residual connection as 0.5 A + 0.5 I, multiplied through the layers; the [CLS] token's row over
    the patch tokens (the last rows x columns tokens) is the map. Runs with eager attention (the only kernel that
    returns attention weights), switched back afterwards."""
    inner = _transformers_model(model)
    kernel = getattr(inner.config, "_attn_implementation", None)
    if kernel not in (None, "eager"):
        inner.set_attn_implementation("eager")
    try:
        attentions = model(pixel_values=pixel_values, output_attentions=True).attentions
    finally:
        if kernel not in (None, "eager"):
            inner.set_attn_implementation(kernel)
    tokens = attentions[0].shape[-1]
    identity = torch.eye(tokens, device=pixel_values.device)
    rollout = identity.expand(len(pixel_values), tokens, tokens)
    for attention in attentions:
        mixed = 0.5 * attention.float().mean(dim=1) + 0.5 * identity
        rollout = (mixed / mixed.sum(dim=-1, keepdim=True)) @ rollout
    patch = inner.config.patch_size if isinstance(inner.config.patch_size, int) else inner.config.patch_size[0]
    rows, columns = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
    return rollout[:, 0, -rows * columns:].reshape(len(pixel_values), rows, columns).cpu().numpy()


@torch.enable_grad()
def grad_cam(model, pixel_values: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., 2017) of class ``targets[i]`` on a CNN's last feature map: the feature maps
    weighted by their mean gradient, summed, negative evidence cut."""
    x = pixel_values.detach().clone().requires_grad_(True)  # so the maps have gradients under frozen layers
    output = model(pixel_values=x, output_hidden_states=True)
    features = output.hidden_states[-1]
    chosen = output.logits[torch.arange(len(x)), torch.as_tensor(list(targets), device=x.device)]
    (gradients,) = torch.autograd.grad(chosen.sum(), features)
    return torch.relu((gradients.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1)).detach().float().cpu().numpy()


def heat_maps(model, pixel_values: torch.Tensor, targets: Sequence[int]) -> tuple[np.ndarray, str]:
    """Where the model looked, per image (examples x grid rows x grid columns, each scaled to a maximum of 1), and
    the method: attention rollout for ViT-style models (those with a patch size), Grad-CAM of the explained class
    for CNNs (ResNet, ConvNeXt, EfficientNet: on the last stage's / block's feature map). Measured on a planted-cue
    set (tests/recipes/test_explanations.py), Grad-CAM on a ViT's patch tokens
    found the cue in 5 of 40 images, rollout in 40 of 40."""

    config = _transformers_model(model).config
    was_training = model.training
    model.eval()
    try:  # ConvNeXt has a patch size too (its stem's stride), and no attention
        if getattr(config, "patch_size", None) is not None and not is_convolutional(config):
            cam, method = attention_rollout(model, pixel_values), "attention rollout"
        else:
            cam, method = grad_cam(model, pixel_values, targets), "Grad-CAM"
    finally:
        model.train(was_training)
    peak = cam.reshape(len(cam), -1).max(axis=1).clip(min=1e-12)
    return cam / peak[:, None, None], method


def save_overlay(image: np.ndarray, heat: np.ndarray, path: str, title: str) -> None:
    """``image`` (H x W x 3, uint8) with the heat map (upsampled bilinearly) laid over it, as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt


    height, width = image.shape[:2]
    upsampled = torch.nn.functional.interpolate(torch.from_numpy(heat)[None, None].float(), size=(height, width),
                                                mode="bilinear", align_corners=False)[0, 0].numpy()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(image)
    ax.imshow(upsampled, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    save_figure(fig, path)
    plt.close(fig)


def explain_image_predictions(output_dir: str, prefix: str, model, dataset, images: torch.Tensor,
                              rows: Sequence[int], probs: np.ndarray, label_names: list[str], multi_label: bool,
                              thresholds, n: int, batch_size: int = 8) -> list[dict]:
    """Heat maps (:func:`heat_maps`) for the first ``n`` images of a split (Grad-CAM: of the predicted class;
    multi-label: of the most probable label):
    ``{prefix}_explanations/row_<row>.png`` overlays and ``{prefix}_explanations.json`` (row, prediction, explained
    label, probability, the heat map on the patch / feature grid and its peak cell). ``dataset[i]["pixel_values"]``
    is what the model reads, ``images`` the decoded uint8 images (N x 3 x H x W) the overlays are drawn on."""

    n = min(n, len(dataset))
    probs = np.asarray(probs)[:n]
    targets = probs.argmax(axis=1)
    decided = decisions(probs, label_names, multi_label, thresholds)
    folder = os.path.join(output_dir, f"{prefix}_explanations")
    os.makedirs(folder, exist_ok=True)
    device = next(model.parameters()).device
    explained = []
    for start in range(0, n, batch_size):
        index = range(start, min(n, start + batch_size))
        pixels = torch.stack([dataset[i]["pixel_values"] for i in index]).to(device)
        maps, method = heat_maps(model, pixels, [int(targets[i]) for i in index])
        for i, heat in zip(index, maps):
            label = label_names[targets[i]]
            peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
            save_overlay(images[i].permute(1, 2, 0).cpu().numpy(), heat, os.path.join(folder, f"row_{rows[i]}.png"),
                         f"row {rows[i]}: {label} ({probs[i, targets[i]]:.2f})")
            explained.append({"row": int(rows[i]), "prediction": decided[i], "explained_label": label, "method": method,
                              "probability": float(probs[i, targets[i]]), "peak": [int(peak[0]), int(peak[1])],
                              "heat_map": np.round(heat, 4).tolist()})
    atomic_write_json(os.path.join(output_dir, f"{prefix}_explanations.json"), explained)
    logger.info("%s: %d predictions explained in %s_explanations/", prefix, n, prefix)
    return explained


def explain_entities(output_dir: str, prefix: str, model, tokenizer, windows: list, words: list[list[str]],
                     tags: list[list[str]], label2id: dict[str, int], scheme: str, n: int,
                     steps: int = IG_STEPS) -> list[dict]:
    """Word attributions for every predicted entity of the first ``n`` examples of a NER split: integrated
    gradients of the sum of the entity's predicted tag scores (its words' first subwords; a CRF's emissions) over
    every window that predicts part of it, summed per word of the example. ``tags``: the predicted IOB2 tags;
    ``windows``: the recipe's windows (``shared.ner.windows.Window``); ``model``: the token classifier without
    the CRF. Written as :func:`write_text_explanations` writes them, one block per entity."""
    from seqeval.metrics.sequence_labeling import get_entities


    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    explained = []
    try:
        for example in range(min(n, len(words))):
            internal = to_scheme(tags[example], scheme)
            own = [w for w in windows if w.example == example]
            for kind, start, end in get_entities(list(tags[example])):
                inside = set(range(start, end + 1))
                scores, probabilities = np.zeros(len(words[example])), []
                for window in own:
                    targets = [(p, label2id[internal[window.word_ids[p]]]) for p in window.owned
                               if window.word_ids[p] in inside]
                    if not targets:
                        continue
                    inputs = {"input_ids": list(window.input_ids), "attention_mask": [1] * len(window.input_ids)}
                    positions = [p for p, _ in targets]
                    labels_at = [t for _, t in targets]

                    def score(logits, positions=positions, labels_at=labels_at):
                        return logits[:, positions, labels_at].sum(dim=-1)

                    tokens, _ = token_attributions(model, tokenizer, inputs, score, steps)
                    for position, word in enumerate(window.word_ids):
                        if word is not None:
                            scores[word] += tokens[position]
                    with torch.no_grad():
                        logits = model(input_ids=torch.tensor([inputs["input_ids"]], device=device)).logits[0]
                        probabilities += torch.softmax(logits.float(), -1)[positions, labels_at].tolist()
                explained.append({
                    "row": example, "prediction": kind, "explained_label": f"{kind} '{' '.join(words[example][start:end + 1])}'",
                    "start_word": start, "end_word": end, "probability": float(np.mean(probabilities)),
                    "words": [{"word": word, "score": float(s), "segment": 0}
                              for word, s in zip(words[example], scores)]})
    finally:
        model.train(was_training)
    write_text_explanations(output_dir, prefix, explained)
    return explained
