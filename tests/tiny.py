"""Tiny randomly initialised models and tokenizers, built in milliseconds, no downloads.

Two families, like the real ones:
- "qwen": no BOS, the paper's memory tokens in the vocabulary (a published LCLM);
- "gemma": BOS added by the tokenizer, no memory tokens but Gemma's
  <start_of_image>/<unused0>/<end_of_image> (the embedded default), sliding layers.
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 4,
    "R is a language and environment for statistical computing and graphics. ",
    "Latent context compresses documents into vectors that a decoder can read. ",
    "Paris is the capital of France. Rome is the capital of Italy. 0123456789",
    "def main(argv):\n    return 0\n",
]


@functools.lru_cache(maxsize=None)
def tokenizer(family: str = "qwen") -> PreTrainedTokenizerFast:
    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    if family == "qwen":
        specials += ["<|memory_start|>", "<|memory|>", "<|memory_end|>"]
    else:
        specials += ["<start_of_image>", "<unused0>", "<end_of_image>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    if family == "gemma":
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
        bos = "<bos>"
    else:
        bos = None
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=specials[4:],
    )


def _config(family: str, vocab: int, hidden: int, layers: int, layer_types: list[str] | None = None):
    if family == "qwen":
        from transformers import Qwen3Config

        return Qwen3Config(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=4096,
            tie_word_embeddings=False, attn_implementation="sdpa",
        )
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=1, head_dim=hidden // 4, max_position_embeddings=4096,
        sliding_window=16, layer_types=layer_types or ["sliding_attention"] * (layers - 1) + ["full_attention"],
        attn_implementation="sdpa",
    )


def encoder_backbone(family: str = "qwen", hidden: int = 32, layers: int = 2, seed: int = 0, layer_types=None):
    from transformers import AutoModel

    torch.manual_seed(seed)
    return AutoModel.from_config(_config(family, len(tokenizer(family)), hidden, layers, layer_types)).eval()


def decoder(family: str = "qwen", hidden: int = 48, layers: int = 2, seed: int = 1):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tok = tokenizer(family)
    model = AutoModelForCausalLM.from_config(_config(family, len(tok), hidden, layers)).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    return model
