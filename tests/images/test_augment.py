"""Augmentation: geometry of the affine parameters, value ranges, reproducibility, eval is untouched."""

import pytest
import torch

from shared.images.augment import AugmentConfig, Augmenter, PixelDataset

OFF = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0, vflip=0.0, rotation=0.0, brightness=0.0, contrast=0.0)


def _images(n=4, size=16):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_identity_config_returns_the_image():
    images = _images()
    out = Augmenter(AugmentConfig(**OFF))(images)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, images.float() / 255, atol=1e-5, rtol=0)


def test_horizontal_flip_always():
    images = _images()
    out = Augmenter(AugmentConfig(**{**OFF, "hflip": 1.0}))(images)
    torch.testing.assert_close(out, images.flip(-1).float() / 255, atol=1e-5, rtol=0)


def test_rotation_keeps_a_centered_disc_round_on_non_square_images():
    # A disc centered in a 24x48 image is unchanged by any rotation only if rotation happens in pixel units
    # (in [-1, 1] coordinates it would turn into an ellipse).
    yy, xx = torch.meshgrid(torch.arange(24) - 11.5, torch.arange(48) - 23.5, indexing="ij")
    disc = ((yy**2 + xx**2) < 8**2).float().expand(3, 24, 48)[None].repeat(8, 1, 1, 1)
    aug = Augmenter(AugmentConfig(**{**OFF, "rotation": 45.0}))
    out = aug(disc, torch.Generator().manual_seed(0))
    angles = torch.rad2deg(torch.atan2(aug.affine_params(8, 24, 48, torch.Generator().manual_seed(0))[:, 1, 0] / 2,
                                       aug.affine_params(8, 24, 48, torch.Generator().manual_seed(0))[:, 0, 0]))
    assert angles.abs().max() > 10  # really rotated
    assert (out - disc).abs().mean() < 0.02


def test_crop_params_stay_inside_the_image():
    aug = Augmenter(AugmentConfig(crop_scale=(0.3, 0.6), rotation=0.0, hflip=0.5))
    theta = aug.affine_params(500, 20, 20, torch.Generator().manual_seed(1))
    half_w, half_h = theta[:, 0, 0].abs(), theta[:, 1, 1].abs()
    assert (theta[:, 0, 2].abs() + half_w <= 1 + 1e-6).all() and (theta[:, 1, 2].abs() + half_h <= 1 + 1e-6).all()
    area = half_w * half_h
    assert area.min() >= 0.3 - 1e-4 and area.max() <= 0.6 + 1e-4
    assert 0.35 < (theta[:, 0, 0] < 0).float().mean() < 0.65  # about half flipped


def test_random_output_in_range_reproducible_and_varied():
    images = _images()
    aug = Augmenter()
    a = aug(images, torch.Generator().manual_seed(3))
    b = aug(images, torch.Generator().manual_seed(3))
    c = aug(images, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1 and a.shape == images.shape
    assert aug(images[0]).shape == images[0].shape  # one image works too


@pytest.mark.parametrize("bad", [dict(crop_scale=(0.0, 1.0)), dict(hflip=1.5), dict(rotation=-1.0), dict(crop_ratio=(2.0, 1.0))])
def test_invalid_config(bad):
    with pytest.raises(ValueError):
        AugmentConfig(**bad)


def test_pixel_dataset_normalizes_and_augments_only_when_asked():
    images = _images(2, 8)
    labels = torch.tensor([0, 1])
    plain = PixelDataset(images, labels, mean=(0.5,) * 3, std=(0.25,) * 3)
    item = plain[1]
    torch.testing.assert_close(item["pixel_values"], (images[1].float() / 255 - 0.5) / 0.25)
    assert item["labels"] == 1
    assert torch.equal(plain[0]["pixel_values"], plain[0]["pixel_values"])  # eval: deterministic
    augmented = PixelDataset(images, labels, augmenter=Augmenter())
    first = augmented[0]["pixel_values"]
    # a function of (seed, epoch, index), not of the global RNG: a resumed run sees the same augmented images
    torch.manual_seed(123)
    assert torch.equal(first, augmented[0]["pixel_values"])
    augmented.set_epoch(1)  # Trainer calls it (through the DataLoader) every epoch: a new augmentation each epoch
    assert not torch.equal(first, augmented[0]["pixel_values"])
    assert not torch.equal(first, PixelDataset(images, labels, augmenter=Augmenter(), seed=1)[0]["pixel_values"])
    assert "labels" not in PixelDataset(images)[0]
