"""The placement layer: each architecture quirk is placed once (models/placement.py), the two hook
installers — the run engine's ``hooked`` and the circuit engine's ``_edge_hooks`` — know no family,
and every place kind keeps the model bit for bit where nothing changes."""

import ast
import inspect
import textwrap

import pytest
import torch

import mechscope as ms
from mechscope.circuits import edges
from mechscope.circuits.graph import Graph
from mechscope.models import hooks, placement
from mechscope.models.adapters import ADAPTERS, Adapter
from mechscope.models.hookset import HookSet
from mechscope.models.tiny import FAMILIES, tiny

PROMPTS = ["The cat sat on the mat.", "Paris is in"]


def _views(view):
    return view.views if isinstance(view, placement.Chain) else [view] if view is not None else []


def _kinds(model) -> set[type]:
    """The place, view and receiver kinds a model's sites and component graph use."""
    sites = model._sites(model.sites)
    used: set[type] = set()
    for place in placement.site_places(model, sites):
        used.add(type(place))
        used.update(type(v) for v in _views(getattr(place, "view", None)))
    g = Graph.of(model)
    for layer in range(model.cfg.n_layers):
        used.update(type(p) for p in placement.head_inputs(model, layer).projections)
        if g.has_mlp:
            used.add(type(placement.mlp_input(model, layer)))
    used.add(type(placement.logits_input(model)))
    return used


@pytest.mark.parametrize("installer", [hooks.hooked, edges._edge_hooks, edges._Senders])
def test_the_installers_test_no_family_and_no_adapter_field(installer):
    """The measure of the redesign: neither installer reads the adapter or names a family."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(installer)))
    fields = {f for f in Adapter.__dataclass_fields__} - {"embed"}  # (the edge state's ``embed`` is IG's input)
    families = set(ADAPTERS)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert node.attr != "adapter" and node.attr not in fields, f"{installer.__name__} reads .{node.attr}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value not in families, f"{installer.__name__} names the family {node.value!r}"
        if isinstance(node, ast.Name):
            assert node.id not in ("adapter", "ADAPTERS"), f"{installer.__name__} uses {node.id}"


def test_every_place_view_and_receiver_kind_is_used_by_some_family():
    used = set().union(*(_kinds(tiny(f)) for f in FAMILIES))
    every = {*placement.SITE_PLACE_KINDS, *placement.VIEW_KINDS, *placement.RECEIVER_PLACE_KINDS}
    assert every - used == set(), f"place kinds no tiny family exercises: {every - used}"
    assert placement.Chain not in used  # no family combines views today; Chain is tested below


@pytest.mark.parametrize("family", FAMILIES)
def test_no_edit_and_identity_edits_at_every_place_are_the_model(family):
    """Caching every site (module sites read through their views, nothing put back) is the HF model bit
    for bit; an edit that returns a copy of its input at every site puts every view back, exactly where
    the view is exact (heads, gate halves, flattened rows, routers, experts, carried resid_mid), and to
    float rounding where a multiplier is divided out again."""
    m = tiny(family)
    module_sites = [s for s in m.sites if not m._sites([s])[0].is_attn_internal]
    ids, mask = m.tokenize(PROMPTS)
    with torch.no_grad():
        ref = m.hf(**m.hf_inputs(ids, mask)).logits
    cached = m.run(PROMPTS, cache=module_sites)
    real = mask.bool()  # (padded positions attend to nothing: sdpa and eager fill them differently)
    assert torch.equal(cached.logits, ref)
    with_attention = m.run(PROMPTS, cache=m.sites)  # the mechscope attention function: eager, not sdpa
    copies = [ms.Replace(s, fn=lambda t: t.clone()) for s in m.sites]
    edited = m.run(PROMPTS, interventions=copies)
    scaled = any(isinstance(v, (placement.Scaled, placement.Divided))
                 for p in placement.site_places(m, m._sites(m.sites)) for v in _views(getattr(p, "view", None)))
    if scaled:
        torch.testing.assert_close(edited.logits[real], with_attention.logits[real], atol=1e-5, rtol=1e-5)
    elif family in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss"):
        # an edited router decides again, and the experts' eager forward sums its rows in another order
        torch.testing.assert_close(edited.logits[real], with_attention.logits[real], atol=1e-6, rtol=0)
    else:
        assert torch.equal(edited.logits[real], with_attention.logits[real])
    for module in m.hf.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_views_put_back_what_they_read():
    raw = torch.randn(2, 5, 12)
    for view in (placement.PerHead(3), placement.FirstPart(4), placement.Scaled(2.0), placement.Divided(4.0)):
        x = view.get(raw)
        assert torch.equal(view.put(x, raw), raw)  # (×2, ÷4: exact in binary)
    chain = placement.Chain([placement.FirstPart(8), placement.PerHead(2)])
    x = chain.get(raw)
    assert x.shape == (2, 5, 2, 4)
    back = chain.put(x * 0, raw)
    assert torch.equal(back[..., 8:], raw[..., 8:]) and not back[..., :8].any()


def test_the_hook_set_removes_every_hook_and_releases_the_lock_on_error():
    m = tiny("llama")
    with pytest.raises(RuntimeError, match="inside"):
        with HookSet(m.hf) as hs:
            hs.after(m.hf.model.layers[0], lambda *a: None)
            hs.rows(m.hf.model.layers[1])
            raise RuntimeError("inside")
    for module in m.hf.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    from mechscope.models.hookset import model_lock

    lock = model_lock(m.hf)
    assert lock.acquire(blocking=False)
    lock.release()


def test_glm4_is_an_adapter_entry_only():
    """GLM-4 (sandwich post-norms, fused [gate | up]) needed no new place kind: its sites are the
    post-norms' outputs, its ``mlp.pre`` the gate half, and its heads sum to ``attn.out``."""
    m = tiny("glm4")
    run = m.run(PROMPTS, cache=["blocks.1.attn.out", "blocks.1.mlp.pre", "blocks.1.mlp.post", "blocks.1.attn.z"])
    layer = m.hf.model.layers[1]
    seen = {}
    handles = [layer.post_self_attn_layernorm.register_forward_hook(lambda _m, _a, o: seen.__setitem__("attn", o)),
               layer.mlp.gate_up_proj.register_forward_hook(lambda _m, _a, o: seen.__setitem__("gate_up", o))]
    try:
        with torch.no_grad():
            m.hf(**m.hf_inputs(*m.tokenize(PROMPTS)))
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(run.cache["blocks.1.attn.out"], seen["attn"])
    assert torch.equal(run.cache["blocks.1.mlp.pre"], seen["gate_up"][..., :m.cfg.d_mlp])
    heads = m.head_outputs(run.cache["blocks.1.attn.z"], 1).sum(2)
    torch.testing.assert_close(heads, run.cache["blocks.1.attn.out"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["granite", "opt", "llama"])
def test_an_embedding_given_to_the_edge_engine_is_the_embed_site_value(family):
    """EAP-IG interpolates sender 0's outputs (the ``embed`` site: after Granite's multiplier, OPT's block-0
    input) and hands them back as ``embed=``: handing back the clean value is the clean run."""
    m = tiny(family)
    g = Graph.of(m)
    prompts = [m.tokenizer.encode("The cat sat on")[:4], m.tokenizer.encode("Paris is in France")[:4]]
    outs = edges.sender_outputs(m, g, prompts)
    run = edges.edge_run(m, g, prompts, embed=outs[:, :, 0])
    ref = m.run(m.tokenize(prompts)[0]).logits[:, -1]
    torch.testing.assert_close(run.logits, ref, atol=1e-5, rtol=1e-5)


def test_only_the_placement_functions_read_the_adapter():
    """The kinds (views, site places, receivers) are family-free too: the package's functions alone read
    an adapter and pass each kind its paths and numbers."""
    import pathlib

    root = pathlib.Path(placement.__file__).parent
    for name in ("views.py", "places.py", "receivers.py"):
        tree = ast.parse((root / name).read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "adapter"], name
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in ADAPTERS], name
