"""Tiny models built from config, for tests and tutorials: no download, seconds on a CPU.

A BERT-style WordPiece tokenizer trained on the fly with the ``tokenizers`` library, and a 2-layer BERT with random
weights saved like any pretrained folder (safetensors), so recipes load it exactly as they load a real checkpoint;
image backbones of each family the image recipe serves (ViT; ResNet, ConvNeXt, EfficientNet) at 32 px with the image
processor their published checkpoints ship.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def train_wordpiece_tokenizer(corpus: Iterable[str], output_dir: str | os.PathLike, vocab_size: int = 400,
                              model_max_length: int = 512):
    """A BERT-style WordPiece tokenizer whose vocabulary is built from ``corpus``, deterministically.

    The vocabulary is the special tokens, every character (as a word start and as a ``##`` continuation) and then
    the most frequent words, ties broken alphabetically: unlike the ``tokenizers`` trainer, whose tie-breaking
    follows hash-map order, the same corpus always gives the same tokenizer (tutorial outputs are checked).
    Words outside the vocabulary split into characters, so sub-word alignment code paths are exercised.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = Counter(
        word for text in corpus for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for word in words for c in word})
    vocab = special + chars + [f"##{c}" for c in chars]
    for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])):
        if len(vocab) >= vocab_size:
            break
        if len(word) > 1:
            vocab.append(word)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length)
    fast.save_pretrained(output_dir)
    return fast


def build_tiny_bert(output_dir: str | os.PathLike, corpus: Iterable[str], vocab_size: int = 400,
                    hidden_size: int = 32, num_layers: int = 2, max_position_embeddings: int = 512):
    """Tokenizer + small BERT encoder (random weights, seed 0) saved in ``output_dir``; returns the folder."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = train_wordpiece_tokenizer(corpus, output_dir, vocab_size, model_max_length=max_position_embeddings)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_position_embeddings,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(output_dir)
    return output_dir


def build_tiny_vit(output_dir: str | os.PathLike, image_size: int = 32, num_layers: int = 2,
                   hidden_size: int = 32, patch_size: int = 8, num_heads: int = 2) -> str:
    """A ViT (random weights, seed 0) with its image processor, saved in ``output_dir``."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
                       intermediate_size=2 * hidden_size, image_size=image_size, patch_size=patch_size, num_labels=2)
    ViTForImageClassification(config).save_pretrained(output_dir)
    ViTImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(output_dir)
    return str(output_dir)


# ImageNet's normalisation, as the published ResNet / ConvNeXt / EfficientNet processors have it
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def build_tiny_resnet(output_dir: str | os.PathLike, image_size: int = 32) -> str:
    """A 2-stage ResNet (basic blocks, 8 and 16 channels; about 6,000 parameters; random weights, seed 0) with the
    processor ResNet checkpoints ship (ConvNeXt's: shortest edge + ``crop_pct``), saved in ``output_dir``."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=2)
    ResNetForImageClassification(config).save_pretrained(output_dir)
    ConvNextImageProcessorPil(size={"shortest_edge": image_size}, crop_pct=0.875, image_mean=IMAGENET_MEAN,
                              image_std=IMAGENET_STD).save_pretrained(output_dir)
    return str(output_dir)


def build_tiny_convnext(output_dir: str | os.PathLike, image_size: int = 32) -> str:
    """A 2-stage ConvNeXt (8 and 16 channels; about 5,000 parameters; random weights, seed 0) with its processor
    (shortest edge + ``crop_pct``), saved in ``output_dir``."""
    import torch
    from transformers import ConvNextConfig, ConvNextForImageClassification
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    torch.manual_seed(0)
    config = ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], image_size=image_size, num_labels=2)
    ConvNextForImageClassification(config).save_pretrained(output_dir)
    ConvNextImageProcessorPil(size={"shortest_edge": image_size}, crop_pct=0.875, image_mean=IMAGENET_MEAN,
                              image_std=IMAGENET_STD).save_pretrained(output_dir)
    return str(output_dir)


def build_tiny_efficientnet(output_dir: str | os.PathLike, image_size: int = 32) -> str:
    """An EfficientNet of 2 stages (1 and 2 MBConv blocks, 8 channels, a 160-feature top; about 5,000 parameters;
    random weights, seed 0) with its processor, saved in ``output_dir``. The processor rescales to [-1, 1]
    (``rescale_offset``) and divides by the std a second time (``include_top``), so what the recipe computes from
    it is checked against what ``pipeline()`` does."""
    import torch
    from transformers import EfficientNetConfig, EfficientNetForImageClassification
    from transformers.models.efficientnet.image_processing_pil_efficientnet import EfficientNetImageProcessorPil

    torch.manual_seed(0)
    config = EfficientNetConfig(image_size=image_size, width_coefficient=0.125, depth_coefficient=1.0,
                                in_channels=[32, 16], out_channels=[16, 24], kernel_sizes=[3, 3], strides=[1, 2],
                                num_block_repeats=[1, 2], expand_ratios=[1, 6], depthwise_padding=[],
                                hidden_dim=160, num_labels=2)  # hidden_dim: the top conv's 1280 x 0.125 features
    model = EfficientNetForImageClassification(config)
    # transformers initialises EfficientNet's convolutions and batch-norm scales with std 0.02: from random weights
    # (no pretrained ones) its activations vanish within a few blocks and every image gets the same logits. He
    # (fan-in) initialisation and unit scales keep them alive.
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
            torch.nn.init.zeros_(module.bias)
    model.save_pretrained(output_dir)
    EfficientNetImageProcessorPil(size={"height": image_size, "width": image_size},
                                  crop_size={"height": image_size, "width": image_size}, rescale_factor=1 / 127.5,
                                  rescale_offset=True, include_top=True, image_mean=IMAGENET_MEAN,
                                  image_std=IMAGENET_STD).save_pretrained(output_dir)
    return str(output_dir)


TINY_IMAGE_BUILDERS = {"vit": build_tiny_vit, "resnet": build_tiny_resnet, "convnext": build_tiny_convnext,
                       "efficientnet": build_tiny_efficientnet}
