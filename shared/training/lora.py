"""LoRA through PEFT: sensible target modules per architecture, the task head trained and saved, merging; rows of
the input embeddings (added tokens such as the concept recipes' entity markers) trained and saved with the adapter.

What :func:`save_model` writes is loaded back by :func:`shared.training.models.load_trained`.
"""

from __future__ import annotations

import logging

from torch import nn

from shared.core.distributed import full_state_dict
from shared.core.errors import DataError

logger = logging.getLogger(__name__)

# Attention query/value projections (the LoRA paper's choice). transformers renames them between versions and
# architectures (BERT `query`/`value`, ViT/DINOv2 in 5.x `q_proj`/`v_proj`, DistilBERT `q_lin`/`v_lin`, ...), so
# the first spelling that exists in the model is used.
ATTENTION_PROJECTIONS = [
    ["query", "value"],
    ["q_proj", "v_proj"],
    ["query_proj", "value_proj"],
    ["q_lin", "v_lin"],
    ["Wqkv"],
    ["in_proj"],
    ["qkv"],
]


# Convolutional backbones, by config.model_type (PEFT's LoRA wraps nn.Conv2d as it wraps nn.Linear):
# - ResNet: `convolution`, the conv of every ResNetConvLayer (stem, blocks, shortcuts), as in PEFT's own ResNet tests;
# - ConvNeXt: `pwconv1`/`pwconv2`, the pointwise (Linear) MLP of each block, which holds most of its weights (the
#   7x7 depthwise conv beside it has 49 weights per channel);
# - EfficientNet: the 1x1 convolutions, `expand_conv`/`project_conv` of each MBConv block and the `top_conv` before
#   pooling (the depthwise convs and squeeze-excitation convs are small).
CONV_TARGETS = {
    "resnet": ["convolution"],
    "convnext": ["pwconv1", "pwconv2"],
    "efficientnet": ["expand_conv", "project_conv", "top_conv"],
}


def default_lora_targets(model: nn.Module) -> list[str]:
    if (targets := CONV_TARGETS.get(getattr(model.config, "model_type", None))) is not None:
        return list(targets)
    leaf_names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    for candidates in ATTENTION_PROJECTIONS:
        if all(c in leaf_names for c in candidates):
            return candidates
    raise DataError(
        f"no default LoRA target modules for model type '{model.config.model_type}'; pass --lora_target_modules"
    )


def head_modules(model: nn.Module) -> list[str]:
    """The task-specific modules on top of the pretrained backbone (e.g. ``classifier``): trained fully and saved."""
    return [
        name
        for name, child in model.named_children()
        if name != model.base_model_prefix and any(True for _ in child.parameters())
    ]


def batch_norm_modules(model: nn.Module) -> list[str]:
    """The names (last component) of the model's batch-norm layers. In train mode they update their running
    statistics even when frozen, so under LoRA they are trained and saved with the adapter (as PEFT's own tests of
    ResNet do: ``modules_to_save=["classifier", "normalization"]``); otherwise a reloaded adapter would normalise
    with the checkpoint's statistics, not those the model was trained and evaluated with. A name that other kinds of
    module also carry is given in full."""
    batch_norm, other = [], set()
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            batch_norm.append(name)
        elif name:
            other.add(name.rsplit(".", 1)[-1])
    leaves = (name.rsplit(".", 1)[-1] for name in batch_norm)
    return sorted({leaf if leaf not in other else name for name, leaf in zip(batch_norm, leaves)})


def apply_lora(model: nn.Module, model_args, extra_modules_to_save: list[str] | None = None,
               trainable_tokens: list[int] | None = None):
    """Wrap ``model`` with LoRA adapters; the head, batch-norm layers (:func:`batch_norm_modules`) and
    ``extra_modules_to_save`` stay fully trainable and are saved with the adapter. ``trainable_tokens``: ids whose
    input-embedding rows are trained too (PEFT's ``trainable_token_indices``: only those rows are saved with the
    adapter, not the whole matrix), e.g. marker tokens added to the tokenizer, which no pretrained row knows."""
    from peft import LoraConfig, get_peft_model

    targets = model_args.lora_targets() or default_lora_targets(model)
    config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
        modules_to_save=head_modules(model) + batch_norm_modules(model) + list(extra_modules_to_save or []),
        trainable_token_indices=sorted(set(trainable_tokens)) if trainable_tokens else None,
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as e:
        raise DataError(f"LoRA: {str(e).splitlines()[0]}") from None
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info("LoRA on %s%s: %d trainable of %d parameters (%.2f%%)", targets,
                f" + {len(config.trainable_token_indices)} embedding rows" if trainable_tokens else "", trainable,
                total, 100 * trainable / total)
    return peft_model


def trains_token_rows(model: nn.Module) -> bool:
    """Whether a LoRA model trains chosen rows of its input embeddings (:func:`apply_lora`'s ``trainable_tokens``)."""
    return is_lora(model) and any(getattr(c, "trainable_token_indices", None) for c in model.peft_config.values())


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; LoRA-aware."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def is_lora(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def save_model(model: nn.Module, output_dir: str, merge: bool, state_dict: dict | None = None,
               processing_class=None, config_updates: dict | None = None) -> nn.Module:
    """Save the final model: a plain model, a merged LoRA model, or adapter + head (+ the labelled config), and its
    tokenizer / image processor (``processing_class``).

    ``state_dict``: the full weights when ``model`` holds only a shard of them (FSDP; see
    ``shared.core.distributed.full_state_dict``). ``config_updates``: settings saved in ``config.json`` for whoever
    loads the folder (decision thresholds, the NER alignment). Returns the model that was saved (merged models are plain
    ``PreTrainedModel``s).
    """
    config = (model.get_base_model() if is_lora(model) else model).config
    for name, value in (config_updates or {}).items():
        setattr(config, name, value)
    if is_lora(model) and merge:
        if state_dict is not None:  # sharded weights cannot be merged in place: keep the adapter, say so
            logger.warning("--merge_lora is not applied under FSDP: the adapter is saved; merge it after training "
                           "with shared.training.models.load_trained(...).merge_and_unload()")
        else:
            model = model.merge_and_unload()
    kwargs = {} if state_dict is None else {"state_dict": state_dict}
    if trains_token_rows(model):
        # PEFT saves the whole embedding matrix when the vocabulary grew; the trained rows are in the adapter and
        # load_trained resizes the base to the saved vocabulary, so the adapter stays small
        kwargs["save_embedding_layers"] = False
    model.save_pretrained(output_dir, **kwargs)
    if is_lora(model):
        # The adapter folder also carries the base config with our label maps, so reload needs no recipe arguments.
        model.get_base_model().config.save_pretrained(output_dir)
    if processing_class is not None:
        processing_class.save_pretrained(output_dir)
    return model


def save_trained(trainer, output_dir: str, model_args, processing_class, config_updates: dict | None = None,
                 inner: str | None = None) -> None:
    """Step 12's model part, called by EVERY process: FSDP-sharded weights are gathered (a collective), then the main
    process saves the model (:func:`save_model`) and its tokenizer / image processor. ``inner`` names the attribute
    of a wrapper that holds the transformers model (the NER recipe's CRF, saved beside it by the recipe)."""

    state_dict = full_state_dict(trainer)  # None unless FSDP
    model = trainer.model if inner is None else getattr(trainer.model, inner)
    if state_dict is not None and inner is not None:  # the inner model's own weights, without the wrapper's prefix
        state_dict = {k[len(inner) + 1:]: v for k, v in state_dict.items() if k.startswith(inner + ".")}
    if trainer.is_world_process_zero():
        save_model(model, output_dir, model_args.merge_lora, state_dict, processing_class, config_updates)
