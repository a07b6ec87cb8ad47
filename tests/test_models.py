"""Runs without interventions equal the HF model's own outputs; sites have the documented shapes."""

import pytest
import torch
from conftest import PROMPTS, assert_no_hooks
from helpers import hf_forward

import mechscope as ms
from mechscope.models.sites import BLOCK_SITES, all_sites, expand, parse
from mechscope.models.tiny import FAMILIES, tiny


def test_logits_equal_hf_exactly_on_a_left_padded_batch(model):
    run = model.run(PROMPTS)
    assert torch.equal(run.logits, hf_forward(model, PROMPTS).logits)
    assert run.mask[:, -1].all() and not run.mask.all()  # left padded
    assert_no_hooks(model)


def test_batched_rows_equal_one_at_a_time(model):
    run = model.run(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        alone = model.run(prompt)
        n = alone.tokens.shape[1]
        assert torch.equal(run.tokens[i, -n:], alone.tokens[0])
        # batched attention with padding is a different reduction order: fp32 round-off only
        torch.testing.assert_close(run.logits[i, -n:], alone.logits[0], atol=2e-5, rtol=1e-5)


def test_copies_sharing_early_blocks_equal_the_repeated_batch(model):
    """run(prompts, copies=3, shared_blocks=L) runs blocks < L once and tiles the rows there (with
    the left-padded masks and positions); per-copy edits after L give what the repeated batch gives."""
    L = model.cfg.n_layers
    for shared in range(L + 1):
        rows = [len(PROMPTS) * c + i for c in (1, 2) for i in range(len(PROMPTS))]  # copies 1 and 2 only
        late = f"blocks.{shared}.resid_post" if shared < L else "final_norm"
        iv = ms.Add(late, torch.ones(model.cfg.d_model), coef=0.5, rows=rows)
        seen = []
        block0 = model.hf.get_submodule(f"{model.adapter.blocks}.0")
        handle = block0.register_forward_hook(lambda _m, _a, out: seen.append((out[0] if isinstance(out, tuple) else out).shape[0]))
        got = model.run(PROMPTS, copies=3, shared_blocks=shared, interventions=[iv], cache=late)
        handle.remove()
        assert seen == [len(PROMPTS) * (1 if shared else 3)]
        ref = model.run(PROMPTS * 3, interventions=[iv], cache=late)
        torch.testing.assert_close(got.logits, ref.logits, atol=1e-5, rtol=1e-5)
        assert torch.equal(got.mask, ref.mask) and got.cache[late].shape == ref.cache[late].shape
    with pytest.raises(ValueError, match="shared_blocks"):
        model.run(PROMPTS, copies=2, shared_blocks=L + 1)
    assert_no_hooks(model)


def test_cached_patterns_equal_hf_eager_output_attentions(model):
    impl = model.hf.config._attn_implementation  # sdpa, or eager where transformers has no sdpa (Gemma 2)
    run = model.run(PROMPTS, cache="blocks.*.attn.pattern")
    eager = hf_forward(model, PROMPTS, impl="eager", output_attentions=True)
    assert torch.equal(run.logits, eager.logits)
    for layer in range(model.cfg.n_layers):
        assert torch.equal(run.cache[f"blocks.{layer}.attn.pattern"], eager.attentions[layer])
    assert model.hf.config._attn_implementation == impl  # restored
    assert_no_hooks(model)


def test_residual_sites_equal_hf_hidden_states(model):
    run = model.run(PROMPTS, cache=["embed", "blocks.*.resid_pre", "blocks.*.resid_post", "final_norm", "logits"])
    hidden = hf_forward(model, PROMPTS, output_hidden_states=True).hidden_states
    n = model.cfg.n_layers
    assert torch.equal(run.cache["embed"], hidden[0])
    for layer in range(n):
        assert torch.equal(run.cache[f"blocks.{layer}.resid_pre"], hidden[layer])
    for layer in range(n - 1):  # HF's last hidden state is after the final norm
        assert torch.equal(run.cache[f"blocks.{layer}.resid_post"], hidden[layer + 1])
    assert torch.equal(run.cache["final_norm"], hidden[n])
    assert torch.equal(model.capped(run.cache["logits"]), run.logits)  # Gemma 2 soft-caps the logits site


def test_every_site_has_its_documented_shape(model):
    run = model.run(PROMPTS, cache=model.sites)
    c = model.cfg
    b, p = run.tokens.shape
    expected = {
        "resid_pre": (b, p, c.d_model), "attn.q": (b, p, c.n_heads, c.d_head),
        "attn.k": (b, p, c.n_kv_heads, c.d_head), "attn.v": (b, p, c.n_kv_heads, c.d_head),
        "attn.scores": (b, c.n_heads, p, p), "attn.pattern": (b, c.n_heads, p, p),
        "attn.z": (b, p, c.n_heads, c.d_head), "attn.out": (b, p, c.d_model), "resid_mid": (b, p, c.d_model),
        "mlp.in": (b, p, c.d_model),
        "mlp.pre": (b, p, c.d_mlp), "mlp.post": (b, p, c.d_mlp), "mlp.out": (b, p, c.d_model),
        "resid_post": (b, p, c.d_model), "mlp.router": (b, p, model.n_experts), "mlp.shared_expert": (b, p, c.d_model),
    }
    for name in model.sites:
        site = parse(name)
        want = expected.get(site.kind, (b, p, c.vocab) if name == "logits" else (b, p, c.d_model))
        assert tuple(run.cache[name].shape) == want, name
    # caching everything (eager attention) leaves the logits as HF eager's
    assert torch.equal(run.logits, hf_forward(model, PROMPTS, impl="eager").logits)


def test_site_internals_are_consistent(model):
    """z through the output projection is attn.out; mlp.post through the down projection is mlp.out;
    resid_mid = resid_pre + attn.out; pattern = softmax(scores)."""
    run = model.run(PROMPTS, cache=model.sites)
    block = model.hf.get_submodule(f"{model.adapter.blocks}.1")
    z = run.cache["blocks.1.attn.z"]
    a = model.adapter
    m = model.multiplier("residual")  # Granite scales both outputs before adding them
    post = {k: block.get_submodule(p) if p else (lambda x: x * m) for k, p in (("attn", a.attn_out), ("mlp", a.mlp_out))}
    out_proj = block.get_submodule(a.out_proj)  # (Gemma 2/3: then the post-attention norm)
    torch.testing.assert_close(post["attn"](out_proj(z.flatten(-2))), run.cache["blocks.1.attn.out"])
    if a.mlp_down is not None:  # (mixtures of experts have no single down projection)
        down = block.get_submodule(a.mlp_down)
        torch.testing.assert_close(post["mlp"](down(run.cache["blocks.1.mlp.post"])), run.cache["blocks.1.mlp.out"])
    if not model.cfg.parallel_blocks:
        torch.testing.assert_close(
            run.cache["blocks.1.resid_pre"] + run.cache["blocks.1.attn.out"], run.cache["blocks.1.resid_mid"]
        )
    scores = run.cache["blocks.1.attn.scores"]
    sinks = getattr(block.get_submodule(a.attn), "sinks", None)  # GPT-OSS: a sink logit per head joins the softmax
    if sinks is not None:
        with_sink = torch.cat([scores, sinks.detach().view(1, -1, 1, 1).expand(*scores.shape[:3], 1)], -1)
        torch.testing.assert_close(with_sink.softmax(-1)[..., :-1], run.cache["blocks.1.attn.pattern"])
    else:
        torch.testing.assert_close(scores.softmax(-1), run.cache["blocks.1.attn.pattern"])


def test_parallel_blocks_have_no_resid_mid():
    model = ms.models.tiny.tiny("gpt_neox")
    assert model.cfg.parallel_blocks
    assert not any(s.endswith("resid_mid") for s in model.sites)
    with pytest.raises(ms.SiteError, match="resid_mid"):
        model.run("The cat", cache="blocks.0.resid_mid")


def test_site_names_and_globs():
    names = all_sites(2)
    assert names[0] == "embed" and names[-2:] == ["final_norm", "logits"]
    assert len(names) == 3 + 2 * len(BLOCK_SITES)
    assert expand("blocks.*.attn.pattern", names) == ["blocks.0.attn.pattern", "blocks.1.attn.pattern"]
    assert expand(["logits", "blocks.1.mlp.out", "blocks.1.mlp.out"], names) == ["blocks.1.mlp.out", "logits"]
    assert parse("blocks.1.attn.z").layout == "head" and parse("blocks.0.attn.pattern").layout == "pattern"


def test_config_summary_and_fingerprint(llama):
    c = llama.cfg
    assert (c.n_layers, c.n_heads, c.n_kv_heads, c.d_model, c.d_head, c.d_mlp) == (3, 4, 2, 64, 16, 96)
    assert "3 layers, 4 heads (2 kv)" in c.summary()
    fp = llama.fingerprint
    assert fp == ms.models.tiny.tiny("llama").fingerprint  # same seed, same weights
    assert fp != ms.models.tiny.tiny("llama", seed=1).fingerprint
    info = llama.info()
    assert info["sites"] == llama.sites and info["fingerprint"] == fp


def test_cache_keeps_only_what_was_asked_and_can_shrink_it(llama):
    run = llama.run(PROMPTS, cache="blocks.1.resid_post", cache_positions=[-1, 0], cache_dtype=torch.float16)
    assert list(run.cache) == ["blocks.1.resid_post"]
    value = run.cache["blocks.1.resid_post"]
    assert value.shape == (3, 2, 64) and value.dtype == torch.float16
    full = llama.run(PROMPTS, cache="blocks.1.resid_post").cache["blocks.1.resid_post"]
    first_real = (run.mask == 0).sum(1)  # row i's first real token sits after its padding
    torch.testing.assert_close(value[:, 0].float(), full[:, -1], atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(value[:, 1].float(), full[torch.arange(3), first_real], atol=1e-2, rtol=1e-2)
    with pytest.raises(ms.SiteError, match="was not cached"):
        run.cache["blocks.0.resid_post"]


def test_gradients_at_sites_match_autograd_by_hand(llama):
    target = 5

    def metric(run):
        return run.logits[:, -1, target].sum()

    run = llama.run(PROMPTS, grads=["embed", "blocks.1.resid_post", "blocks.0.attn.pattern", "blocks.1.attn.z"],
                    metric=metric)
    ids, mask = llama.tokenize(PROMPTS)
    kwargs = llama.hf_inputs(ids, mask)
    embeds = llama.hf.get_input_embeddings()(kwargs.pop("input_ids")).detach().requires_grad_(True)
    out = llama.hf(inputs_embeds=embeds, use_cache=False, **kwargs)
    (grad,) = torch.autograd.grad(out.logits[:, -1, target].sum(), embeds)
    torch.testing.assert_close(run.grads["embed"], grad)
    assert run.grads["blocks.1.resid_post"].shape == (3, ids.shape[1], 64)
    assert run.grads["blocks.0.attn.pattern"].abs().sum() > 0
    # the gradient at a head site, by hand: d metric / d (input of the output projection)
    proj = llama.hf.get_submodule("model.layers.1.self_attn.o_proj")
    kept = {}
    handle = proj.register_forward_pre_hook(lambda m, a: kept.setdefault("z", a[0]))
    try:
        out = llama.hf(inputs_embeds=embeds, use_cache=False, **kwargs)
        (gz,) = torch.autograd.grad(out.logits[:, -1, target].sum(), kept["z"])
    finally:
        handle.remove()
    torch.testing.assert_close(run.grads["blocks.1.attn.z"], gz.unflatten(-1, (4, 16)))
    assert float(run.metric) == pytest.approx(float(out.logits[:, -1, target].sum().detach()), abs=1e-4)
    assert not run.logits.requires_grad
    assert_no_hooks(llama)


def test_token_strings_and_top_predictions(llama):
    run = llama.run(["The cat", "Paris is in"])
    assert "".join(run.str_tokens[0]) == "The cat"
    top = run.top(3)
    assert len(top) == 2 and len(top[0]) == 3
    assert all(0 <= p <= 1 for _, p in top[0]) and top[0][0][1] >= top[0][1][1]
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(llama.run(ids).tokens, ids)
    assert torch.equal(llama.run([[5, 6, 7], [8]]).mask, torch.tensor([[1, 1, 1], [0, 0, 1]]))


def test_head_outputs_sum_to_the_attention_output(model):
    run = model.run(PROMPTS, cache=["blocks.1.attn.z", "blocks.1.attn.out"])
    per_head = model.head_outputs(run.cache["blocks.1.attn.z"], layer=1)
    assert per_head.shape == (*run.tokens.shape, model.cfg.n_heads, model.cfg.d_model)
    _, bias = model.out_proj(1)
    total = per_head.sum(2) + (bias if bias is not None else 0)
    torch.testing.assert_close(total, run.cache["blocks.1.attn.out"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_adapter_places_every_site_on_a_module_of_the_model(family):
    """Canonical sites are names the adapter resolves to module sites (path, input or output); the
    paths it gives are the model's modules, the unembedding its output embeddings."""
    model = tiny(family)
    hf, adapter = model.hf, model.adapter
    assert hf.get_submodule(adapter.unembed) is hf.get_output_embeddings()
    for name in model.sites:
        site = parse(name)
        if site.is_attn_internal or site.kind in ("mlp.expert", "mlp.router", "mlp.shared_expert"):
            with pytest.raises(KeyError, match="inside attention" if site.is_attn_internal else "not read off a module"):
                adapter.place(site.kind, site.layer)
            continue
        path, io = adapter.place(site.kind, site.layer)
        assert io in ("input", "output") and isinstance(hf.get_submodule(path), torch.nn.Module), name


def test_mlp_in_is_what_the_mlp_reads(model):
    """``mlp.in``: the MLP's input — the pre-MLP norm's output with its gain (what transcoders read);
    the MLP applied to it is ``mlp.out``, and patching it changes the MLP's output only."""
    into_site = "blocks.1.resid_pre" if model.cfg.parallel_blocks else "blocks.1.resid_mid"
    run = model.run(PROMPTS, cache=["blocks.1.mlp.in", "blocks.1.mlp.out", into_site])
    block = model.hf.get_submodule(f"{model.adapter.blocks}.1")
    module = block.get_submodule(model.adapter.mlp)
    mlp = lambda x: (lambda out: out[0] if isinstance(out, tuple) else out)(module(x))  # noqa: E731 (GPT-OSS: a tuple)
    if model.adapter.flat_mlp:  # OPT: fc1 → act → fc2 inside the block, no MLP module
        mlp = lambda x: block.fc2(block.activation_fn(block.fc1(x)))  # noqa: E731
    m = model.multiplier("residual")  # (Granite)
    post = block.get_submodule(model.adapter.mlp_out) if model.adapter.mlp_out else (lambda x: x * m)
    torch.testing.assert_close(post(mlp(run.cache["blocks.1.mlp.in"])), run.cache["blocks.1.mlp.out"])
    # the pre-MLP norm (none in OLMo 2/3: the MLP reads resid_mid itself; Cohere's is attention's)
    a = model.adapter
    norm = block.get_submodule(a.mid_norm or a.attn_norm) if a.attn_norm else (lambda x: x)
    torch.testing.assert_close(norm(run.cache[into_site]), run.cache["blocks.1.mlp.in"])
    zero_in = model.run(PROMPTS, cache="blocks.1.mlp.out", interventions=[ms.Ablate("blocks.1.mlp.in")])
    torch.testing.assert_close(zero_in.cache["blocks.1.mlp.out"], post(mlp(torch.zeros_like(run.cache["blocks.1.mlp.in"]))))


def test_phi3_mlp_pre_is_the_gate_half_of_the_fused_projection():
    """Phi-3's gate_up_proj outputs [gate | up]: mlp.pre is the gate half; editing it leaves up alone."""
    model = ms.models.tiny.tiny("phi3")
    run = model.run(PROMPTS, cache=["blocks.1.mlp.in", "blocks.1.mlp.pre", "blocks.1.mlp.out"])
    mlp = model.hf.get_submodule(f"{model.adapter.blocks}.1.mlp")
    gate, up = mlp.gate_up_proj(run.cache["blocks.1.mlp.in"]).chunk(2, dim=-1)
    torch.testing.assert_close(run.cache["blocks.1.mlp.pre"], gate)
    shift = [ms.Replace("blocks.1.mlp.pre", lambda g: g + 1.0)]
    edited = model.run(PROMPTS, cache="blocks.1.mlp.out", interventions=shift)
    by_hand = mlp.down_proj(mlp.activation_fn(gate + 1.0) * up)
    torch.testing.assert_close(edited.cache["blocks.1.mlp.out"], by_hand)


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss"])
def test_expert_sites_add_up_to_the_moe_block_and_can_be_ablated(family):
    """blocks.L.mlp.experts.E.out: expert E's weighted output (computed again by the experts' eager
    forward on the tokens routed to it). The experts sum to the MoE output (plus Qwen2-MoE's
    gated shared expert); caching them changes nothing; ablating one removes exactly its share."""
    model = ms.models.tiny.tiny(family)
    experts = [f"blocks.1.mlp.experts.{e}.out" for e in range(model.n_experts)]
    assert model.n_experts == 4 and experts[3] in model.sites and "blocks.1.mlp.post" not in model.sites
    assert len(model._sites("blocks.*.mlp.experts.*.out")) == 4 * model.cfg.n_layers
    run = model.run(PROMPTS, cache=[*experts, "blocks.1.mlp.in", "blocks.1.mlp.out"])
    total = sum(run.cache[s] for s in experts)
    if family == "qwen2_moe":  # plus the gated shared expert, a site of its own
        mlp = model.hf.get_submodule(f"{model.adapter.blocks}.1.mlp")
        x = run.cache["blocks.1.mlp.in"]
        shared = model.run(PROMPTS, cache="blocks.1.mlp.shared_expert.out").cache["blocks.1.mlp.shared_expert.out"]
        torch.testing.assert_close(shared, torch.sigmoid(mlp.shared_expert_gate(x)) * mlp.shared_expert(x))
        total = total + shared
        cut = model.run(PROMPTS, cache="blocks.1.mlp.out", interventions=[ms.Ablate("blocks.1.mlp.shared_expert.out")])
        torch.testing.assert_close(cut.cache["blocks.1.mlp.out"], run.cache["blocks.1.mlp.out"] - shared,
                                   rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, run.cache["blocks.1.mlp.out"], rtol=1e-5, atol=1e-6)
    assert torch.equal(run.logits, model.run(PROMPTS).logits)
    routed = [float(run.cache[s].abs().sum()) for s in experts]
    busiest = experts[max(range(4), key=routed.__getitem__)]
    cut = model.run(PROMPTS, cache="blocks.1.mlp.out", interventions=[ms.Ablate(busiest)])
    torch.testing.assert_close(cut.cache["blocks.1.mlp.out"], run.cache["blocks.1.mlp.out"] - run.cache[busiest],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ms.SiteError, match="unknown site 'blocks.1.mlp.experts.7.out'"):
        model.run(PROMPTS, cache="blocks.1.mlp.experts.7.out")


def _router(model, layer: int):
    return model.hf.get_submodule(f"{model.adapter.blocks}.{layer}.{model.adapter.router}")


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss"])
def test_router_site_is_the_router_logits_and_editing_it_reroutes(family):
    """blocks.L.mlp.router: the router's logits [batch, pos, experts] (HF's own router_logits,
    unflattened). An edit decides the routing again by the family's rule: doubling the logits is bit
    for bit the model with its router's weights doubled (×2 is exact in floating point)."""
    model = ms.models.tiny.tiny(family)
    assert model.sites.index("blocks.1.mlp.router") < model.sites.index("blocks.1.mlp.experts.0.out")
    ids, mask = model.tokenize(PROMPTS)
    with torch.no_grad():
        ref = model.hf(**model.hf_inputs(ids, mask), output_router_logits=True)
    run = model.run(PROMPTS, cache="blocks.*.mlp.router")
    for layer in range(model.cfg.n_layers):
        got = run.cache[f"blocks.{layer}.mlp.router"]
        assert got.shape == (*ids.shape, model.n_experts)
        assert torch.equal(got.flatten(0, 1), ref.router_logits[layer])
    assert torch.equal(run.logits, model.run(PROMPTS).logits)  # caching it changes nothing

    doubled = model.run(PROMPTS, interventions=[ms.Replace("blocks.1.mlp.router", lambda x: 2 * x)])
    router = _router(model, 1)
    with torch.no_grad():
        for p in router.parameters():
            p.mul_(2)
        try:
            by_hand = model.run(PROMPTS)
        finally:
            for p in router.parameters():
                p.div_(2)
    assert torch.equal(doubled.logits, by_hand.logits) and not torch.equal(doubled.logits, run.logits)


@pytest.mark.parametrize("family", ["mixtral", "gpt_oss"])
def test_route_forbids_and_forces_experts(family):
    """Route(forbid=[e]): expert e gets no token and the others are renormalised (GPT-OSS: bit for bit
    its router with a −1e9 bias on e, which only changes e's logit); Route(force=[e]): e gets every
    selected token, the rest as before. Bad experts and too many forced are refused by name."""
    model = ms.models.tiny.tiny(family)
    site, experts = "blocks.1.mlp.router", [f"blocks.1.mlp.experts.{e}.out" for e in range(4)]
    base = model.run(PROMPTS, cache=experts)
    busiest = max(range(4), key=lambda e: float(base.cache[experts[e]].abs().sum()))
    real = model.tokenize(PROMPTS)[1].bool()
    forbid = model.run(PROMPTS, cache=experts, interventions=[ms.Route(site, forbid=[busiest])])
    assert float(forbid.cache[experts[busiest]].abs().max()) == 0.0
    if family == "gpt_oss":
        bias = _router(model, 1).bias
        kept = bias.detach().clone()
        with torch.no_grad():
            bias[busiest] = -1e9
            try:
                by_hand = model.run(PROMPTS)
            finally:
                bias.copy_(kept)
        assert torch.equal(forbid.logits, by_hand.logits)
    idle = min(range(4), key=lambda e: float(base.cache[experts[e]].abs().sum()))
    forced = model.run(PROMPTS, cache=experts, interventions=[ms.Route(site, force=[idle], positions=[-1])])
    share = forced.cache[experts[idle]].abs().sum(-1)  # [batch, pos]
    assert bool((share[:, -1] > 0).all())
    torch.testing.assert_close(forced.cache[experts[busiest]][:, :-1], base.cache[experts[busiest]][:, :-1])
    with pytest.raises(ms.InterventionError, match="expert 9 does not exist"):
        model.run(PROMPTS, interventions=[ms.Route(site, forbid=[9])])
    with pytest.raises(ms.InterventionError, match="forces 3 experts; the router chooses 2"):
        model.run(PROMPTS, interventions=[ms.Route(site, force=[0, 1, 2])])
    with pytest.raises(ms.InterventionError, match="valid sites are blocks.L.mlp.router"):
        model.run(PROMPTS, interventions=[ms.Route("blocks.1.mlp.out", forbid=[0])])
    assert bool(real.any())
    # an expert is an integer: 1.7 was expert 1, '1' and '13' (letter by letter) were accepted
    for bad, match in (([1.7], "1.7 is float"), (["1"], "'1' is str"), ("13", "give a list of expert numbers"),
                       ([True], "True is bool")):
        with pytest.raises(ms.InterventionError, match=match):
            ms.Route(site, force=bad)
    with pytest.raises(ms.InterventionError, match="forbids 3 of 4 experts; the router chooses 2 per token, so at most 2"):
        model.run(PROMPTS, interventions=[ms.Route(site, forbid=[0, 1, 2])])  # was NaN logits, silently
    assert torch.isfinite(model.run(PROMPTS, interventions=[ms.Route(site, forbid=[0, 1])]).logits).all()
