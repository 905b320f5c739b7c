"""Tiny models built from config, for tests and tutorials: no download, seconds on a CPU.

A BERT-style WordPiece tokenizer trained on the fly with the ``tokenizers`` library, and a 2-layer BERT with random
weights saved like any pretrained folder (safetensors), so recipes load it exactly as they load a real checkpoint.
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
