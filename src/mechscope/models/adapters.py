"""Per-architecture adapters: where each canonical site lives in a Hugging Face model.

An adapter is data, not code: module paths relative to the model (or to one block). The hook
machinery (``hooks.py``) reads these paths; nothing here re-implements a forward pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Adapter:
    """Module paths of one architecture family.

    Block-relative paths (``attn``, ``out_proj``, ...) are joined to ``blocks.{l}``. A site maps to:
    ``embed`` → output of ``embed``; ``resid_pre`` → input of the block; ``attn.z`` → input of
    ``out_proj`` (viewed per head); ``attn.out`` → output of ``attn``; ``resid_mid`` → input of
    ``mid_norm``; ``mlp.in`` → input of ``mlp`` (the pre-MLP norm's output, gain applied: what
    transcoders read); ``mlp.pre`` → output of ``mlp_in``; ``mlp.post`` → input of ``mlp_down``;
    ``mlp.out`` → output of ``mlp``; ``resid_post`` → output of the block; ``final_norm`` → output of
    ``final_norm``; ``logits`` → output of ``unembed`` (``place`` gives these as module sites).
    q/k/v/scores/pattern come from the mechscope attention function. ``attn_norm`` and ``qkv`` let the circuit engine give each
    head's query, key and value its own residual input (``circuits/edges.py``).
    """

    families: tuple[str, ...]
    blocks: str
    embed: str
    final_norm: str
    attn: str
    out_proj: str
    mlp: str
    mlp_in: str | None  # None: a mixture of experts, no single MLP (no mlp.pre / mlp.post sites)
    mlp_down: str | None
    mid_norm: str | None
    attn_norm: str | None  # the norm whose output the q/k/v projections read (None: they read the residual)
    qkv: tuple[str, ...]  # the q, k, v projections (three paths), or one fused projection
    qkv_layout: str = "separate"  # "separate" | "fused" ([q | k | v], k and v kv-heads wide) | "per_head" ([q_h k_h v_h])
    parallel_flag: str | None = None  # config attribute that, when true, makes attn and MLP parallel
    unembed: str = "lm_head"  # the output embeddings (the LM head)
    attn_out: str | None = None  # sandwich norms: the module whose output is added to the residual (else ``attn``)
    mlp_out: str | None = None  # ... and the MLP's (else ``mlp``)
    # q/k norms over all heads at once (OLMo 2/3, OLMoE): the (q_norm, k_norm) paths, applied to the whole
    # q_proj / k_proj output; the edge engine gives head h's query norm(q_proj(x + δ_h))'s slice h
    joint_qk_norm: tuple[str, str] | None = None
    embed_io: str = "output"  # "input": the embedding sum is the input of ``embed`` (OPT adds positions outside any module)
    flat_mlp: bool = False  # the block runs its MLP on [batch·pos, d] rows (OPT): MLP sites are viewed [batch, pos, ·]
    gate_up_fused: bool = False  # ``mlp_in`` outputs [gate | up] (Phi-3): ``mlp.pre`` is its first half
    always_parallel: bool = False  # attention and MLP always read the same normalised input (Cohere)
    # multipliers HF applies outside any module, as config attributes (Granite, Cohere); sites are the
    # values after them: ``embed`` × embedding, ``attn.out`` / ``mlp.out`` × residual, ``logits`` × logit
    embedding_multiplier: str | None = None
    residual_multiplier: str | None = None
    logit_multiplier: str | None = None  # attribute name; a leading "1/" divides (Granite's logits_scaling)
    # mixtures of experts (block-relative): the router (its output: logits [tokens, E], weights, indices),
    # the fused experts (called as experts(hidden, indices, weights)) and a shared expert, if any, with
    # the gate whose sigmoid scales it (expert path, gate path)
    router: str | None = None
    experts: str | None = None
    shared_expert: tuple[str, str] | None = None

    @property
    def attn_out_path(self) -> str:
        """Block-relative module whose output is ``attn.out``: what attention adds to the residual."""
        return self.attn_out or self.attn

    @property
    def mlp_out_path(self) -> str:
        """Block-relative module whose output is ``mlp.out``: what the MLP adds to the residual."""
        return self.mlp_out or (self.mlp_down if self.flat_mlp else self.mlp)

    def place(self, kind: str, layer: int | None) -> tuple[str, str]:
        """Where a canonical site lives: (module path, "output" | "input"). Every site but the
        attention internals (q, k, v, scores, pattern: the mechscope attention function) is a
        module site this way; ``attn.z`` is the output projection's input viewed per head."""
        block = f"{self.blocks}.{layer}"
        places = {
            "embed": (self.embed, self.embed_io), "final_norm": (self.final_norm, "output"),
            "logits": (self.unembed, "output"), "resid_pre": (block, "input"),
            "attn.z": (f"{block}.{self.out_proj}", "input"), "attn.out": (f"{block}.{self.attn_out_path}", "output"),
            "resid_mid": (f"{block}.{self.mid_norm}", "input"), "mlp.in": (f"{block}.{self.mlp}", "input"),
            "mlp.out": (f"{block}.{self.mlp_out_path}", "output"),
            "resid_post": (block, "output"),
        }
        if self.mlp_in is not None:
            places["mlp.pre"] = (f"{block}.{self.mlp_in}", "output")
            places["mlp.post"] = (f"{block}.{self.mlp_down}", "input")
        if kind in ("mlp.expert", "mlp.router", "mlp.shared_expert"):
            raise KeyError(f"{kind} is computed again by the MoE block's own router / experts forward, not read off a module")
        if kind not in places:
            raise KeyError(f"{kind} is computed inside attention, not at a module's input or output"
                           if kind.startswith("attn.") else f"{kind} does not exist in this family")
        return places[kind]


LLAMA = Adapter(
    families=("llama", "mistral", "qwen2", "qwen3", "gemma", "smollm3"),
    blocks="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    attn="self_attn",
    out_proj="self_attn.o_proj",
    mlp="mlp",
    mlp_in="mlp.gate_proj",
    mlp_down="mlp.down_proj",
    mid_norm="post_attention_layernorm",
    attn_norm="input_layernorm",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
)
# StableLM: LayerNorms, per-head q/k LayerNorms and partial rotary inside HF's attention; with
# ``use_parallel_residual`` attention and MLP read the same normalised input (no resid_mid)
STABLELM = dataclasses.replace(LLAMA, families=("stablelm",), parallel_flag="use_parallel_residual")
# StarCoder2: LayerNorms with biases, an ungated MLP (c_fc → act → c_proj)
STARCODER2 = dataclasses.replace(LLAMA, families=("starcoder2",), mlp_in="mlp.c_fc", mlp_down="mlp.c_proj")
# Gemma 2 and 3 wrap attention and MLP in sandwich norms: ``post_attention_layernorm`` normalises
# attention's *output* and ``pre_feedforward_layernorm`` is the pre-MLP norm. So ``attn.out`` /
# ``mlp.out`` are the post-norms' outputs (what is added to the residual), ``resid_mid`` is the
# pre-feedforward norm's input, ``mlp.in`` the MLP's input. A head's share of ``attn.out`` is its
# o_proj output through the post-norm with the norm's scale frozen (``Model.head_outputs``).
GEMMA2 = dataclasses.replace(LLAMA, families=("gemma2", "gemma3_text"), mid_norm="pre_feedforward_layernorm",
                             attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm")
# OLMo 2/3 have no pre-norms: attention and MLP read the residual itself and their outputs are
# normalised before they are added back (``attn.out`` / ``mlp.out`` are those norms' outputs);
# ``resid_mid`` and ``mlp.in`` are then the same tensor, the MLP's input. Their q/k norms span all
# heads jointly: one head's query reads its own input only through the whole projection, so the edge
# engine defines head h's query as slice h of q_norm(q_proj(x + δ_h)) (docs/models.md).
JOINT_QK = ("self_attn.q_norm", "self_attn.k_norm")
OLMO2 = dataclasses.replace(GEMMA2, families=("olmo2", "olmo3"), mid_norm="mlp", attn_norm=None, joint_qk_norm=JOINT_QK)
# Mixtures of experts: the block's MLP is the sparse-MoE module (router + fused 3-D expert weights,
# no per-expert module), so ``mlp.in`` / ``mlp.out`` are its input and output and there are no
# neuron sites (``mlp.pre`` / ``mlp.post``); ``blocks.L.mlp.router`` is the router's logits and
# ``blocks.L.mlp.experts.E.out`` expert E's weighted output. The edge engine treats the MoE block as one
# receiver and each expert (and Qwen2-MoE's gated shared expert) as a sender. OLMoE's q/k norms span
# all heads, as OLMo's. GPT-OSS's attention has sinks (the mechscope attention function implements
# them) and its MoE block returns (output, router scores).
MOE = dataclasses.replace(LLAMA, families=("mixtral", "qwen3_moe"), mlp_in=None, mlp_down=None, router="mlp.gate",
                          experts="mlp.experts")
QWEN2_MOE = dataclasses.replace(MOE, families=("qwen2_moe",), shared_expert=("mlp.shared_expert", "mlp.shared_expert_gate"))
GPT_OSS = dataclasses.replace(MOE, families=("gpt_oss",), router="mlp.router")
OLMOE = dataclasses.replace(MOE, families=("olmoe",), joint_qk_norm=JOINT_QK)
# Phi-3: one fused q/k/v projection ([q | k | v], grouped-query widths) and one fused gate/up
# projection ([gate | up]): ``mlp.pre`` is the gate half of its output
PHI3 = dataclasses.replace(LLAMA, families=("phi3",), mlp_in="mlp.gate_up_proj", qkv=("self_attn.qkv_proj",),
                           qkv_layout="fused", gate_up_fused=True)
# GLM-4: sandwich norms (``post_self_attn_layernorm`` / ``post_mlp_layernorm`` on the sublayers' outputs,
# ``post_attention_layernorm`` the pre-MLP norm) and a fused [gate | up] projection, as Phi-3's
GLM4 = dataclasses.replace(LLAMA, families=("glm4",), attn_out="post_self_attn_layernorm",
                           mlp_out="post_mlp_layernorm", mlp_in="mlp.gate_up_proj", gate_up_fused=True)
# Granite multiplies the embeddings, each block output and the logits by config constants outside
# any module; the sites are the values after them
GRANITE = dataclasses.replace(LLAMA, families=("granite",), embedding_multiplier="embedding_multiplier",
                              residual_multiplier="residual_multiplier", logit_multiplier="1/logits_scaling")
# Cohere: attention and MLP read the same input_layernorm output (parallel, no resid_mid); logits × logit_scale
COHERE = dataclasses.replace(LLAMA, families=("cohere",), mid_norm=None, always_parallel=True,
                             logit_multiplier="logit_scale")
GPT2 = Adapter(
    families=("gpt2",),
    blocks="transformer.h",
    embed="transformer.drop",  # token + position embedding, after (eval-time identity) dropout
    final_norm="transformer.ln_f",
    attn="attn",
    out_proj="attn.c_proj",
    mlp="mlp",
    mlp_in="mlp.c_fc",
    mlp_down="mlp.c_proj",
    mid_norm="ln_2",
    attn_norm="ln_1",
    qkv=("attn.c_attn",),
    qkv_layout="fused",
)
GPT_NEOX = Adapter(
    families=("gpt_neox",),
    blocks="gpt_neox.layers",
    embed="gpt_neox.emb_dropout",
    final_norm="gpt_neox.final_layer_norm",
    attn="attention",
    out_proj="attention.dense",
    mlp="mlp",
    mlp_in="mlp.dense_h_to_4h",
    mlp_down="mlp.dense_4h_to_h",
    mid_norm="post_attention_layernorm",
    attn_norm="input_layernorm",
    qkv=("attention.query_key_value",),
    qkv_layout="per_head",
    parallel_flag="use_parallel_residual",
)

# OPT (pre-LN, no projections: 125m, 1.3b, 2.7b, ...): learned positions (offset 2) are added to the token
# embeddings outside any module, so ``embed`` is block 0's input; the MLP is fc1 → act → fc2 called by the
# block on rows flattened to [batch·pos, d] (no MLP module): ``mlp.in`` is fc1's input, ``mlp.out`` fc2's
# output, each viewed [batch, pos, ·]. The other variants are refused by name (``REFUSED_VARIANTS``).
OPT = Adapter(
    families=("opt",),
    blocks="model.decoder.layers",
    embed="model.decoder.layers.0",
    embed_io="input",
    final_norm="model.decoder.final_layer_norm",
    attn="self_attn",
    out_proj="self_attn.out_proj",
    mlp="fc1",  # where the MLP starts (it is no module of its own)
    mlp_in="fc1",
    mlp_down="fc2",
    mid_norm="final_layer_norm",
    attn_norm="self_attn_layer_norm",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    flat_mlp=True,
)

# mechscope's own architecture for compiled programs (models/compiled.py): Llama's names, identity norms
COMPILED = Adapter(
    families=("mechscope_compiled",),
    blocks="model.layers",
    embed="model.embed",
    final_norm="model.norm",
    attn="self_attn",
    out_proj="self_attn.o_proj",
    mlp="mlp",
    mlp_in="mlp.up_proj",
    mlp_down="mlp.down_proj",
    mid_norm="post_attention_layernorm",
    attn_norm="input_layernorm",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
)

ADAPTERS: dict[str, Adapter] = {family: a for a in (LLAMA, STABLELM, STARCODER2, GEMMA2, OLMO2, MOE, QWEN2_MOE, GPT_OSS, OLMOE, PHI3, GLM4,
                                                   GRANITE, COHERE, GPT2, GPT_NEOX, OPT, COMPILED)
                                for family in a.families}


# Variants of supported families refused by name: (test on the HF model, the reason)
_DENSE_AMONG_SPARSE = (
    lambda hf: bool(getattr(hf.config, "mlp_only_layers", None)) or getattr(hf.config, "decoder_sparse_step", 1) != 1,
    "this config mixes dense MLP layers among its mixture-of-experts layers (mlp_only_layers or "
    "decoder_sparse_step > 1): mechscope's MoE sites and senders assume every block routes to experts")
REFUSED_VARIANTS = {
    "qwen2_moe": [_DENSE_AMONG_SPARSE],
    "qwen3_moe": [_DENSE_AMONG_SPARSE],
    "opt": [
        (lambda hf: not hf.config.do_layer_norm_before,
         "this OPT normalises after each residual addition (the post-LN variant, do_layer_norm_before=False, "
         "as OPT-350m): the block's output is a norm of the residual, so resid_* sites and the component "
         "graph's sums do not hold"),
        (lambda hf: hf.config.word_embed_proj_dim != hf.config.hidden_size,
         "this OPT projects its embeddings in and out (project_in/project_out, word_embed_proj_dim "
         "≠ hidden_size, as OPT-350m): embed and the logit directions would be in another space"),
        (lambda hf: hf.get_submodule("model.decoder").final_layer_norm is None,
         "this OPT has no final layer norm (_remove_final_layer_norm): mechscope's final_norm site needs one"),
    ],
}


class UnsupportedArchitecture(ValueError):
    """The model's architecture has no adapter."""


def register(family: str, adapter: Adapter) -> None:
    """Use ``adapter`` for models whose ``config.model_type`` is ``family`` (docs/how-to/add-a-family.md)."""
    ADAPTERS[family] = adapter


def missing_paths(hf_model: nn.Module, adapter: Adapter) -> list[str]:
    """The module paths ``adapter`` names that ``hf_model`` lacks (block paths checked on block 0)."""
    block = [adapter.attn, adapter.out_proj, adapter.mlp, adapter.mlp_in, adapter.mlp_down, adapter.mid_norm,
             adapter.attn_norm, adapter.attn_out, adapter.mlp_out, adapter.router, adapter.experts,
             *adapter.qkv, *(adapter.joint_qk_norm or ()), *(adapter.shared_expert or ())]
    paths = [adapter.blocks, adapter.embed, adapter.final_norm] + [f"{adapter.blocks}.0.{p}" for p in block if p]
    missing = []
    for path in paths:
        try:
            hf_model.get_submodule(path)
        except AttributeError:
            missing.append(path)
    return missing


def adapter_for(hf_model: nn.Module) -> Adapter:
    """The adapter for ``hf_model`` (by ``config.model_type``); a clear error if there is none, saying
    which known layouts' module paths the model has and lacks."""
    config = getattr(hf_model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        layouts = {a.families[0]: missing_paths(hf_model, a) for a in dict.fromkeys(ADAPTERS.values())}
        best = min(layouts, key=lambda f: len(layouts[f]))
        looked = "; ".join(f"{f}-like: " + ("all found" if not m else f"lacks {', '.join(m[:4])}"
                                            + (f" (+{len(m) - 4})" if len(m) > 4 else "")) for f, m in layouts.items())
        hint = (f"every module path of the {best} layout exists: if {model_type} computes what {best} does "
                f"(norm placement, multipliers, attention), mechscope.models.adapters.register({model_type!r}, "
                f"ADAPTERS[{best!r}]) makes it work" if not layouts[best] else
                "no known layout fits: write an Adapter (docs/how-to/add-a-family.md)")
        raise UnsupportedArchitecture(
            f"no mechscope adapter for architecture {model_type!r} ({type(hf_model).__name__}); supported: "
            f"{', '.join(sorted(ADAPTERS))}. Looked for each known layout's module paths — {looked}. {hint}.")
    adapter = ADAPTERS[model_type]
    for refuses, reason in REFUSED_VARIANTS.get(model_type, []):
        if refuses(hf_model):
            raise UnsupportedArchitecture(f"{model_type} ({type(hf_model).__name__}) is not supported: {reason}")
    try:
        hf_model.get_submodule(adapter.blocks)
        if hf_model.get_output_embeddings() is None:
            raise AttributeError("no output embeddings")
    except AttributeError as err:
        raise UnsupportedArchitecture(
            f"{type(hf_model).__name__} is a {model_type!r} model but lacks the expected modules "
            f"({adapter.blocks}, an unembedding); mechscope wraps *ForCausalLM models"
        ) from err
    return adapter


def is_parallel(adapter: Adapter, config) -> bool:
    """True when attention and MLP read the same residual (no ``resid_mid`` exists)."""
    return adapter.always_parallel or bool(adapter.parallel_flag and getattr(config, adapter.parallel_flag, False))


def multiplier_factor(adapter: Adapter, config, which: str) -> tuple[float, bool] | None:
    """One of the adapter's multipliers (``embedding``, ``residual``, ``logit``) for ``config`` as
    (factor, divides): the family multiplies by the factor, or divides by it; None where it has none."""
    name = getattr(adapter, f"{which}_multiplier")
    if name is None:
        return None
    return float(getattr(config, name.removeprefix("1/"))), name.startswith("1/")


def multiplier(adapter: Adapter, config, which: str) -> float:
    """The value of one of the adapter's multipliers for ``config``; 1.0 where the family has none."""
    found = multiplier_factor(adapter, config, which)
    if found is None:
        return 1.0
    factor, divides = found
    return 1.0 / factor if divides else factor
