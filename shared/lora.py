"""LoRA through PEFT: sensible target modules per architecture, the task head trained and saved, reload and merge."""

from __future__ import annotations

import json
import logging
import os

from torch import nn

from shared.errors import DataError

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


def default_lora_targets(model: nn.Module) -> list[str]:
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


def apply_lora(model: nn.Module, model_args, extra_modules_to_save: list[str] | None = None):
    """Wrap ``model`` with LoRA adapters; the head (and ``extra_modules_to_save``) stays fully trainable."""
    from peft import LoraConfig, get_peft_model

    if model_args.lora_target_modules:
        targets = [t.strip() for t in model_args.lora_target_modules.split(",") if t.strip()]
    else:
        targets = default_lora_targets(model)
    config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
        modules_to_save=head_modules(model) + list(extra_modules_to_save or []),
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as e:
        raise DataError(f"LoRA: {str(e).splitlines()[0]}") from None
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info("LoRA on %s: %d trainable of %d parameters (%.2f%%)", targets, trainable, total, 100 * trainable / total)
    return peft_model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; LoRA-aware."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def is_lora(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def save_model(model: nn.Module, output_dir: str, merge: bool, state_dict: dict | None = None) -> nn.Module:
    """Save the final model: a plain model, a merged LoRA model, or adapter + head (+ the labelled config).

    ``state_dict``: the full weights when ``model`` holds only a shard of them (FSDP; see
    ``shared.distributed.full_state_dict``). Returns the model that was saved (merged models are plain
    ``PreTrainedModel``s).
    """
    if is_lora(model) and merge:
        if state_dict is not None:  # sharded weights cannot be merged in place: keep the adapter, say so
            logger.warning("--merge_lora is not applied under FSDP: the adapter is saved; merge it after training "
                           "with shared.lora.load_model(...).merge_and_unload()")
        else:
            model = model.merge_and_unload()
    model.save_pretrained(output_dir, **({} if state_dict is None else {"state_dict": state_dict}))
    if is_lora(model):
        # The adapter folder also carries the base config with our label maps, so reload needs no recipe arguments.
        model.get_base_model().config.save_pretrained(output_dir)
    return model


def load_model(auto_cls, model_dir: str, **kwargs):
    """Load what :func:`save_model` wrote: a plain model folder, or base model + LoRA adapter (+ head)."""
    adapter_config = os.path.join(model_dir, "adapter_config.json")
    if not os.path.exists(adapter_config):
        return auto_cls.from_pretrained(model_dir, **kwargs)
    from peft import PeftModel
    from transformers import AutoConfig

    with open(adapter_config, encoding="utf-8") as f:
        base = json.load(f)["base_model_name_or_path"]
    config = AutoConfig.from_pretrained(model_dir)
    model = auto_cls.from_pretrained(base, config=config, **kwargs)
    return PeftModel.from_pretrained(model, model_dir)
