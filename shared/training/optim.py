"""Layer freezing and layer-wise learning-rate decay for any encoder (BERT, RoBERTa, ViT, DINOv2, ...) and for
convolutional backbones (ResNet, ConvNeXt, EfficientNet), whose "layers" are their stages.

Small medical datasets over-write pretrained knowledge quickly; lower layers hold the most general features, so
they are frozen or trained with a smaller learning rate than the layers near the task head.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable

import torch
from torch import nn

from shared.core.errors import DataError

logger = logging.getLogger(__name__)

# ".layer.3." (BERT, ViT, DINOv2), ".layers.3." , ".blocks.3." , ".h.3." (GPT-style): the encoder block index
_LAYER = re.compile(r"\.(?:layer|layers|blocks|h)\.(\d+)\.")
# ".stages.2." (ResNet, ConvNeXt): a CNN's stage, matched before the blocks (".layers.j.") inside it
_STAGE = re.compile(r"\.stages\.(\d+)\.")
_NO_DECAY = ("bias", "LayerNorm.weight", "layernorm.weight", "layer_norm.weight", "norm.weight")


def _block_index(name: str) -> int | None:
    return int(m.group(1)) if (m := _LAYER.search(name)) else None


def _efficientnet_stages(config) -> list[int]:
    """Stage of each of EfficientNet's blocks (a flat ``encoder.blocks`` list): its config's base blocks, each
    repeated ``ceil(depth_coefficient * num_block_repeats[i])`` times (B0: 16 blocks in 7 stages). [] for others."""
    if getattr(config, "model_type", None) != "efficientnet":
        return []
    repeats = [math.ceil(config.depth_coefficient * n) for n in config.num_block_repeats]
    return [stage for stage, n in enumerate(repeats) for _ in range(n)]


def layer_index(model: nn.Module) -> Callable[[str], int | None]:
    """``parameter name -> the encoder layer it is in`` (None: embeddings, or above the encoder). A transformer's
    layers are its blocks; a CNN's are its stages: ResNet's and ConvNeXt's ``stages.i``, EfficientNet's blocks
    grouped into the stages of its config (:func:`_efficientnet_stages`)."""
    stage_of_block = _efficientnet_stages(getattr(model, "config", None))

    def index(name: str) -> int | None:
        if m := _STAGE.search(name):
            return int(m.group(1))
        block = _block_index(name)
        if block is not None and block < len(stage_of_block):
            return stage_of_block[block]
        return block

    return index


def num_encoder_layers(model: nn.Module) -> int:
    index = layer_index(model)
    indices = [i for name, _ in model.named_parameters() if (i := index(name)) is not None]
    if not indices:
        raise DataError(f"cannot find encoder layers in {type(model).__name__} (--freeze_layers, --layerwise_lr_decay)")
    return max(indices) + 1


def parameter_depth(name: str, num_layers: int, index: Callable[[str], int | None] = _block_index) -> int:
    """0 for embeddings (a CNN's stem), ``i + 1`` for encoder layer ``i`` (``index``: :func:`layer_index` of the
    model), ``num_layers + 1`` for everything above (head, pooler, final norm; EfficientNet's ``top_conv``)."""
    if (layer := index(name)) is not None:
        return layer + 1
    if "embed" in name:
        return 0
    return num_layers + 1


def layers_to_freeze(model: nn.Module, spec: float) -> int:
    """``--freeze_layers`` as a count: whole numbers are layers, a fraction in (0, 1) a share of them (rounded down)."""
    if spec <= 0:
        return 0
    if spec < 1:
        return int(spec * num_encoder_layers(model) + 1e-9)  # 1/3 of 6 is 2, not 1.999...
    return int(spec)


def freeze_encoder_layers(model: nn.Module, spec: float) -> int:
    """Freeze the embeddings and the bottom encoder blocks (``spec``: a count, or a fraction of the layers).

    Returns how many parameters were frozen (0 when ``spec`` resolves to no layer)."""
    num_frozen = layers_to_freeze(model, spec)
    if num_frozen <= 0:
        return 0
    num_layers, index = num_encoder_layers(model), layer_index(model)
    if num_frozen > num_layers:
        raise DataError(f"--freeze_layers {num_frozen} exceeds the model's {num_layers} encoder layers")
    frozen = 0
    for name, param in model.named_parameters():
        if parameter_depth(name, num_layers, index) <= num_frozen:
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def input_embeddings(model: nn.Module) -> nn.Module:
    """The token (or patch) embedding module; a CNN's stem (ResNet ``embedder``, ConvNeXt / EfficientNet
    ``embeddings``), which transformers' ``get_input_embeddings`` does not know."""
    try:
        embeddings = model.get_input_embeddings()
    except NotImplementedError:
        embeddings = None
    for name in ("embedder", "embeddings"):
        if embeddings is None:
            embeddings = getattr(getattr(model, "base_model", model), name, None)
    if not isinstance(embeddings, nn.Module):
        raise DataError(f"cannot find the input embeddings of {type(model).__name__} (--freeze_embeddings)")
    return embeddings


def freeze_input_embeddings(model: nn.Module) -> int:
    """Freeze the token (or patch) embedding module, a CNN's stem; returns how many parameters were frozen."""
    embeddings = input_embeddings(model)
    frozen = sum(p.numel() for p in embeddings.parameters() if p.requires_grad)
    embeddings.requires_grad_(False)
    return frozen


def freeze(model: nn.Module, model_args) -> int:
    """Apply ``--freeze_layers`` and ``--freeze_embeddings``; returns the number of frozen encoder layers (logged)."""
    frozen_layers = layers_to_freeze(model, model_args.freeze_layers)
    frozen = freeze_encoder_layers(model, frozen_layers)
    if model_args.freeze_embeddings:
        frozen += freeze_input_embeddings(model)
    if frozen:
        logger.info("froze %d parameters (%s%d encoder layers)", frozen,
                    "input embeddings + " if model_args.freeze_embeddings else "", frozen_layers)
    return frozen_layers


def layerwise_lr_groups(model: nn.Module, learning_rate: float, decay: float, weight_decay: float) -> list[dict]:
    """Parameter groups where depth ``d`` gets ``learning_rate * decay ** (num_layers + 1 - d)``.

    The head trains at the full learning rate, the top block at ``lr * decay``, ..., the embeddings at
    ``lr * decay ** (num_layers + 1)``. Biases and norm weights get no weight decay, as in Trainer.
    """
    num_layers, index = num_encoder_layers(model), layer_index(model)
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = parameter_depth(name, num_layers, index)
        no_decay = name.endswith(_NO_DECAY)
        key = (depth, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": learning_rate * decay ** (num_layers + 1 - depth),
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[key]["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def optimizer_cls_and_kwargs(model: nn.Module, training_args, decay: float):
    """``Trainer(optimizer_cls_and_kwargs=...)`` for layer-wise decay; None (Trainer's own optimizer) when ``decay == 1``.

    Trainer still creates the optimizer and the learning-rate schedule; the schedule scales every group's LR.
    """
    if decay >= 1.0:
        return None
    groups = layerwise_lr_groups(model, training_args.learning_rate, decay, training_args.weight_decay)
    kwargs = {
        "params": groups,
        "lr": training_args.learning_rate,
        "betas": (training_args.adam_beta1, training_args.adam_beta2),
        "eps": training_args.adam_epsilon,
    }
    if "fused" in str(getattr(training_args.optim, "value", training_args.optim)):  # keep --optim adamw_torch_fused
        kwargs["fused"] = True
    return torch.optim.AdamW, kwargs
