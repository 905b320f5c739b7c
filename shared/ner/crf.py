"""Optional CRF output layer (``--use_crf``): pytorch-crf trained jointly with the encoder, constrained Viterbi.

The encoder + linear head (any ``AutoModelForTokenClassification``) gives per-subword emission scores; a linear-chain
CRF (``torchcrf.CRF``) adds tag-to-tag transition scores and is trained on the negative log-likelihood of the gold
tag sequence. The CRF runs over the positions that carry labels (every subword of a word with
``--label_alignment all``, first subwords with ``first``), compacted to the left, so ignored positions (-100) never
break the chain.

Decoding is Viterbi with the transitions the tag scheme forbids set to -inf (IOB2: ``I-X`` only after ``B-X``/``I-X``,
never first; BIOES also: ``I-X``/``E-X`` only after ``B-X``/``I-X``, ``B-X``/``I-X`` never last), so an invalid tag
sequence cannot be emitted whatever the emissions are.

Saved beside the model: ``crf.safetensors`` (the CRF's parameters) and ``"crf": {...}`` in ``config.json``; the
folder still loads into ``pipeline("token-classification")``, which then reads the emissions without the CRF.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers.modeling_outputs import TokenClassifierOutput

CRF_WEIGHTS = "crf.safetensors"
NEG_INF = -1e4  # large enough to never win, finite so that log-sum-exp stays finite


def allowed_transitions(labels: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boolean ``start[j]``, ``trans[i, j]`` (tag i followed by tag j) and ``end[i]`` masks of valid transitions,
    for IOB2 or BIOES label lists (the scheme follows from the prefixes present)."""
    n = len(labels)
    parts = [(lab[0], lab[2:]) if lab != "O" else ("O", None) for lab in labels]
    inside = {"I", "E"}  # tags that continue an entity
    open_ = {"B", "I"}  # after these, the entity continues (BIOES) / may continue (IOB2)
    bioes = any(p in ("E", "S") for p, _ in parts)
    start = torch.tensor([p not in inside for p, _ in parts])
    end = torch.tensor([not (bioes and p in open_) for p, _ in parts])
    trans = torch.zeros((n, n), dtype=torch.bool)
    for i, (pi, ti) in enumerate(parts):
        for j, (pj, tj) in enumerate(parts):
            continues = pi in open_ and ti == tj
            if pj in inside:
                ok = continues
            else:  # O, B-, S- start fresh: in BIOES the previous entity must have been closed
                ok = not (bioes and pi in open_)
            trans[i, j] = ok
    return start, trans, end


def _compact(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices that move the ``mask``ed positions of every row to the left (in order), and the compact mask."""
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    lengths = mask.sum(1, keepdim=True)
    compact = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0) < lengths
    return order, compact


class CrfTokenClassifier(nn.Module):
    """A token-classification model with a CRF on top; ``forward`` returns the CRF loss and the emissions."""

    # Trainer passes ``num_items_in_batch`` (labelled positions over all processes and accumulation steps) and then
    # multiplies the loss by the number of processes: dividing by it makes 2 processes x batch b train as 1 x 2b.
    accepts_loss_kwargs = True

    def __init__(self, model: nn.Module, labels: list[str]):
        super().__init__()
        from torchcrf import CRF

        self.model = model
        self.labels = list(labels)
        self.crf = CRF(len(labels), batch_first=True)
        start, trans, end = allowed_transitions(labels)
        self.register_buffer("allowed_start", start, persistent=False)
        self.register_buffer("allowed_trans", trans, persistent=False)
        self.register_buffer("allowed_end", end, persistent=False)

    @property
    def config(self):
        return self.model.config

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, num_items_in_batch=None,
                **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        logits = out.logits
        loss = None
        if labels is not None:
            loss = self.neg_log_likelihood(logits, labels, num_items_in_batch)
        return TokenClassifierOutput(loss=loss, logits=logits)

    def neg_log_likelihood(self, emissions: torch.Tensor, labels: torch.Tensor,
                           num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        """Negative log-likelihood per labelled position (the scale of token cross-entropy): the sum over this
        batch divided by ``num_items_in_batch`` when given, else by this batch's labelled positions."""
        mask = labels != -100
        keep = mask.any(1)  # windows without any labelled position (empty sentences) carry no loss
        if not keep.any():
            return emissions.sum() * 0.0
        emissions, labels, mask = emissions[keep], labels[keep], mask[keep]
        order, compact = _compact(mask)
        em = emissions.gather(1, order.unsqueeze(-1).expand(-1, -1, emissions.shape[-1])).float()
        tags = labels.gather(1, order).masked_fill(~compact, 0)
        with torch.autocast(em.device.type, enabled=False):
            llh = self.crf(em, tags, mask=compact, reduction="sum")
        return -llh / (compact.sum() if num_items_in_batch is None else num_items_in_batch)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
        """Constrained Viterbi over the ``scored`` positions of every row; other positions get the emission argmax
        (they are never read). Returns label ids of shape ``emissions.shape[:2]``."""
        out = emissions.argmax(-1)
        keep = scored.any(1)
        if not keep.any():
            return out
        rows = keep.nonzero().squeeze(1)
        order, compact = _compact(scored[rows])
        em = emissions[rows].float().gather(1, order.unsqueeze(-1).expand(-1, -1, emissions.shape[-1]))
        paths = constrained_viterbi(em, compact, self.crf.start_transitions.float(), self.crf.transitions.float(),
                                    self.crf.end_transitions.float(), self.allowed_start, self.allowed_trans,
                                    self.allowed_end)
        sub = out[rows]
        sub.scatter_(1, order, torch.where(compact, paths, sub.gather(1, order)))
        out[rows] = sub
        return out

    # ------------------------------------------------------------------------------------------ save / load
    def save_crf(self, output_dir: str) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.crf.state_dict().items()},
                  os.path.join(output_dir, CRF_WEIGHTS))

    def load_crf(self, model_dir: str) -> None:
        from safetensors.torch import load_file

        self.crf.load_state_dict(load_file(os.path.join(model_dir, CRF_WEIGHTS)))


def has_crf(model_dir: str) -> bool:
    return os.path.isfile(os.path.join(model_dir, CRF_WEIGHTS))


def mean_crf(model_dirs: list[str], labels: list[str]) -> CrfTokenClassifier:
    """A CRF (no encoder) whose start, transition and end scores are the means of those saved in ``model_dirs``. Its
    Viterbi over the mean of the members' emissions finds the tag path with the highest mean member score: what a
    fold ensemble of CRF models decodes with (one member: that member's own decoding)."""
    from safetensors.torch import load_file

    crf = CrfTokenClassifier(nn.Module(), labels)
    states = [load_file(os.path.join(folder, CRF_WEIGHTS)) for folder in model_dirs]
    crf.crf.load_state_dict({key: torch.stack([s[key] for s in states]).mean(0) for key in states[0]})
    return crf


def constrained_viterbi(emissions, mask, start, trans, end, allowed_start, allowed_trans, allowed_end):
    """Best tag path per row under the allowed-transition masks (batch-first; ``mask`` left-aligned, first
    position on). Returns ``(batch, seq)`` tag ids; positions beyond a row's length are 0."""
    start = start.masked_fill(~allowed_start, NEG_INF)
    trans = trans.masked_fill(~allowed_trans, NEG_INF)
    end = end.masked_fill(~allowed_end, NEG_INF)
    batch, seq, n = emissions.shape
    score = start + emissions[:, 0]  # (batch, n)
    history = []
    for t in range(1, seq):
        cand = score.unsqueeze(2) + trans.unsqueeze(0) + emissions[:, t].unsqueeze(1)  # (batch, prev, next)
        best, idx = cand.max(1)
        on = mask[:, t].unsqueeze(1)
        score = torch.where(on, best, score)
        history.append(torch.where(on, idx, torch.arange(n, device=idx.device).expand_as(idx)))
    score = score + end
    last = score.argmax(1)
    path = torch.zeros((batch, seq), dtype=torch.long, device=emissions.device)
    lengths = mask.sum(1)
    cur = last
    for t in range(seq - 1, -1, -1):
        # positions past a row's end hold the identity back-pointer, so ``cur`` passes through them unchanged
        path[:, t] = torch.where(t < lengths, cur, torch.zeros_like(cur))
        if t > 0:
            cur = history[t - 1].gather(1, cur.unsqueeze(1)).squeeze(1)
    return path
