"""Model: a Hugging Face causal LM and its tokenizer, with named sites, runs and generation.

Wraps, never re-implements: with no intervention a run returns the HF model's own logits.
"""

from __future__ import annotations

import contextlib
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from .fingerprint import fingerprint_of
from .interventions import Ablate, Intervention, InterventionError, Patch, as_interventions, source_of
from .run import Cache, Run
from .adapters import Adapter, adapter_for, is_parallel
from .engine import Engine
from .hooks import HookState, hooked, tiled
from .offload import loaded
from .sites import Site, all_sites, expand, module_site, parse

Inputs = str | Sequence[str] | torch.Tensor | Sequence[Sequence[int]]
Metric = Callable[[Run], torch.Tensor]


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Sampling seeded by ``seed`` (HF's sampler draws from torch's global generators): the global
    state is forked, seeded and restored, so the caller's random stream is left as it was. Entered
    under the model's lock, so two threads sampling with their own seeds never swap streams."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a model, in mechscope's names."""

    family: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    vocab: int
    parallel_blocks: bool
    tied_embeddings: bool

    def summary(self) -> str:
        kv = f" ({self.n_kv_heads} kv)" if self.n_kv_heads != self.n_heads else ""
        return (
            f"{self.family}: {self.n_layers} layers, {self.n_heads} heads{kv}, d_model {self.d_model}, "
            f"d_head {self.d_head}, d_mlp {self.d_mlp}, vocab {self.vocab}"
            + (", parallel attn/MLP" if self.parallel_blocks else "")
            + (", tied embeddings" if self.tied_embeddings else "")
        )


def _model_config(hf: nn.Module, adapter: Adapter) -> ModelConfig:
    c = hf.config
    d_model = c.hidden_size
    n_heads = c.num_attention_heads
    d_head = getattr(c, "head_dim", None) or d_model // n_heads
    d_mlp = next((v for v in (getattr(c, "intermediate_size", None), getattr(c, "n_inner", None),
                              getattr(c, "ffn_dim", None)) if v is not None),
                 4 * d_model)  # GPT-2's n_inner=None means 4·d_model; 0 means no MLP (attention-only)
    tied = hf.get_output_embeddings().weight is hf.get_input_embeddings().weight
    return ModelConfig(
        family=c.model_type,
        n_layers=c.num_hidden_layers,
        n_heads=n_heads,
        n_kv_heads=getattr(c, "num_key_value_heads", None) or n_heads,
        d_model=d_model,
        d_head=d_head,
        d_mlp=d_mlp,
        vocab=c.vocab_size,
        parallel_blocks=is_parallel(adapter, c),
        tied_embeddings=tied,
    )


class Model(Engine):
    """A causal LM with canonical sites (and every submodule's ``<path>.output`` / ``.input``).

    Safe to share between threads: every call that installs hooks or switches the attention
    function (``run``, ``generate``, gradients, splices, edge runs, harvests) holds the HF model's
    re-entrant lock (``models.hookset.model_lock``) while it does, so concurrent calls give the
    results of sequential ones (they run one forward at a time; use one model per thread for
    parallel forwards).

    >>> model = ms.Model(hf_model, tokenizer)          # or ms.load("smollm2-135m")
    >>> run = model.run(["The cat sat", "Paris is in"], cache=["blocks.*.attn.pattern"])
    """

    def __init__(self, hf_model: nn.Module, tokenizer: Any, name: str | None = None):
        self.hf = hf_model.eval()
        self.tokenizer = tokenizer
        self.adapter = adapter_for(hf_model)
        self.cfg = _model_config(hf_model, self.adapter)
        self.name = name or getattr(hf_model.config, "_name_or_path", "") or type(hf_model).__name__
        skip = ["resid_mid"] if self.cfg.parallel_blocks else []
        if self.adapter.mlp_in is None:  # a mixture of experts: no single MLP's neurons
            skip += ["mlp.pre", "mlp.post"]
        if self.cfg.d_mlp == 0:  # attention-only: no neurons (mlp.out stays, and is zero)
            skip += ["mlp.in", "mlp.pre", "mlp.post"]
        self.sites: list[str] = all_sites(self.cfg.n_layers, exclude=skip)
        if self.n_experts:  # the router's logits, then each expert's weighted output (where mlp.post would be)
            for layer in range(self.cfg.n_layers):
                at = self.sites.index(f"blocks.{layer}.mlp.out")
                self.sites[at:at] = [f"blocks.{layer}.mlp.router"] + [
                    f"blocks.{layer}.mlp.experts.{e}.out" for e in range(self.n_experts)] + (
                    [f"blocks.{layer}.mlp.shared_expert.out"] if self.adapter.shared_expert else [])

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.cfg.summary()})"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """A notebook's view: the model's name, shape, weights and where it runs, as a table."""
        from ..display import fields_html

        first = next(self.hf.parameters())
        rows = [("model", self.name), ("shape", self.cfg.summary()),
                ("parameters", f"{sum(p.numel() for p in self.hf.parameters()):,}"), ("fingerprint", self.fingerprint),
                ("device", str(first.device)), ("dtype", str(first.dtype).replace("torch.", ""))]
        return {"text/html": fields_html(f"Model {self.name}", rows), "text/plain": repr(self)}

    @property
    def module(self) -> nn.Module:
        """The wrapped torch module (``hf``), under the name every model kind shares."""
        return self.hf

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def max_positions(self) -> int | None:
        """The context length the config declares (``n_positions`` / ``max_position_embeddings``),
        or None when it declares none. Learned position tables cannot go past it; rotary models
        could, off their training distribution, so mechscope refuses longer inputs for both."""
        config = self.hf.config
        for key in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @cached_property
    def fingerprint(self) -> str:
        """See ``fingerprint_of``; computed once (re-wrap a model whose weights changed). An
        offloaded model's weights are read one module at a time (never the whole model at once)."""
        def read(name: str, meta: torch.Tensor) -> torch.Tensor:
            path, _, attr = name.rpartition(".")
            owner, holder = self.hf.get_submodule(path), path
            while True:  # the module accelerate hooked: the weight's own, or the nearest one above it
                with loaded(self.hf.get_submodule(holder)):
                    tensor = getattr(owner, attr)
                    if tensor.device.type != "meta" or not holder:
                        return tensor.detach().to("cpu", copy=True)
                holder = holder.rpartition(".")[0]

        return fingerprint_of(self.hf, self.hf.config.to_dict(), read=read)

    def info(self) -> dict[str, Any]:
        """Name, shape, fingerprint and site names (for ``mechscope info``)."""
        return {"name": self.name, **asdict(self.cfg), "fingerprint": self.fingerprint, "sites": self.sites}

    # ------------------------------------------------------------------------------------------
    # Weights

    def out_proj(self, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The attention output projection of ``layer`` per head: (W_O [head, d_head, d_model], bias)."""
        proj = self.hf.get_submodule(f"{self.adapter.blocks}.{layer}.{self.adapter.out_proj}")
        with loaded(proj):  # an offloaded projection's weights are on meta outside its forward
            weight = proj.weight if isinstance(proj, nn.Linear) else proj.weight.T  # GPT-2's Conv1D is [in, out]
            w_o, bias = weight.T.reshape(self.cfg.n_heads, self.cfg.d_head, self.cfg.d_model), proj.bias
            if getattr(proj, "_hf_hook", None) is not None:  # offloaded: back to meta when the context ends
                w_o, bias = w_o.clone(), None if bias is None else bias.clone()
        return w_o, bias

    def head_outputs(self, z: torch.Tensor, layer: int) -> torch.Tensor:
        """Each head's contribution to the residual: z [batch, pos, head, d_head] ->
        [batch, pos, head, d_model]. They sum (plus the projection bias) to ``attn.out``. Where a
        post-norm normalises attention's output (Gemma 2/3), each head's o_proj output goes through
        it with the norm's scale frozen — gain / RMS of the summed output — so the heads still sum
        to ``attn.out`` (up to float rounding)."""
        from .placement import head_contributions

        w_o, bias = self.out_proj(layer)
        return head_contributions(self, torch.einsum("bphd,hdm->bphm", z.to(w_o.dtype), w_o), bias, layer)

    @property
    def embed(self) -> nn.Module:
        """The token embedding (ids → [.., d_model])."""
        return self.hf.get_input_embeddings()

    @property
    def unembed(self) -> nn.Module:
        """The unembedding (the LM head: [.., d_model] → logits)."""
        return self.hf.get_output_embeddings()

    @property
    def n_experts(self) -> int:
        """Experts per MoE block (0 for dense MLPs)."""
        if self.adapter.mlp_in is not None:
            return 0
        c = self.hf.config
        return int(getattr(c, "num_local_experts", None) or getattr(c, "num_experts", None) or 0)

    def multiplier(self, which: str) -> float:
        """The family's ``embedding``, ``residual`` or ``logit`` multiplier (1.0 where it has none):
        Granite scales embeddings, block outputs and logits, Cohere its logits."""
        from .adapters import multiplier

        return multiplier(self.adapter, self.hf.config, which)

    @property
    def logit_softcap(self) -> float | None:
        """Gemma 2's final soft-cap c: the model returns c·tanh(l / c) of the ``logits`` site l (the
        site is before the cap); None for models that return l itself."""
        cap = getattr(self.hf.config, "final_logit_softcapping", None)
        return float(cap) if cap else None

    def capped(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's returned logits from the ``logits`` site (the soft-cap, where there is one)."""
        cap = self.logit_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    @property
    def final_norm(self) -> nn.Module:
        """The norm applied to the last residual before the unembedding."""
        return self.hf.get_submodule(self.adapter.final_norm)

    # ------------------------------------------------------------------------------------------
    # Tokens

    def token_id(self, token: str | int) -> int:
        """A single token's id (an int is range-checked); a clear error for a string that is
        several tokens."""
        if isinstance(token, bool) or not isinstance(token, (str, int)):
            raise ValueError(f"token {token!r}: give a string of one token or an id")
        if isinstance(token, int):
            if not 0 <= token < self.cfg.vocab:
                raise ValueError(f"token id {token} out of range for vocab {self.cfg.vocab}")
            return token
        ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = [self.tokenizer.decode([i]) for i in ids]
            raise ValueError(f"{token!r} is {len(ids)} tokens {pieces}; give a single-token target (mind the leading space)")
        if token[:1].isalnum():  # "Paris" where the next word would be " Paris": say which one is used
            spaced = self.tokenizer(" " + token, add_special_tokens=False)["input_ids"]
            if len(spaced) == 1 and spaced[0] != ids[0]:
                import warnings

                warnings.warn(f"token {token!r} (id {ids[0]}) has no leading space; the word after another is usually "
                              f"{' ' + token!r} (id {spaced[0]}). Using {token!r} as given", UserWarning, stacklevel=2)
        return ids[0]

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        for cand in (tok.pad_token_id, tok.eos_token_id, 0):
            if cand is not None:
                return int(cand)
        return 0  # pragma: no cover

    def tokenize(self, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Strings or token ids -> (ids, mask), both [batch, pos], left-padded.

        The tokenizer's own special-token behaviour is kept (SmolLM2 and GPT-2 add no BOS).
        """
        if isinstance(inputs, torch.Tensor):
            ids = inputs[None] if inputs.dim() == 1 else inputs
            if ids.dim() != 2 or ids.dtype not in (torch.long, torch.int, torch.int32):
                raise ValueError(f"token ids must be an integer tensor [batch, pos], got {tuple(inputs.shape)} {inputs.dtype}")
            rows = ids.tolist()
        else:
            if isinstance(inputs, str):
                inputs = [inputs]
            inputs = list(inputs)
            if not inputs:
                raise ValueError("no inputs: give a string, a list of strings, or token ids")
            if all(isinstance(x, str) for x in inputs):
                rows = self.tokenizer(inputs, add_special_tokens=True)["input_ids"]
            elif all(isinstance(x, (list, tuple)) for x in inputs):
                rows = [list(map(int, x)) for x in inputs]
            else:
                raise ValueError("inputs must be a string, a list of strings, or token ids")
        empty = [i for i, r in enumerate(rows) if not r]
        if empty:
            raise ValueError(f"input {empty[0]} has no tokens")
        bad = [t for r in rows for t in r if not 0 <= t < self.cfg.vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} out of range for vocab {self.cfg.vocab}")
        width = max(map(len, rows))
        limit = self.max_positions
        if limit is not None and width > limit:
            longest = max(range(len(rows)), key=lambda i: len(rows[i]))
            raise ValueError(f"input {longest} has {width} tokens; {self.name} takes at most {limit} positions "
                             f"(its config's context length). Shorten it, e.g. keep the last {limit} tokens")
        ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        return ids, mask

    def hf_inputs(self, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The keyword arguments of the plain HF forward mechscope makes (positions from the mask)."""
        dev = self.device
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": ids.to(dev), "attention_mask": mask.to(dev), "position_ids": positions.to(dev)}

    # ------------------------------------------------------------------------------------------
    # Runs

    def run(
        self,
        inputs: Inputs,
        *,
        cache: str | Iterable[str] | None = None,
        interventions: Sequence[Intervention] = (),
        grads: str | Iterable[str] | None = None,
        metric: Metric | None = None,
        cache_device: torch.device | str | None = None,
        cache_dtype: torch.dtype | None = None,
        cache_positions: Sequence[int] | None = None,
        copies: int = 1,
        shared_blocks: int = 0,
        differentiable: bool = False,
    ) -> Run:
        """One forward pass over a left-padded batch.

        cache: sites (globs allowed) to keep, and only those; cache_device / cache_dtype /
        cache_positions shrink what is kept. interventions: applied in forward order.
        grads: sites whose gradient of ``metric(run)`` (a scalar; summed if not) to return in
        ``run.grads``; the metric sees ``run.logits`` and ``run.cache`` with their graph.
        copies: run the batch this many times (copy c = rows c·n … (c+1)·n − 1), for sweeps
        whose interventions differ per copy. shared_blocks: blocks before this one run once for
        all copies, which is exact when nothing differs between copies there (sites cached or
        edited before it see one copy's n rows). differentiable: keep autograd on with no metric,
        for callers that differentiate what their interventions captured (attribution graphs).
        """
        if grads is not None and metric is None:
            raise ValueError("grads=[...] needs metric=fn(run) -> scalar to differentiate")
        if copies < 1 or not 0 <= shared_blocks <= self.cfg.n_layers:
            raise ValueError(f"copies={copies}, shared_blocks={shared_blocks}: need copies ≥ 1 and "
                             f"0 ≤ shared_blocks ≤ {self.cfg.n_layers} (the number of blocks)")
        ids, mask = self.tokenize(inputs)
        share = copies > 1 and shared_blocks > 0
        if copies > 1 and not share:
            ids, mask = ids.repeat(copies, 1), mask.repeat(copies, 1)
        actions = self._plan(cache, interventions, grads)
        state = HookState(actions, cache_device=cache_device, cache_dtype=cache_dtype,
                          cache_positions=cache_positions)

        def on_tile(_rows: int) -> None:
            state.mask = None if state.mask is None else state.mask.repeat(copies, 1)

        want_grad = metric is not None
        with torch.set_grad_enabled(want_grad or differentiable), hooked(self, state), \
                (tiled(self, copies, shared_blocks, on_tile) if share else nullcontext()):
            out = self.hf(**self.hf_inputs(ids, mask), use_cache=False)
        if share:
            ids, mask = ids.repeat(copies, 1), mask.repeat(copies, 1)
        logits = out.logits
        run = Run(self, ids, mask, logits, Cache(state.cache, cache_positions), Cache({}, what="kept for gradients"))
        if want_grad:
            self._gradients(run, state, metric)
        return run

    def _sites(self, names: str | Iterable[str] | None) -> list[Site]:
        """Canonical sites (names and globs), and any submodule's ``<path>.output`` / ``<path>.input``."""
        if names is None:
            return []
        names = [names] if isinstance(names, str) else list(names)
        out, canonical = [], []
        for name in names:
            site = module_site(name, self._module_names) if isinstance(name, str) and not any(c in name for c in "*?[") else None
            if site is not None:
                out.append(site)
            else:
                canonical.append(name)
        return out + ([parse(n) for n in expand(canonical, self.sites)] if canonical else [])

    @cached_property
    def _module_names(self) -> frozenset[str]:
        return frozenset(n for n, _ in self.hf.named_modules() if n)

    def _source_run(self, iv: Intervention, sites: list[Site]) -> Any:
        """The run an intervention reads from; prompts are run here, caching the sites it needs."""
        if not iv.needs_source():
            return None
        source = source_of(iv)
        if isinstance(source, (Run, torch.Tensor)):
            return source
        if source is None:
            raise InterventionError(f"{type(iv).__name__} at {iv.site} needs a source run or prompts")
        return self.run(source, cache=[s.name for s in sites])

    # ------------------------------------------------------------------------------------------
    # Generation

    def generate(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int = 20,
        *,
        interventions: Sequence[Intervention] = (),
        do_sample: bool = False,
        seed: int | None = None,
        **generate_kwargs: Any,
    ) -> str | list[str]:
        """Continue each prompt (greedy unless ``do_sample``), with interventions at every step.

        Interventions without positions (and not patches or resampling) run with the KV cache,
        applied to each new token as it is computed. Otherwise every step recomputes the whole
        sequence without a cache, so positions keep their meaning (-1 = the newest token).
        Mean/resample ablations with no reference use the prompts as reference.
        """
        single = isinstance(prompts, str)
        ids, mask = self.tokenize(prompts)
        interventions = [self._anchor_to_prompts(iv, prompts) for iv in as_interventions(interventions)]
        actions = self._plan(None, interventions, None)
        stateless = all(
            iv.positions is None and not isinstance(iv, Patch) and not (isinstance(iv, Ablate) and iv.how == "resample")
            for iv in interventions
        )
        state = HookState(actions)
        inputs = self.hf_inputs(ids, mask)
        inputs.pop("position_ids")  # generate derives positions from the mask itself
        with torch.no_grad(), hooked(self, state), _seeded(seed, self.device):  # seeded under the model's lock
            out = self.hf.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, use_cache=stateless,
                pad_token_id=self.pad_id, **generate_kwargs,
            )
        texts = self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        return texts[0] if single else texts

    def _anchor_to_prompts(self, iv: Intervention, prompts: Any) -> Intervention:
        if isinstance(iv, Ablate) and iv.how in ("mean", "resample") and iv.reference is None:
            return replace(iv, reference=self.run(prompts, cache=iv.site))
        return iv
