"""Tiny random models of each supported family, built offline from transformers configs.

For unit tests and quick experiments: a few layers, a byte-level BPE tokenizer trained in memory
on a fixed text, random weights from a fixed seed.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .model import Model

FAMILIES = ("llama", "qwen2", "gemma", "gemma2", "gemma3", "smollm3", "stablelm", "starcoder2", "olmo2", "olmo3",
            "phi3", "glm4", "granite", "cohere", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss", "gpt2", "gpt_neox", "gpt_neox_sequential",
            "opt")

_TEXT = (
    "The cat sat on the mat. Paris is in France. When Mary and John went to the store, John gave a "
    "drink to Mary. The war lasted from the year 1732 to the year 1740. Shall I compare thee to a "
    "summer's day? 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"-"
)


@lru_cache(maxsize=1)
def tiny_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer (with <pad>, <bos>, <eos>) trained on a fixed text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([_TEXT] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


def tiny_config(family: str, vocab_size: int, **overrides):
    """A small transformers config of ``family`` (see ``FAMILIES``)."""
    from transformers import GemmaConfig, GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "llama":
        cfg = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=128, **common)
    elif family == "qwen2":
        cfg = Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, **common)
    elif family == "gemma":
        cfg = GemmaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=1, head_dim=16, max_position_embeddings=128, **common)
    elif family == "gemma2":  # sandwich norms, soft-capped scores and logits, local/global layers
        from transformers import Gemma2Config

        cfg = Gemma2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=16, max_position_embeddings=128, query_pre_attn_scalar=24,
                           attn_logit_softcapping=5.0, final_logit_softcapping=3.0, sliding_window=4, **common)
    elif family == "gemma3":  # text-only: sandwich norms, q/k norms, local/global layers
        from transformers import Gemma3TextConfig

        cfg = Gemma3TextConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                               num_key_value_heads=2, head_dim=16, max_position_embeddings=128, query_pre_attn_scalar=24,
                               sliding_window=4, sliding_window_pattern=2, **common)
    elif family == "smollm3":  # llama-like, with layers that use no positional encoding (NoPE)
        from transformers import SmolLM3Config

        cfg = SmolLM3Config(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                            num_key_value_heads=2, max_position_embeddings=128, no_rope_layers=[1, 0, 1], **common)
    elif family == "stablelm":  # LayerNorms, per-head q/k LayerNorms, rotary on a quarter of each head
        from transformers import StableLmConfig

        cfg = StableLmConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=128, partial_rotary_factor=0.25,
                             qk_layernorm=True, use_qkv_bias=True, **common)
    elif family == "starcoder2":  # LayerNorms with biases, ungated MLP, biased projections
        from transformers import Starcoder2Config

        cfg = Starcoder2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                               num_key_value_heads=2, max_position_embeddings=128, **common)
    elif family in ("olmo2", "olmo3"):  # no pre-norms: post-norms on attention's and the MLP's outputs
        from transformers import Olmo2Config, Olmo3Config

        extra = {"sliding_window": 4, "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]} \
            if family == "olmo3" else {}
        cfg = (Olmo3Config if family == "olmo3" else Olmo2Config)(
            hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=128, **extra, **common)
    elif family == "granite":  # multipliers outside any module: embeddings, block outputs, logits
        from transformers import GraniteConfig

        cfg = GraniteConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                            num_key_value_heads=2, max_position_embeddings=128, embedding_multiplier=3.0,
                            residual_multiplier=0.37, logits_scaling=2.5, attention_multiplier=0.2, **common)
    elif family == "cohere":  # parallel attention and MLP on one LayerNorm, logits × logit_scale
        from transformers import CohereConfig

        cfg = CohereConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=128, logit_scale=0.3, **common)
    elif family == "phi3":  # fused q/k/v and gate/up projections, partial rotary
        from transformers import Phi3Config

        cfg = Phi3Config(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128, partial_rotary_factor=0.5, **common)
    elif family == "glm4":  # sandwich norms, fused gate/up projection, biased q/k/v, partial rotary
        from transformers import Glm4Config

        cfg = Glm4Config(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, max_position_embeddings=128, **common)
    elif family == "gpt_oss":  # attention sinks, biased attention, local/global layers, 4 experts
        from transformers import GptOssConfig

        cfg = GptOssConfig(hidden_size=64, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=16, max_position_embeddings=128, num_local_experts=4,
                           num_experts_per_tok=2, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **common)
    elif family in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe"):  # mixtures of 4 experts, 2 per token
        from transformers import AutoConfig

        extra = {"mixtral": {"num_local_experts": 4},
                 "qwen2_moe": {"num_experts": 4, "moe_intermediate_size": 48, "shared_expert_intermediate_size": 64,
                               "decoder_sparse_step": 1},
                 "qwen3_moe": {"num_experts": 4, "moe_intermediate_size": 48, "decoder_sparse_step": 1, "head_dim": 16},
                 "olmoe": {"num_experts": 4}}[family]
        cfg = AutoConfig.for_model(family, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   num_experts_per_tok=2, **extra, **common)
    elif family == "gpt2":
        cfg = GPT2Config(n_embd=64, n_layer=3, n_head=4, n_positions=128, **common)
    elif family == "opt":  # learned positions (offset 2) added outside any module, MLP on flattened rows
        from transformers import OPTConfig

        cfg = OPTConfig(hidden_size=64, ffn_dim=96, num_hidden_layers=3, num_attention_heads=4, word_embed_proj_dim=64,
                        max_position_embeddings=128, **common)
    elif family in ("gpt_neox", "gpt_neox_sequential"):
        cfg = GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                            max_position_embeddings=128, use_parallel_residual=family == "gpt_neox", **common)
    else:
        raise ValueError(f"unknown tiny family {family!r}; valid: {', '.join(FAMILIES)}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def tiny_hf(family: str = "llama", seed: int = 0, attn_implementation: str = "sdpa", **overrides):
    """(hf_model, tokenizer) with random weights from ``seed``."""
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    cfg = tiny_config(family, len(tok), **overrides)
    torch.manual_seed(seed)
    if family in ("gemma2", "gpt_oss") and attn_implementation == "sdpa":
        attn_implementation = "eager"  # transformers has no sdpa path here (soft-capped scores; attention sinks)
    hf = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation, dtype=torch.float32)
    return hf.eval(), tok


def tiny(family: str = "llama", seed: int = 0, **overrides) -> Model:
    """A tiny random ``Model`` of ``family``."""
    hf, tok = tiny_hf(family, seed, **overrides)
    return Model(hf, tok, name=f"tiny-{family}")


# A ChatML-like template for the tiny tokenizer's special tokens (each turn: <bos>role, content, <eos>).
TINY_CHAT_TEMPLATE = ("{% for m in messages %}<bos>{{ m['role'] }}\n{{ m['content'] }}<eos>\n{% endfor %}"
                      "{% if add_generation_prompt %}<bos>assistant\n{% endif %}")


def tiny_chat(seed: int = 0) -> Model:
    """A tiny random llama that chats (a chat template; an 8,192-token context for long prompts): random
    answers, for testing what sends prompts and reads answers (explainers, scorers, a served endpoint)."""
    import copy

    hf, tok = tiny_hf("llama", seed, max_position_embeddings=8192)
    tok = copy.deepcopy(tok)  # the tokenizer is shared (lru_cache): give this one its own template
    tok.chat_template = TINY_CHAT_TEMPLATE
    hf.generation_config.eos_token_id = tok.eos_token_id
    hf.generation_config.pad_token_id = tok.pad_token_id
    return Model(hf, tok, name="tiny-chat")
