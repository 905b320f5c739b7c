"""Training-time image augmentation and the pixel dataset that feeds the Trainer, in plain torch (no torchvision).

Images arrive already decoded and resized as ``uint8 (3, H, W)`` tensors (see ``shared.images.readers``). For
training, :class:`Augmenter` applies a random resized crop, flips and a small rotation as *one* affine resampling
(``affine_grid`` + ``grid_sample``, so the image is interpolated once, not once per transform), then brightness and
contrast jitter. Evaluation never augments: :class:`PixelDataset` with ``augmenter=None`` is a pure function of
the stored pixels, so two evaluations give identical outputs.

Defaults are mild on purpose: medical images carry meaning in position and intensity (a vertical flip of a chest
X-ray is not a chest X-ray; laterality matters for some tasks, so set ``hflip=0`` there).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


@dataclass
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.8, 1.0)  # fraction of the image area kept by the random crop
    crop_ratio: tuple[float, float] = (0.9, 1.1)  # aspect-ratio range of the crop
    hflip: float = 0.5  # probability of a horizontal flip
    vflip: float = 0.0  # probability of a vertical flip (off: rarely anatomically valid)
    rotation: float = 10.0  # maximum rotation, degrees, either direction
    brightness: float = 0.1  # multiply intensities by 1 +- this
    contrast: float = 0.1  # scale the spread around the image mean by 1 +- this

    def __post_init__(self):
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must be positive and ordered, got {self.crop_ratio}")
        for name in ("hflip", "vflip"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a probability, got {getattr(self, name)}")
        for name in ("rotation", "brightness", "contrast"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def saved(self) -> dict:
        """What a model folder's ``config.json`` keeps (``augmentation``): test-time augmentation repeats it."""
        return asdict(self)

    @classmethod
    def from_saved(cls, saved: dict) -> AugmentConfig:
        return cls(**{**saved, "crop_scale": tuple(saved["crop_scale"]), "crop_ratio": tuple(saved["crop_ratio"])})


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


class Augmenter:
    """Random augmentation of a batch ``(N, C, H, W)`` (or one image ``(C, H, W)``), uint8 or float in [0, 1].

    Returns float32 in [0, 1], same shape. Pass a ``torch.Generator`` for reproducible previews; without one the
    global torch RNG is used (which ``Trainer`` seeds).
    """

    def __init__(self, config: AugmentConfig | None = None):
        self.config = config or AugmentConfig()

    def affine_params(self, n: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, 2, 3)`` matrices mapping output to input coordinates in ``affine_grid``'s [-1, 1] space."""
        c = self.config
        # Random resized crop: area fraction and aspect ratio (log-uniform, as in torchvision), then a position.
        area = _uniform(n, *c.crop_scale, generator)
        log_ratio = _uniform(n, math.log(c.crop_ratio[0]), math.log(c.crop_ratio[1]), generator)
        ratio = torch.exp(log_ratio)
        crop_w = torch.sqrt(area * ratio).clamp(max=1.0)  # fractions of the width / height
        crop_h = torch.sqrt(area / ratio).clamp(max=1.0)
        center_x = (1 - crop_w) * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1)
        center_y = (1 - crop_h) * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1)
        flip_x = torch.where(torch.rand(n, generator=generator) < c.hflip, -1.0, 1.0).double()
        flip_y = torch.where(torch.rand(n, generator=generator) < c.vflip, -1.0, 1.0).double()
        angle = _uniform(n, -c.rotation, c.rotation, generator) * math.pi / 180
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Rotate in pixel units (so a square rotates as a square on non-square images): D^-1 R D, D = diag(W, H)/2.
        aspect = width / height
        rot = torch.stack(
            [torch.stack([cos, -sin / aspect], -1), torch.stack([sin * aspect, cos], -1)], -2
        )  # (n, 2, 2)
        scale_flip = torch.diag_embed(torch.stack([crop_w * flip_x, crop_h * flip_y], -1))
        linear = rot @ scale_flip
        theta = torch.cat([linear, torch.stack([center_x, center_y], -1)[..., None]], -1)
        return theta.float()

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        single = images.ndim == 3
        x = images[None] if single else images
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        n, _, height, width = x.shape
        theta = self.affine_params(n, height, width, generator)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Zeros outside the image: a rotated X-ray shows black corners, as a real film border would.
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        c = self.config
        if c.brightness > 0:
            x = x * _uniform(n, 1 - c.brightness, 1 + c.brightness, generator).float().view(n, 1, 1, 1)
        if c.contrast > 0:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * _uniform(n, 1 - c.contrast, 1 + c.contrast, generator).float().view(n, 1, 1, 1) + mean
        x = x.clamp(0.0, 1.0)
        return x[0] if single else x


TTA_SEED = 20240917  # test-time views are fixed: the same images give the same predictions on every run


def tta_views(pixels: torch.Tensor, mean, std, config: AugmentConfig, views: int):
    """``views`` datasets of the same images for test-time augmentation: the images as they are, then ``views - 1``
    augmentations drawn as in training (the folder's own settings: no flip that training did not use), each fixed
    by its view number."""
    yield PixelDataset(pixels, None, mean, std)
    for view in range(1, views):
        augmented = PixelDataset(pixels, None, mean, std, Augmenter(config), seed=TTA_SEED)
        augmented.set_epoch(view)
        yield augmented


class PixelDataset(Dataset):
    """Feeds ``{"pixel_values", "labels"}`` to the Trainer from pre-decoded uint8 images.

    ``mean``/``std`` are the image processor's normalisation. ``augmenter`` is set for the training split only.
    ``labels`` may be ``None`` (prediction without labels).

    Augmentation draws from a generator seeded by ``(seed, epoch, index)``, not from the global RNG, so an image's
    augmentation does not depend on when it is loaded: a run resumed from a checkpoint sees exactly the images the
    uninterrupted run saw (the DataLoader fetches a batch ahead, so the global RNG at fetch time differs on resume),
    and so does a run with DataLoader workers. ``set_epoch`` is called every epoch by the recipes' Trainer callback
    (``shared.core.resume.EpochSeededSampling``; accelerate's DataLoader calls it too, except in a resumed epoch).
    """

    def __init__(self, pixels: torch.Tensor, labels=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                 augmenter: Augmenter | None = None, seed: int = 0):
        self.pixels = pixels
        self.labels = None if labels is None else torch.as_tensor(labels)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.augmenter = augmenter
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def select(self, indices) -> "PixelDataset":
        """The rows ``indices`` (repeats allowed, as ``datasets.Dataset.select``; used by ``oversample``)."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        subset = PixelDataset(self.pixels[index], None if self.labels is None else self.labels[index],
                              augmenter=self.augmenter, seed=self.seed)
        subset.mean, subset.std = self.mean, self.std
        return subset

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> dict:
        image = self.pixels[index]
        if self.augmenter is not None:
            key = np.random.SeedSequence((self.seed, self.epoch, int(index))).generate_state(1, np.uint64)[0]
            image = self.augmenter(image, generator=torch.Generator().manual_seed(int(key)))
        else:
            image = image.float() / 255.0
        item = {"pixel_values": (image - self.mean) / self.std}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item
