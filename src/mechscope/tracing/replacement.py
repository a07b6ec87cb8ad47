"""The local replacement model of one prompt (Ameisen et al. 2025, "Circuit Tracing").

Every MLP is replaced by its transcoder; attention patterns and normalisation scales are frozen at
their values on the prompt; and each (layer, position) gets an **error** — the true MLP output
minus the transcoder's — so that the replacement plus its errors reproduces the model exactly.
With those freezes the residual stream is linear in the features' decoder outputs, the errors and
the token embeddings, which is what an attribution graph's edges measure (``attribution_graph``).

Nothing is re-implemented: every run is the HF model's own forward through ``model.run``, with
``Replace`` interventions that freeze norms (``models.norms.frozen``), patterns and MLP outputs.
Two kinds of run:

* ``linear_run`` — B copies of the prompt whose values are the model's own, bit for bit, and whose
  autograd graph is the linearised replacement model: gradients pass through frozen norms, attention's
  value path and transcoder skips, and stop at patterns and at every MLP (its output is a constant
  plus a zero leaf per layer, where the gradient is read).
* ``frozen_run`` — row 0 is the clean prompt and the other rows are edited (features set, ablated or
  steered; sources zeroed): every row's patterns and norm scales are row 0's, every MLP output is
  the transcoder's on that row's own input plus the clean error. ``recompute=False`` holds the
  features at their clean values (plus the edits): the direct effects the graph's edges predict.

Transcoders: per-layer ``SparseCoder``s (a list, a dict by layer, a ``TranscoderSet``) reading a
residual-layout site of the block (``mlp.in``, ``resid_mid``) and writing ``blocks.L.mlp.out``, or
a ``CrossLayerTranscoder``. A layer without a transcoder is all error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..models.hookset import model_lock
from ..models.interventions import Replace
from ..models.model import Model
from ..models.norms import frozen
from ..models.sites import block_site
from ..models.sites import parse as parse_site

class GraphError(ValueError):
    """Transcoders, prompts, nodes or edits an attribution graph cannot use."""


def _coder_list(transcoders: Any, n_layers: int) -> list[Any]:
    if isinstance(transcoders, Mapping):
        bad = [k for k in transcoders if not (isinstance(k, int) and 0 <= k < n_layers)]
        if bad:
            raise GraphError(f"transcoder layers {bad} are not blocks of this model (0..{n_layers - 1})")
        return [transcoders.get(layer) for layer in range(n_layers)]
    coders = list(getattr(transcoders, "coders", transcoders))
    if len(coders) != n_layers:
        raise GraphError(f"{len(coders)} transcoders for a model of {n_layers} blocks: give one per block "
                         "(None for a block without one) or a dict by layer")
    return coders


class TranscoderStack:
    """Per-layer transcoders or a cross-layer transcoder, seen the one way the replacement model
    needs: each layer's input site, features, decoder rows and the features-free part of its output."""

    def __init__(self, transcoders: Any, model: Model):
        from ..sae.transcoder_sets import CrossLayerTranscoder

        L = model.cfg.n_layers
        self.n_layers = L
        self.clt = transcoders if isinstance(transcoders, CrossLayerTranscoder) else None
        if self.clt is not None:
            if self.clt.n_layers != L:
                raise GraphError(f"the cross-layer transcoder has {self.clt.n_layers} layers; the model has {L} blocks")
            self.coders: list[Any] = [None] * L
            sites, targets = self.clt.sites, self.clt.targets
            self.width = self.clt.width
        else:
            self.coders = _coder_list(transcoders, L)
            sites = [c.cfg.site if c is not None else None for c in self.coders]
            targets = [c.cfg.target_site if c is not None else None for c in self.coders]
            self.width = max((c.cfg.width for c in self.coders if c is not None), default=0)
            for layer, c in enumerate(self.coders):
                if c is None:
                    continue
                if not c.cfg.transcoder:
                    raise GraphError(f"the dictionary for layer {layer} is an SAE ({c.cfg.site} → itself); "
                                     "attribution graphs need transcoders (mlp.in → mlp.out)")
                if c.cfg.input_norm not in ("none", "center") or c.cfg.arch == "gated" or c.cfg.head is not None:
                    raise GraphError(f"layer {layer}'s transcoder (arch {c.cfg.arch}, input_norm {c.cfg.input_norm}) "
                                     "is not affine in its input before the activation; attribution graphs "
                                     "need input_norm 'none' or 'center' and a relu/jumprelu/topk activation")
        if all(s is None for s in sites):
            raise GraphError("no transcoders given: the replacement model needs at least one layer's")
        self.in_sites: list[str | None] = []
        for layer, (site, target) in enumerate(zip(sites, targets)):
            if site is None:
                self.in_sites.append(None)
                continue
            src, dst = parse_site(site), parse_site(target) if target else None
            if dst is None or dst.kind != "mlp.out" or dst.layer != layer:
                raise GraphError(f"layer {layer}'s transcoder writes {target!r}; the replacement model needs "
                                 f"{block_site(layer, 'mlp.out')}")
            if src.layer != layer or src.kind not in ("mlp.in", "resid_mid", "resid_pre"):
                raise GraphError(f"layer {layer}'s transcoder reads {site!r}; it must read blocks.{layer}.mlp.in "
                                 "(or resid_mid / resid_pre) of its own block")
            self.in_sites.append(site)

    @property
    def layers(self) -> list[int]:
        return [layer for layer, s in enumerate(self.in_sites) if s is not None]

    def to(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        w = self.clt.W_enc if self.clt is not None else self.coders[layer].W_enc
        return x.to(w.device, w.dtype)

    def activations(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Features [..., F] of layer ``layer`` from its input x [..., d_in]."""
        x = self.to(x, layer)
        return self.clt.encode_layer(x, layer) if self.clt is not None else self.coders[layer].encode(x)

    def written(self, layer: int, acts: Sequence[torch.Tensor | None]) -> torch.Tensor | float:
        """What the features write to layer ``layer``'s output [..., d_out] (no bias, no skip):
        ``acts[i]`` are layer i's features [..., F] (None: a layer without a transcoder)."""
        if self.clt is not None:
            out: torch.Tensor | float = 0.0
            for i in range(layer + 1):
                out = out + acts[i] @ self.clt.W_dec[i][:, layer - i]
            return out
        c = self.coders[layer]
        return 0.0 if c is None else acts[layer] @ c.W_dec / c.scale_out

    def rest(self, layer: int, x: torch.Tensor) -> torch.Tensor | float:
        """The features-free part of layer ``layer``'s output [..., d_out]: decoder bias plus skip."""
        if self.clt is not None:
            return self.clt.b_dec[layer]
        c = self.coders[layer]
        if c is None:
            return 0.0
        x = self.to(x, layer)
        return c.decode(torch.zeros(*x.shape[:-1], c.cfg.width, dtype=x.dtype, device=x.device), x)

    def skip(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:
        """The skip connection's share [..., d_out] of the output (linear in x), or None."""
        c = self.coders[layer]
        if c is None or c.W_skip is None:
            return None
        return (self.to(x, layer) * c.scale_in) @ c.W_skip / c.scale_out

    def encoder_rows(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        """[k, d_in]: pre-activation of feature f = row_f · x + bias (x the layer's raw input)."""
        if self.clt is not None:
            return self.clt.W_enc[layer][features].detach().float()
        c = self.coders[layer]
        rows = c.W_enc[features].detach().float() * float(c.scale_in)
        return rows - rows.mean(-1, keepdim=True) if c.cfg.input_norm == "center" else rows

    def decoder_rows(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        """[k, n_out, d_out]: what one unit of each feature writes to layers layer … layer + n_out − 1."""
        if self.clt is not None:
            return self.clt.W_dec[layer][features].detach().float()
        c = self.coders[layer]
        return (c.W_dec[features].detach().float() / float(c.scale_out))[:, None]

    def encoder_bias(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        """[k]: the pre-activations' constant term (encoder bias, less W_enc·b_dec where centred)."""
        if self.clt is not None:
            return self.clt.b_enc[layer][features].detach().float()
        return self.coders[layer].encoder_bias()[features].detach().float()


def norm_paths(model: Model) -> list[str]:
    """Module paths of every norm the residual stream passes through on its way to an MLP, a head's
    value or the unembedding (q/k norms are not: patterns are frozen)."""
    a, out = model.adapter, []
    mods = dict(model.hf.named_modules())
    for layer in range(model.cfg.n_layers):
        block = f"{a.blocks}.{layer}"
        out += [f"{block}.{p}" for p in (a.attn_norm, a.mid_norm, a.attn_out) if p]
    # mid_norm names the MLP itself in post-norm blocks (OLMo 2): keep the modules that normalise
    return [p for p in dict.fromkeys(out) if any(hasattr(mods[p], e) for e in ("eps", "variance_epsilon"))]


class LocalReplacement:
    """The replacement model of one prompt: its clean activations, features and errors.

    ids [pos]; embed [pos, d]; ``inputs[l]`` [pos, d_in] (layer l's transcoder input); ``outputs[l]``
    [pos, d] (mlp.out); ``acts[l]`` [pos, F] (zero at position 0 when it is a special token: circuit-
    tracer's convention — the first position's MLP output is then a constant, not a node); errors
    [L, pos, d]; logits [vocab] at the last position. A prompt that does not start with a special
    token gets one (BOS, else pad or EOS) unless ``prepend=False``.
    """

    def __init__(self, model: Model, transcoders: Any, prompt: str | list[int], *, prepend: bool = True):
        if not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not all(isinstance(t, int) for t in prompt)):
            raise GraphError(f"an attribution graph is of one prompt (a string or a list of token ids); got {type(prompt).__name__}")
        self.model, self.stack = model, TranscoderStack(transcoders, model)
        L = model.cfg.n_layers
        ids = model.tokenize(prompt)[0][0].tolist() if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise GraphError("the prompt has no tokens")
        tok = model.tokenizer
        special = list(getattr(tok, "all_special_ids", []) or [])
        if prepend and ids[0] not in special:  # circuit-tracer's rule: a special token first, then dropped
            first = next((t for t in (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, *special) if t is not None), None)
            if first is not None:
                ids = [int(first)] + ids
        self.zero_first = ids[0] in special
        self.prompt = torch.tensor([ids])
        outs = [block_site(layer, "mlp.out") for layer in range(L)]
        sites = [s for s in self.stack.in_sites if s]
        with torch.no_grad():
            run = model.run(self.prompt, cache=["embed", "final_norm", *sites, *outs])
        self.ids = run.tokens[0]
        self.n_pos = int(self.ids.shape[0])
        self.embed = run.cache["embed"][0].float()
        self.final = run.cache["final_norm"][0].float()
        self.logits = run.logits[0, -1].float()
        self.outputs = torch.stack([run.cache[o][0].float() for o in outs])
        self.inputs: list[torch.Tensor | None] = [None] * L
        self.acts: list[torch.Tensor | None] = [None] * L
        self.errors = torch.zeros_like(self.outputs)
        with torch.no_grad():
            for layer in self.stack.layers:
                self.inputs[layer] = run.cache[self.stack.in_sites[layer]][0]
                a = self.stack.activations(layer, self.inputs[layer]).float()
                if self.zero_first:  # the first position's features are not nodes
                    a[0] = 0
                self.acts[layer] = a
            for layer in range(L):
                self.errors[layer] = self.outputs[layer] - self._output(layer, self.inputs[layer], self.acts)
            # what the first position's features and error wrote is a constant, not a node (its
            # transcoder bias and skip stay in the linear map, as at every position)
            self.first = self.errors[:, 0].clone() if self.zero_first else torch.zeros_like(self.errors[:, 0])
            if self.zero_first:
                self.errors[:, 0] = 0

    def _output(self, layer: int, x: torch.Tensor | None, acts: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """The transcoders' output [..., d] at layer ``layer``: what the features write, decoder bias, skip."""
        rest = self.stack.rest(layer, x) if x is not None or self.stack.clt is not None else 0.0
        return torch.zeros_like(self.outputs[layer]) + self.stack.written(layer, acts) + rest

    # ----------------------------------------------------------------- the active features
    def active(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(index [n, 3] of (layer, pos, feature), activation [n]) of every non-zero feature, in
        circuit-tracer's order: by layer, then position, then feature."""
        idx, vals = [], []
        for layer, a in enumerate(self.acts):
            if a is None:
                continue
            nz = a.nonzero()
            idx.append(torch.cat([torch.full((len(nz), 1), layer), nz.cpu()], 1))
            vals.append(a[nz[:, 0], nz[:, 1]].cpu())
        if not idx:
            return torch.zeros(0, 3, dtype=torch.long), torch.zeros(0)
        return torch.cat(idx), torch.cat(vals)

    # ----------------------------------------------------------------- runs
    def _norm_interventions(self, reference: bool, qk: bool = False) -> tuple[list[Replace], Any]:
        """Interventions freezing every residual norm (and with ``qk`` the query / key norms), and the
        function that freezes the final norm (applied at the ``final_norm`` site by the caller, which
        also keeps its output)."""
        held: dict[str, torch.Tensor] = {}
        mods = dict(self.model.hf.named_modules())

        n_pos = self.n_pos

        def hold(path: str):
            def fn(x: torch.Tensor) -> torch.Tensor:
                held[path] = x.view(-1, n_pos, x.shape[-1])  # (OPT's pre-MLP norm sees [rows·pos, d])
                return x
            return fn

        def freeze(path: str):
            def fn(y: torch.Tensor) -> torch.Tensor:
                return frozen(mods[path], held.pop(path), y.view(-1, n_pos, y.shape[-1]), reference).view(y.shape)
            return fn

        out = []
        paths = norm_paths(self.model)
        if qk:  # q/k norms: scale-free, so a score split into its sources' shares needs them frozen too
            paths += [n for n in mods if n.rsplit(".", 1)[-1] in ("q_norm", "k_norm", "q_layernorm", "k_layernorm")
                      and any(hasattr(mods[n], e) for e in ("eps", "variance_epsilon"))]
        for path in paths:
            out += [Replace(f"{path}.input", fn=hold(path)), Replace(f"{path}.output", fn=freeze(path))]
        final = self.model.adapter.final_norm
        out += [Replace(f"{final}.input", fn=hold(final))]
        return out, freeze(final)

    def linear_run(self, rows: int, attention: bool = False) -> "LinearRun":
        """One forward of ``rows`` copies of the prompt through the linearised replacement model
        (see the module docstring); its autograd graph answers any number of backward passes.
        ``attention``: also keep every layer's q, k, z (with their graph) and row 0's pattern."""
        model, stack, L = self.model, self.stack, self.model.cfg.n_layers
        d = self.embed.shape[-1]
        dev = self.model.device
        lin = LinearRun(rows=rows)
        lin.embed_leaf = torch.zeros(rows, self.n_pos, d, device=dev, requires_grad=True)
        lin.out_leaves = [torch.zeros(rows, self.n_pos, self.outputs.shape[-1], device=dev, requires_grad=True)
                          for _ in range(L)]

        def embed(x: torch.Tensor) -> torch.Tensor:
            return x.detach() + lin.embed_leaf.to(x.dtype)

        def take_input(layer: int):
            def fn(x: torch.Tensor) -> torch.Tensor:
                lin.inputs[layer] = x
                return x
            return fn

        def mlp_out(layer: int):
            def fn(y: torch.Tensor) -> torch.Tensor:
                new = y.detach() + lin.out_leaves[layer].to(y.dtype)
                x = lin.inputs.get(layer)
                s = stack.skip(layer, x) if x is not None else None
                if s is not None:
                    new = new + (s - s.detach()).to(y.dtype)
                return new
            return fn

        def keep(kind: str, layer: int):
            def fn(x: torch.Tensor) -> torch.Tensor:
                if kind == "pattern":
                    lin.attention[(kind, layer)] = x[:1].detach().clone()
                    return x.detach()
                lin.attention[(kind, layer)] = x  # what the model goes on with (a viewed site's too)
                return x
            return fn

        norms, freeze_final = self._norm_interventions(reference=False, qk=attention)
        ivs = [Replace("embed", fn=embed), *norms]
        if attention:
            for layer in range(L):
                ivs += [Replace(block_site(layer, f"attn.{kind}"), fn=keep(kind, layer)) for kind in ("q", "k", "pattern", "z")]
        else:
            ivs.append(Replace("blocks.*.attn.pattern", fn=lambda p: p.detach()))
        for layer in stack.layers:
            ivs.append(Replace(stack.in_sites[layer], fn=take_input(layer)))

        def final(y: torch.Tensor) -> torch.Tensor:
            lin.final = freeze_final(y)
            return lin.final

        ivs += [Replace(block_site(layer, "mlp.out"), fn=mlp_out(layer)) for layer in range(L)]
        ivs.append(Replace("final_norm", fn=final))
        with model_lock(model.hf):
            params = [p for p in model.hf.parameters() if p.requires_grad]
            for p in params:
                p.requires_grad_(False)
            try:
                model.run(self.prompt, copies=rows, interventions=ivs, differentiable=True)
            finally:
                for p in params:
                    p.requires_grad_(True)
        return lin

    def frozen_run(self, edits: Sequence[Mapping[tuple[int, int, int], float]], *, recompute: bool = True,
                   zero_sources: Sequence[bool] = ()) -> "FrozenRun":
        """Row 0 the clean prompt, row r + 1 with ``edits[r]`` ((layer, pos, feature) → activation;
        ("error", layer, pos) or ("token", pos) → a multiple of that error or embedding),
        every row's patterns and norm scales frozen at row 0's and every MLP output the
        transcoders' plus the clean error. ``recompute``: features follow their row's input (the
        replacement model); else they keep their clean values, so only direct effects flow.
        ``zero_sources[r]``: row r + 1 also has every node zeroed — embeddings, features, errors —
        leaving the biases. Returns each row's layer inputs [rows, L, pos, d_in] and final norm output."""
        model, stack, L = self.model, self.stack, self.model.cfg.n_layers
        rows = 1 + len(edits)
        zero = [False] + [bool(z) for z in zero_sources] + [False] * (len(edits) - len(zero_sources))
        feats: list[dict] = [{} for _ in range(rows)]
        err_scale = torch.ones(rows, L, self.n_pos, 1, device=model.device)
        tok_scale = torch.ones(rows, self.n_pos, 1, device=model.device)
        for r, e in enumerate(edits, start=1):
            for key, value in e.items():
                if key[0] == "error" and len(key) == 3 and 0 <= key[1] < L and 0 <= key[2] < self.n_pos:
                    err_scale[r, key[1], key[2]] = float(value)
                elif key[0] == "token" and len(key) == 2 and 0 <= key[1] < self.n_pos:
                    tok_scale[r, key[1]] = float(value)
                elif (len(key) == 3 and all(isinstance(k, int) for k in key) and 0 <= key[0] < L
                      and self.acts[key[0]] is not None and 0 <= key[1] < self.n_pos and 0 <= key[2] < stack.width):
                    feats[r][key] = float(value)
                else:
                    raise GraphError(f"{key!r} is not a node of this replacement model: (layer, pos, feature) with layers "
                                     f"{stack.layers}, positions 0..{self.n_pos - 1}, features 0..{stack.width - 1}; "
                                     "('error', layer, pos) or ('token', pos)")
        err_scale[zero] = 0
        tok_scale[zero] = 0
        run = FrozenRun(rows=rows)
        acts_now: dict[int, torch.Tensor] = {}

        def embed(x: torch.Tensor) -> torch.Tensor:
            return x * tok_scale.to(x.dtype)

        def take_input(layer: int):
            def fn(x: torch.Tensor) -> torch.Tensor:
                run.inputs[layer] = x.detach()
                if recompute:
                    a = stack.activations(layer, x).float()
                    a[0] = self.acts[layer].to(a.device)
                    if self.zero_first:
                        a[:, 0] = 0
                else:
                    a = self.acts[layer].to(x.device).expand(rows, -1, -1).clone()
                for r, e in enumerate(feats):
                    for (lay, pos, feature), value in e.items():
                        if lay == layer:
                            a[r, pos, feature] = value
                a[zero] = 0
                acts_now[layer] = a
                return x
            return fn

        def mlp_out(layer: int):
            def fn(y: torch.Tensor) -> torch.Tensor:
                acts = [acts_now.get(i) for i in range(L)]
                new = self._output(layer, run.inputs.get(layer), acts).to(y.device)
                new = new + self.errors[layer].to(y.device) * err_scale[:, layer]
                new[:, 0] += self.first[layer].to(y.device)
                return new.to(y.dtype)
            return fn

        norms, freeze_final = self._norm_interventions(reference=True)
        ivs = [Replace("embed", fn=embed), *norms, Replace("blocks.*.attn.pattern", fn=lambda p: p[:1].expand_as(p))]
        for layer in stack.layers:
            ivs.append(Replace(stack.in_sites[layer], fn=take_input(layer)))
        ivs += [Replace(block_site(layer, "mlp.out"), fn=mlp_out(layer)) for layer in range(L)]

        def final(y: torch.Tensor) -> torch.Tensor:
            run.final = freeze_final(y).detach()
            return run.final

        ivs.append(Replace("final_norm", fn=final))
        with torch.no_grad():
            out = model.run(self.prompt, copies=rows, interventions=ivs)
        run.logits = out.logits[:, -1].float()
        return run


@dataclass
class LinearRun:
    """What ``linear_run`` holds: the leaves where gradients are read (embed_leaf [rows, pos, d],
    ``out_leaves[l]`` [rows, pos, d]) and the tensors where they are injected (``inputs[l]``, final)."""

    rows: int
    embed_leaf: torch.Tensor | None = None
    out_leaves: list[torch.Tensor] | None = None
    final: torch.Tensor | None = None

    def __post_init__(self):
        self.inputs: dict[int, torch.Tensor] = {}
        self.attention: dict[tuple[str, int], torch.Tensor] = {}  # ("q" | "k" | "z" | "pattern", layer)


@dataclass
class FrozenRun:
    """A frozen run's rows: ``inputs[l]`` [rows, pos, d_in], final [rows, pos, d] (final norm output), logits [rows, vocab]."""

    rows: int
    final: torch.Tensor | None = None
    logits: torch.Tensor | None = None

    def __post_init__(self):
        self.inputs: dict[int, torch.Tensor] = {}
