"""The architecture compiled programs run on: a Hugging Face causal LM with no norms (identity
modules hold the norms' places, so the sites are the usual ones), ReLU MLPs, learned positions,
unscaled dot-product attention through transformers' attention interface (so mechscope's attention
sites work) and a ``causal`` flag (non-causal: every position sees every other, as tracr compiles by
default). Registered with ``AutoConfig`` / ``AutoModelForCausalLM`` as ``mechscope_compiled``, so
``save_pretrained`` / ``from_pretrained`` / ``mechscope.load(path)`` round-trip it.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_outputs import CausalLMOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

MODEL_TYPE = "mechscope_compiled"


class CompiledConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, vocab_size: int = 4, hidden_size: int = 4, num_hidden_layers: int = 1,
                 num_attention_heads: int = 1, head_dim: int = 1, intermediate_size: int = 1,
                 max_position_embeddings: int = 8, causal: bool = False, **kwargs):
        self.vocab_size, self.hidden_size, self.num_hidden_layers = vocab_size, hidden_size, num_hidden_layers
        self.num_attention_heads, self.head_dim, self.intermediate_size = num_attention_heads, head_dim, intermediate_size
        self.max_position_embeddings, self.causal = max_position_embeddings, causal
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)


class CompiledAttention(nn.Module):
    def __init__(self, config: CompiledConfig):
        super().__init__()
        self.config, self.n_heads, self.d_head = config, config.num_attention_heads, config.head_dim
        inner = self.n_heads * self.d_head
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(config.hidden_size, inner, bias=False) for _ in range(3))
        self.o_proj = nn.Linear(inner, config.hidden_size, bias=False)
        self.is_causal = config.causal

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, p, _ = x.shape
        q, k, v = (proj(x).view(b, p, self.n_heads, self.d_head).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, _eager)
        z, _ = attend(self, q, k, v, mask, scaling=1.0, dropout=0.0)
        return self.o_proj(z.reshape(b, p, -1))


def _eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    scores = query @ key.transpose(2, 3) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return (pattern @ value).transpose(1, 2).contiguous(), pattern


class CompiledMLP(nn.Module):
    def __init__(self, config: CompiledConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=True)
        self.act = nn.ReLU()
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


class CompiledBlock(nn.Module):
    def __init__(self, config: CompiledConfig):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = nn.Identity(), nn.Identity()  # sites, no norms
        self.self_attn, self.mlp = CompiledAttention(config), CompiledMLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class CompiledModel(nn.Module):
    def __init__(self, config: CompiledConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.embed = nn.Identity()  # tokens + positions: the ``embed`` site
        self.layers = nn.ModuleList(CompiledBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.Identity()


class CompiledForCausalLM(PreTrainedModel):
    config_class = CompiledConfig
    base_model_prefix = "model"
    _supports_attention_backend = True
    _supports_sdpa = False
    _supports_flash_attn = False

    def __init__(self, config: CompiledConfig):
        super().__init__(config)
        self.model = CompiledModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass  # weights come from the compiler (or a saved file)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **kwargs) -> CausalLMOutput:
        m = self.model
        if inputs_embeds is None:
            inputs_embeds = m.embed_tokens(input_ids)
        b, p, _ = inputs_embeds.shape
        if position_ids is None:
            position_ids = torch.arange(p, device=inputs_embeds.device)[None].expand(b, p)
        x = m.embed(inputs_embeds + m.embed_positions(position_ids))
        if self.config.causal:
            mask = create_causal_mask(config=self.config, inputs_embeds=x, attention_mask=attention_mask,
                                      past_key_values=None, position_ids=position_ids, allow_is_causal_skip=False)
        else:
            mask = create_bidirectional_mask(config=self.config, inputs_embeds=x, attention_mask=attention_mask,
                                             allow_is_bidirectional_skip=False)
        for block in m.layers:
            x = block(x, mask)
        return CausalLMOutput(logits=self.lm_head(m.norm(x)))


AutoConfig.register(MODEL_TYPE, CompiledConfig, exist_ok=True)
AutoModelForCausalLM.register(CompiledConfig, CompiledForCausalLM, exist_ok=True)
