"""Interventions equal the same edit made by hand; they compose; hooks never leak."""

import time

import pytest
import torch
from conftest import PROMPTS, assert_no_hooks
from helpers import hf_forward

import mechscope as ms
from mechscope.models.hooks import hooked, HookState

CLEAN = ["When Mary and John went to the store, John gave a drink to", "The cat sat on the mat and"]
CORRUPT = ["When John and Mary went to the store, Mary gave a drink to", "The mat sat on the cat and"]


def _same_lengths(model):
    a, b = model.tokenize(CLEAN), model.tokenize(CORRUPT)
    if a[0].shape != b[0].shape or not torch.equal(a[1], b[1]):
        pytest.skip("prompts tokenize to different lengths for this tokenizer")


def test_zero_ablating_a_head_equals_zeroing_its_slice_by_hand(model):
    layer, head = 1, 2
    run = model.run(PROMPTS, interventions=[ms.Ablate(f"blocks.{layer}.attn.z", heads=[head])])
    proj = model.hf.get_submodule(f"{model.adapter.blocks}.{layer}.{model.adapter.out_proj}")
    d = model.cfg.d_head

    def zero_head(_m, args):
        x = args[0].clone()
        x[..., head * d:(head + 1) * d] = 0
        return (x,)

    handle = proj.register_forward_pre_hook(zero_head)
    try:
        expected = hf_forward(model, PROMPTS).logits
    finally:
        handle.remove()
    assert torch.equal(run.logits, expected)
    assert not torch.equal(run.logits, model.run(PROMPTS).logits)
    assert_no_hooks(model)


@pytest.mark.parametrize("site", ["embed", "blocks.1.resid_pre", "blocks.*.resid_mid", "blocks.*.resid_post",
                                  "blocks.0.attn.out", "blocks.2.mlp.out"])
def test_patching_a_whole_clean_run_reproduces_the_clean_logits(llama, site):
    clean = llama.run(CLEAN, cache=site)
    patched = llama.run(CORRUPT, interventions=[ms.Patch(site, source=clean)])
    if site in ("blocks.0.attn.out", "blocks.2.mlp.out"):  # a single component: only part of the way
        assert not torch.equal(patched.logits, llama.run(CORRUPT).logits)
        return
    assert torch.equal(patched.logits, clean.logits)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox_sequential", "gemma", "opt"])
def test_patching_resid_mid_is_exact_for_every_family(family):
    model = ms.models.tiny.tiny(family)
    _same_lengths(model)
    clean = model.run(CLEAN, cache="blocks.*.resid_mid")
    patched = model.run(CORRUPT, interventions=[ms.Patch("blocks.*.resid_mid", source=clean)])
    assert torch.equal(patched.logits, clean.logits)


def test_patching_attention_internals_from_prompts(llama):
    _same_lengths(llama)
    clean = llama.run(CLEAN, cache=["blocks.*.attn.pattern", "blocks.*.attn.z"])
    patched = llama.run(CORRUPT, cache=["blocks.*.attn.pattern", "blocks.*.attn.z"],
                        interventions=[ms.Patch("blocks.*.attn.v", source=CLEAN), ms.Patch("blocks.*.attn.pattern", source=clean)])
    # with the clean pattern and clean values every head mixes exactly what it mixed on the clean prompts
    for layer in range(3):
        assert torch.equal(patched.cache[f"blocks.{layer}.attn.pattern"], clean.cache[f"blocks.{layer}.attn.pattern"])
        torch.testing.assert_close(patched.cache[f"blocks.{layer}.attn.z"], clean.cache[f"blocks.{layer}.attn.z"])


def test_patching_last_position_only_changes_what_follows(llama):
    clean = llama.run(["The cat sat on the mat", "Paris"], cache="blocks.2.resid_pre")
    corrupt = llama.run(["A dog", "When Mary and John went"])  # different lengths: positions are from the right
    patched = llama.run(["A dog", "When Mary and John went"],
                        interventions=[ms.Patch("blocks.2.resid_pre", source=clean, positions=[-1])])
    assert torch.equal(patched.logits[:, :-1], corrupt.logits[:, :-1])
    assert not torch.allclose(patched.logits[:, -1], corrupt.logits[:, -1])


def test_patch_with_nonnegative_positions_counts_real_tokens_per_row(llama):
    prompts = ["The cat sat on the mat", "Paris"]
    src = llama.run(prompts, cache="blocks.0.resid_post")
    run = llama.run(prompts, cache="blocks.0.resid_post",
                    interventions=[ms.Add("blocks.0.resid_post", torch.ones(64), positions=[0])])
    diff = (run.cache["blocks.0.resid_post"] - src.cache["blocks.0.resid_post"]).abs().sum(-1)
    first = (run.mask == 0).sum(1)
    assert torch.allclose(diff[torch.arange(2), first], torch.full((2,), 64.0))
    diff[torch.arange(2), first] = 0
    assert diff.sum() == 0


def test_mean_ablation_uses_the_mean_over_real_tokens(llama):
    ref = llama.run(PROMPTS, cache="blocks.1.mlp.out")
    x, mask = ref.cache["blocks.1.mlp.out"], ref.mask
    mean = (x * mask[..., None]).sum((0, 1)) / mask.sum()
    run = llama.run(["The cat"], cache="blocks.1.mlp.out",
                    interventions=[ms.Ablate("blocks.1.mlp.out", how="mean", reference=ref)])
    torch.testing.assert_close(run.cache["blocks.1.mlp.out"][0], mean.expand(run.tokens.shape[1], -1))
    # with prompts as the reference, mechscope runs them itself; same result
    again = llama.run(["The cat"], interventions=[ms.Ablate("blocks.1.mlp.out", how="mean", reference=PROMPTS)])
    assert torch.equal(again.logits, run.logits)
    # with no reference: the mean over the run's own batch
    own = llama.run(PROMPTS, cache="blocks.1.mlp.out", interventions=[ms.Ablate("blocks.1.mlp.out", how="mean")])
    torch.testing.assert_close(own.cache["blocks.1.mlp.out"][0, -1], mean)


def test_mean_ablation_of_heads(llama):
    ref = llama.run(PROMPTS, cache="blocks.0.attn.z")
    run = llama.run(PROMPTS, cache="blocks.0.attn.z",
                    interventions=[ms.Ablate("blocks.0.attn.z", how="mean", heads=[1, 3], reference=ref)])
    z, z0 = run.cache["blocks.0.attn.z"], ref.cache["blocks.0.attn.z"]
    mask = ref.mask.bool()
    torch.testing.assert_close(z[mask][:, 1], z0[mask][:, 1].mean(0).expand(int(mask.sum()), -1))
    assert torch.equal(z[:, :, [0, 2]], z0[:, :, [0, 2]])


def test_resample_ablation_is_seeded_and_takes_other_rows(llama):
    _same_lengths(llama)
    site = "blocks.1.resid_post"
    names = [("Mary", "John"), ("John", "Mary"), ("Mary", "Mary"), ("John", "John")]
    prompts = [f"When {a} and {b} went to the store, {b} gave a drink to" for a, b in names]
    ref = llama.run(prompts, cache=site)
    assert ref.mask.all()
    a = llama.run(prompts, cache=site, interventions=[ms.Ablate(site, how="resample", seed=3)])
    b = llama.run(prompts, cache=site, interventions=[ms.Ablate(site, how="resample", seed=3)])
    assert torch.equal(a.logits, b.logits)
    x, x0 = a.cache[site], ref.cache[site]
    for i in range(4):
        matches = [j for j in range(4) if torch.equal(x[i], x0[j])]
        assert matches and i not in matches


def test_add_and_project_out(llama):
    v = torch.randn(64)
    base = llama.run(PROMPTS, cache="blocks.1.resid_post")
    run = llama.run(PROMPTS, cache="blocks.1.resid_post", interventions=[ms.Add("blocks.1.resid_post", v, coef=2.0)])
    torch.testing.assert_close(run.cache["blocks.1.resid_post"], base.cache["blocks.1.resid_post"] + 2 * v)
    both = llama.run(PROMPTS, interventions=[ms.Add("blocks.1.resid_post", v), ms.Add("blocks.1.resid_post", -v)])
    torch.testing.assert_close(both.logits, base.logits, atol=1e-5, rtol=1e-5)  # they compose in order
    out = llama.run(PROMPTS, cache="blocks.1.resid_post", interventions=[ms.ProjectOut("blocks.1.resid_post", v)])
    proj = out.cache["blocks.1.resid_post"] @ (v / v.norm())
    assert proj.abs().max() < 1e-4


def test_add_per_head_vector(llama):
    vec = torch.randn(2, 16)
    base = llama.run(PROMPTS, cache="blocks.0.attn.q")
    run = llama.run(PROMPTS, cache="blocks.0.attn.q", interventions=[ms.Add("blocks.0.attn.q", vec, heads=[0, 3])])
    q, q0 = run.cache["blocks.0.attn.q"], base.cache["blocks.0.attn.q"]
    torch.testing.assert_close(q[:, :, [0, 3]], q0[:, :, [0, 3]] + vec)
    assert torch.equal(q[:, :, [1, 2]], q0[:, :, [1, 2]])


def test_replace_with_a_function_and_pattern_positions(llama):
    run = llama.run(PROMPTS, cache="blocks.1.attn.pattern",
                    interventions=[ms.Replace("blocks.1.attn.pattern", lambda p: torch.zeros_like(p), heads=[0], positions=[-1])])
    pat = run.cache["blocks.1.attn.pattern"]
    assert pat[:, 0, -1].abs().sum() == 0 and pat[:, 0, -2].sum() > 0 and pat[:, 1, -1].sum() > 0
    same = llama.run(PROMPTS, interventions=[ms.Replace("blocks.*.mlp.post", lambda x: x)])
    assert torch.equal(same.logits, llama.run(PROMPTS).logits)


def test_hooks_are_removed_after_an_error_inside_an_intervention(model):
    def boom(x):
        raise RuntimeError("user code failed")

    with pytest.raises(RuntimeError, match="user code failed"):
        model.run(PROMPTS, cache=model.sites, interventions=[ms.Replace("blocks.1.attn.pattern", boom)])
    assert_no_hooks(model)
    with pytest.raises(RuntimeError, match="user code failed"):
        model.run(PROMPTS, cache=model.sites, interventions=[ms.Replace("blocks.0.mlp.out", boom)])
    assert_no_hooks(model)
    assert torch.equal(model.run(PROMPTS).logits, hf_forward(model, PROMPTS).logits)


def test_hook_check_sees_hooks_while_a_run_is_live(llama):
    """Guard against a vacuous leak test: inside the context our hooks are present."""
    actions = llama._plan(["blocks.0.resid_post", "blocks.0.attn.pattern"], [], None)
    with hooked(llama, HookState(actions)):
        with pytest.raises(AssertionError):
            assert_no_hooks(llama)
    assert_no_hooks(llama)


def test_generate_with_steering(llama):
    plain = llama.generate("The cat", max_new_tokens=8)
    assert isinstance(plain, str) and plain
    zero = llama.generate("The cat", max_new_tokens=8, interventions=[ms.Add("blocks.1.resid_post", torch.randn(64), coef=0.0)])
    assert zero == plain
    steered = llama.generate("The cat", max_new_tokens=8,
                             interventions=[ms.Add("blocks.1.resid_post", llama.hf.get_input_embeddings().weight[40], coef=30.0)])
    assert steered != plain
    # position-selected interventions recompute without the KV cache; an identity edit changes nothing
    ident = llama.generate(["The cat", "Paris is"], max_new_tokens=6,
                           interventions=[ms.Replace("blocks.0.resid_post", lambda x: x, positions=[-1])])
    assert ident == llama.generate(["The cat", "Paris is"], max_new_tokens=6)
    mean = llama.generate("The cat", max_new_tokens=4, interventions=[ms.Ablate("blocks.0.mlp.out", how="mean")])
    assert isinstance(mean, str)
    assert_no_hooks(llama)


def test_rows_let_one_forward_carry_a_sweep(llama):
    """Ablating head h in row h of a repeated batch equals separate runs, one per head."""
    prompt = "When Mary and John went to the store"
    batch = llama.run([prompt] * 4, interventions=[ms.Ablate("blocks.1.attn.z", heads=[h], rows=[h]) for h in range(4)])
    for h in range(4):
        alone = llama.run(prompt, interventions=[ms.Ablate("blocks.1.attn.z", heads=[h])])
        torch.testing.assert_close(batch.logits[h], alone.logits[0], atol=2e-5, rtol=1e-5)
    with pytest.raises(ms.InterventionError, match="row 4 out of range .* 4 rows in the batch"):
        llama.run([prompt] * 4, interventions=[ms.Ablate("blocks.1.attn.z", rows=[4])])


def test_two_threads_on_one_model_equal_sequential_calls(llama):
    """20 rounds × 2 threads of mixed calls — plain runs, runs that switch the attention function
    (patterns cached), ablations, edge runs with cut edges — each equal to the same call made alone.
    Before the model lock, 61 of 80 such runs came back wrong (logits off, cache entries missing)
    and the attention function stayed switched in 10 of 40 rounds."""
    import threading

    from mechscope.circuits.edges import edge_run
    from mechscope.circuits.graph import Graph

    graph = Graph.of(llama)
    prompts = [[1, 5, 9, 3], [2, 4, 6, 8]]
    keep = torch.ones(len(graph.senders), len(graph.receivers))
    keep[::3] = 0
    ablated = torch.zeros(1, 4, len(graph.senders), llama.cfg.d_model)
    calls = {
        "plain": lambda: llama.run(PROMPTS).logits,
        "patterns": lambda: llama.run(PROMPTS, cache="blocks.*.attn.pattern").cache["blocks.1.attn.pattern"],
        "ablate": lambda: llama.run(PROMPTS, interventions=[ms.Ablate("blocks.0.attn.z", heads=[1])]).logits,
        "edges": lambda: edge_run(llama, graph, prompts, keep=keep, ablated=ablated).logits,
    }
    alone = {name: fn() for name, fn in calls.items()}
    wrong, errors = [], []

    def worker(names):
        try:
            for _ in range(20):
                for name in names:
                    if not torch.equal(calls[name](), alone[name]):
                        wrong.append(name)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(order,)) for order in
               (["plain", "patterns", "ablate", "edges"], ["patterns", "edges", "plain", "ablate"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong, (errors, wrong)
    assert_no_hooks(llama)


def test_any_module_is_a_site_by_its_path(llama):
    """The engine's module sites (``<path>.output`` / ``.input``), beside the canonical names an
    adapter resolves: they hold the same tensors, and interventions apply there too."""
    prompts = ["The cat sat on the mat", "Paris is"]
    down = "model.layers.1.mlp.down_proj"
    run = llama.run(prompts, cache=[f"{down}.output", f"{down}.input", "blocks.1.mlp.out", "blocks.1.mlp.post"])
    assert torch.equal(run.cache[f"{down}.output"], run.cache["blocks.1.mlp.out"])
    assert torch.equal(run.cache[f"{down}.input"], run.cache["blocks.1.mlp.post"])
    a = llama.run(prompts, interventions=[ms.Ablate(f"{down}.output")])
    b = llama.run(prompts, interventions=[ms.Ablate("blocks.1.mlp.out")])
    assert torch.equal(a.logits, b.logits)
    with pytest.raises(ms.SiteError, match="unknown site 'model.layers.1.mlp.nope.output'"):
        llama.run(prompts, cache="model.layers.1.mlp.nope.output")


def test_a_replace_that_returns_its_input_at_a_viewed_site_stays_in_the_graph(llama):
    """attn.z is the output projection's input viewed per head: a Replace that keeps the tensor it is
    given (to differentiate at it later) sees the tensor the model goes on with, so gradients reach it;
    the run is unchanged bit for bit."""
    held = {}

    def keep(z):
        held["z"] = z
        return z

    run = llama.run(PROMPTS, interventions=[ms.Replace("blocks.1.attn.z", keep)], differentiable=True)
    assert torch.equal(run.logits, llama.run(PROMPTS).logits)
    (grad,) = torch.autograd.grad(run.logits[:, -1].sum(), held["z"])
    assert grad.shape == held["z"].shape and float(grad.abs().sum()) > 0


def test_forward_until_stops_after_its_sites(llama):
    """``Model.forward_until`` (the engine's) returns the sites' values and skips the later blocks."""
    prompts = ["The cat sat on the mat.", "Paris is in"]
    run = llama.run(prompts, cache=["blocks.0.resid_post", "blocks.1.attn.z"])
    calls = []
    handle = llama.hf.model.layers[2].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        one = llama.forward_until(prompts, "blocks.0.resid_post")
        both = llama.forward_until(prompts, ["blocks.1.attn.z", "blocks.0.resid_post"])
    finally:
        handle.remove()
    assert not calls  # block 2 never ran
    assert torch.equal(one, run.cache["blocks.0.resid_post"]) and torch.equal(both[0], run.cache["blocks.1.attn.z"])


def test_seeded_sampling_is_each_callers_own_stream_across_threads(llama):
    """``generate(do_sample=True, seed=k)`` seeded torch's global generator before taking the model's
    lock: a thread waiting for the lock while another reseeded got the other's stream. Here another
    thread holds the lock while the global generator is reseeded; the waiting call must still sample
    its own seed's continuation — and leave the caller's global random state as it was."""
    import threading

    from mechscope.models.hookset import model_lock

    alone = llama.generate("The cat", 6, do_sample=True, seed=1)
    assert llama.generate("The cat", 6, do_sample=True, seed=1) == alone
    got: list[str] = []
    lock = model_lock(llama.hf)
    with lock:
        t = threading.Thread(target=lambda: got.append(llama.generate("The cat", 6, do_sample=True, seed=1)))
        t.start()
        time.sleep(0.3)  # the thread now waits for the lock
        torch.manual_seed(999)  # as another caller seeding for its own sampling
    t.join()
    assert got == [alone]
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    llama.generate("The cat", 3, do_sample=True, seed=2)
    assert torch.equal(torch.rand(3), before)


def test_interventions_are_a_list_or_one_intervention_never_a_string(llama):
    """A string passed as ``interventions`` was read letter by letter ("not an intervention: 'b'")."""
    one = ms.Ablate("blocks.0.attn.z", heads=[1])
    assert torch.equal(llama.run(PROMPTS, interventions=one).logits, llama.run(PROMPTS, interventions=[one]).logits)
    for bad in ("blocks.0.attn.z", 3):
        with pytest.raises(TypeError, match=r"interventions=.*give a list of interventions"):
            llama.run(PROMPTS, interventions=bad)
        with pytest.raises(TypeError, match=r"interventions=.*give a list of interventions"):
            llama.generate("The cat", 2, interventions=bad)
