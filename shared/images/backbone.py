"""The backbone at the training resolution: position embeddings resized once, a processor that does what training
did, and the normalisation it applies.

Lower resolutions train much faster (28 px MedMNIST needs no 224 px). Instead of ``interpolate_pos_encoding=True`` on
every forward pass, a ViT-style model's position embeddings are interpolated once and the saved config and image
processor describe the model as trained, so ``from_pretrained`` / ``pipeline()`` need nothing special.

Convolutional backbones (:data:`CONVOLUTIONAL`: ResNet, ConvNeXt, EfficientNet) run at any size as they are. Their
processors are made to do what training does, resize the whole image to ``--image_size`` squared: ConvNeXt's
processor (which ResNet checkpoints ship too) resizes the short side and centre-crops below 384 px, which cannot be
switched off, so it is saved as the equivalent ViT processor; EfficientNet's ``rescale_offset`` / ``include_top``
are folded into the normalisation the recipe applies (:func:`normalization`).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from shared.core.errors import DataError

logger = logging.getLogger(__name__)

# config.model_type of convolutional backbones: no position embeddings, no attention (Grad-CAM explains them), LoRA
# on their convolutions (shared/training/lora.py), their stages are the "layers" of --freeze_layers
# (shared/training/optim.py)
CONVOLUTIONAL = {"resnet", "convnext", "efficientnet"}


def is_convolutional(config) -> bool:
    return getattr(config, "model_type", None) in CONVOLUTIONAL


def _min_convnext_size(config) -> int:
    """ConvNeXt's stem (patch_size stride) and each later stage's 2x2 stride-2 downsampling have no padding."""
    return int(config.patch_size) * 2 ** (len(config.hidden_sizes) - 1)


def set_image_size(model: nn.Module, image_size: int) -> None:
    """Make a ViT-style model run natively at ``image_size``: interpolate its position embeddings ONCE.

    Cheaper than ``interpolate_pos_encoding=True`` on every forward pass, and the saved config then describes the
    model as trained, so ``from_pretrained``/``pipeline`` need nothing special. Models without absolute position
    embeddings (Swin, ConvNeXt, ...) accept other sizes as they are.
    """
    config = model.config
    if is_convolutional(config):
        if config.model_type == "convnext" and image_size < _min_convnext_size(config):
            raise DataError(f"--image_size {image_size} is too small for ConvNeXt: its stages downsample the image "
                            f"{_min_convnext_size(config)}x (use at least {_min_convnext_size(config)})")
        if getattr(config, "image_size", None) not in (None, image_size):
            config.image_size = image_size  # informational only (no weights depend on it): the size trained at
        return
    patch = getattr(config, "patch_size", None)
    old_size = getattr(config, "image_size", None)
    if isinstance(patch, (list, tuple)):
        patch = patch[0]
    if isinstance(old_size, (list, tuple)):
        old_size = old_size[0]
    if patch and image_size % patch:
        raise DataError(f"--image_size {image_size} must be a multiple of the model's patch size {patch}")
    embeddings = getattr(model.base_model, "embeddings", None)
    position = getattr(embeddings, "position_embeddings", None)
    if not isinstance(position, nn.Parameter) or position.ndim != 3 or not patch or not old_size:
        if old_size and old_size != image_size:
            logger.info("%s has no absolute position embeddings to resize; using it at %d px as is",
                        type(model).__name__, image_size)
        return
    if old_size == image_size:
        return
    old_grid, new_grid = old_size // patch, image_size // patch
    extra = position.shape[1] - old_grid * old_grid  # [CLS] (and distillation) tokens keep their embeddings
    if extra < 0:
        raise DataError(f"cannot resize position embeddings of {type(model).__name__} (unexpected shape)")
    dim = position.shape[-1]
    with torch.no_grad():
        grid = position[:, extra:].reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2).float()
        # Antialias when shrinking (e.g. DINOv2's 37x37 grid to 4x4 at 56 px): each remaining position averages
        # its neighbourhood instead of sampling a few isolated pretrained positions.
        grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False,
                             antialias=new_grid < old_grid)
        grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim).to(position.dtype)
        embeddings.position_embeddings = nn.Parameter(torch.cat([position[:, :extra], grid], dim=1))
    for module in (embeddings, getattr(embeddings, "patch_embeddings", None)):
        if module is not None and hasattr(module, "image_size"):
            module.image_size = (image_size, image_size)
        if module is not None and hasattr(module, "num_patches"):
            module.num_patches = new_grid * new_grid
    config.image_size = image_size
    logger.info("position embeddings resized from %d px to %d px", old_size, image_size)


def reload_at_trained_size(config, base_name: str):
    """For :func:`shared.training.models.load_trained` of a LoRA adapter folder: its config describes the model as
    trained (e.g. at ``--image_size`` 56) while the base checkpoint has its original position embeddings. Load the base
    at its own size, then interpolate exactly as in training (the embeddings were frozen under LoRA)."""
    from transformers import AutoConfig

    trained_size = getattr(config, "image_size", None)
    base_size = getattr(AutoConfig.from_pretrained(base_name), "image_size", trained_size)
    if trained_size is not None:  # ResNet configs have no image size
        config.image_size = base_size

    def resize(model):
        if trained_size and trained_size != base_size:
            set_image_size(model, trained_size)

    return resize


def processor_size(processor) -> int:
    """The square size the processor feeds the model (crop size if it crops, else the resize size)."""
    for attr in ("crop_size", "size"):
        size = getattr(processor, attr, None) or {}
        if attr == "crop_size" and not getattr(processor, "do_center_crop", False):
            continue
        if isinstance(size, int):
            return size
        if "height" in size:
            return int(size["height"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"])
    return 224


def configure_processor(processor, image_size: int, resample: int):
    """The processor to save, doing what training did: resize to ``image_size`` squared, no crop, same filter, same
    normalisation. Returns it: ``processor`` itself, changed in place, or where its resizing cannot do that
    (ConvNeXt's, which ResNet checkpoints also ship: below 384 px it resizes the short side and centre-crops) the
    ViT processor that does, with the same rescaling, mean, std and filter."""
    if getattr(processor, "crop_pct", None) is not None:  # ConvNeXt-style resizing
        from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

        processor = ViTImageProcessorPil(
            do_resize=True, do_rescale=getattr(processor, "do_rescale", True),
            rescale_factor=getattr(processor, "rescale_factor", 1 / 255),
            do_normalize=getattr(processor, "do_normalize", True),
            image_mean=getattr(processor, "image_mean", None), image_std=getattr(processor, "image_std", None))
    processor.size = {"height": image_size, "width": image_size}
    if hasattr(processor, "do_center_crop"):
        processor.do_center_crop = False
    if hasattr(processor, "crop_size"):
        processor.crop_size = {"height": image_size, "width": image_size}
    processor.resample = resample
    processor.do_convert_rgb = True
    return processor


def _per_channel(value) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),) * 3


def normalization(processor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` such that ``(pixels / 255 - mean) / std`` is what the processor feeds the model.

    Beyond ViT's rescale-then-normalise, this folds in a rescale factor other than 1/255 and EfficientNet's
    ``rescale_offset`` (``x * factor - 1``) and ``include_top`` (a second division by the std)."""
    factor = float(getattr(processor, "rescale_factor", 1 / 255)) if getattr(processor, "do_rescale", True) else 1.0
    scale = factor * 255  # the processor's values are (pixels / 255) * scale - offset before normalisation
    if abs(scale - 1) < 1e-9:
        scale = 1.0
    offset = 1.0 if getattr(processor, "do_rescale", True) and getattr(processor, "rescale_offset", False) else 0.0
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if getattr(processor, "do_normalize", True) and getattr(processor, "image_mean", None) is not None:
        mean, std = _per_channel(processor.image_mean), _per_channel(processor.image_std)
    if getattr(processor, "include_top", False) and getattr(processor, "image_std", None) is not None:
        std = tuple(s * t for s, t in zip(std, _per_channel(processor.image_std)))  # then normalize(x, 0, std)
    if scale == 1.0 and offset == 0.0:
        return mean, std
    return tuple((m + offset) / scale for m in mean), tuple(s / scale for s in std)
