"""Tiny offline NER models for tests: a WordPiece tokenizer trained on the sample notes and a 2-layer BERT.

Built once per session into a temporary folder (no network). The tokenizer's vocabulary is small on purpose, so
many words split into several subwords and alignment code paths are exercised.
"""

from __future__ import annotations

import glob
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "recipes", "ner", "sample_data")
SHARED = os.path.join(os.path.dirname(REPO), "shared")
NCBI = os.path.join(SHARED, "data", "ner", "ncbi_disease")
MINILM = os.path.join(SHARED, "models", "all-MiniLM-L6-v2")


def build_tokenizer(out_dir: str, vocab_size: int = 300, model_max_length: int = 128):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    for path in sorted(glob.glob(os.path.join(SAMPLE, "**", "*.txt"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            texts.extend(f.read().split("\n"))
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=model_max_length)
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_model(out_dir: str, max_position_embeddings: int = 128):
    """A randomly initialised 2-layer BERT (hidden 32) + tokenizer saved as a normal model folder."""
    import torch
    from transformers import BertConfig, BertModel

    tok = build_tokenizer(out_dir, model_max_length=max_position_embeddings)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_position_embeddings)
    BertModel(config).save_pretrained(out_dir)  # safetensors by default
    return out_dir
