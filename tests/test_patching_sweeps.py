"""Tasks (clean/corrupted pairs with metrics) and batched activation-patching sweeps: the batched
sweep equals one forward per patched index with the public Patch intervention."""

import pytest
import torch

from mechscope import Patch
from mechscope.components.patching import SWEEPS, activation_patching, attribution_patching, compare_patching
from mechscope.tasks import Task, make_task
from mechscope.tasks.catalog import IOI_TEMPLATES
from helpers import random_task




def _one_at_a_time(model, task, sweep, direction):
    """The reference: one forward per patched index, with ms.Patch from a cached source run."""
    template, per_head, per_pos = SWEEPS[sweep]
    target, source_ids = (task.corrupted, task.clean) if direction == "denoising" else (task.clean, task.corrupted)
    sites = [template.format(l=l) for l in range(model.cfg.n_layers)]
    source = model.run(source_ids, cache=sites)
    clean, corrupted = float(task.run_metric(model, "clean").mean()), float(task.run_metric(model, "corrupted").mean())
    n_heads = model.cfg.n_kv_heads if sweep in ("k", "v") else model.cfg.n_heads
    n_pos = len(task.clean[0])
    out = []
    for l in range(model.cfg.n_layers):
        for h in (range(n_heads) if per_head else [None]):
            for p in (range(n_pos) if per_pos else [None]):
                iv = Patch(sites[l], source=source, heads=None if h is None else [h], positions=None if p is None else [p])
                with torch.no_grad():
                    m = task.score(model.run(target, interventions=[iv]).logits[:, -1]).mean()
                out.append((float(m) - corrupted) / (clean - corrupted))
    return torch.tensor(out)


@pytest.mark.parametrize("sweep", ["resid", "mlp", "heads", "head_pos", "k"])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_batched_sweep_equals_one_forward_per_index(llama, sweep, direction):
    task = random_task(llama)
    batched = activation_patching(llama, task, sweep, direction=direction, batch_size=7, progress=False)
    loop = _one_at_a_time(llama, task, sweep, direction)
    # Same arithmetic, different batch compositions: float32 agreement to ~1e-6 relative.
    torch.testing.assert_close(batched.effect.flatten(), loop, atol=1e-4, rtol=1e-4)
    heads = llama.cfg.n_kv_heads if sweep == "k" else llama.cfg.n_heads
    expected = {"resid": (3, 6), "mlp": (3, 6), "heads": (3, heads), "head_pos": (3, heads, 6), "k": (3, heads)}
    assert tuple(batched.effect.shape) == expected[sweep]


def test_pairs_differing_in_one_token_every_family(model):
    """Clean and corrupted differ only at position 2. In layer 0 the residual at position 2 is all
    the difference: patching it gives exactly the source run (denoising 1, noising 0); patching any
    other position changes nothing."""
    task = random_task(model, n=2, length=5)
    task.corrupted = [c[:2] + [k[2]] + c[3:] for c, k in zip(task.clean, task.corrupted)]
    for direction, source_value in (("denoising", 1.0), ("noising", 0.0)):
        r = activation_patching(model, task, "resid", direction=direction, progress=False)
        assert abs(float(r.effect[0, 2]) - source_value) < 1e-4, (direction, r.effect[0])
        others = r.effect[0, [0, 1, 3, 4]]
        assert float(others.sub(1 - source_value).abs().max()) < 1e-4, (direction, r.effect[0])


def test_padded_pairs_of_different_lengths_patch_whole_rows(llama):
    task = random_task(llama, n=2, length=6)
    longer = random_task(llama, n=2, length=9, seed=1)
    mixed = Task("mixed", 1, 0, task.clean + longer.clean, task.corrupted + longer.corrupted,
                 task.good + longer.good, task.bad + longer.bad)
    r = activation_patching(llama, mixed, "heads", batch_size=5, progress=False)
    torch.testing.assert_close(r.effect.flatten(), _one_at_a_time(llama, mixed, "heads", "denoising"), atol=1e-4,
                               rtol=1e-4)
    with pytest.raises(ValueError, match="one_length"):
        activation_patching(llama, mixed, "resid", progress=False)
    assert len(mixed.one_length()) == 2


def test_bad_sweeps_and_tasks_are_clear_errors(llama):
    task = random_task(llama)
    with pytest.raises(ValueError, match="valid: resid"):
        activation_patching(llama, task, "neurons")
    with pytest.raises(ValueError, match="denoising"):
        activation_patching(llama, task, "heads", direction="sideways")
    with pytest.raises(ValueError, match="equal token lengths"):
        Task("bad", 1, 0, [[1, 2, 3]], [[1, 2]], [[4]], [[5]])
    with pytest.raises(ValueError, match="unknown task"):
        make_task("sudoku", llama)


def test_tasks_build_for_a_tiny_tokenizer(llama):
    t = make_task("induction", llama, n=4, length=6)
    assert len(t) == 4 and all(len(c) == len(k) == 11 for c, k in zip(t.clean, t.corrupted))
    assert t.clean[0][:6] == t.clean[0][6:] + [t.good[0][0]]
    ev = t.evaluate(llama)
    assert ev.clean.shape == (4,) and "induction" in ev.summary()


@pytest.mark.slow
def test_smollm2_tasks_and_ioi_patching(smollm):
    """Measured on SmolLM2: IOI 64/64 solved (logit diff 5.2 clean, −0.2 corrupted), greater-than
    64/64 (prob diff 0.52 vs −0.78), induction 32/32 (13.4 vs −1.0), factual 60/66."""
    ioi = make_task("ioi", smollm, n=16)
    assert len(ioi.texts) == 16 and all(any(t.split("{")[0] in x for t in IOI_TEMPLATES) for x in ioi.texts[:3])
    ev = ioi.evaluate(smollm)
    assert float(ev.clean.mean()) > 3 and abs(float(ev.corrupted.mean())) < 1
    gt = make_task("greater-than", smollm, n=16).evaluate(smollm)
    assert float(gt.clean.mean()) > 0.2 > float(gt.corrupted.mean())
    facts = make_task("factual", smollm).solved_by(smollm)
    assert len(facts) >= 40
    r = activation_patching(smollm, ioi.subset(range(2)), "heads", progress=False)
    name, value = r.top(1)[0]
    assert int(name[1:name.index("H")]) >= 15 and abs(value) > 0.2  # IOI heads sit in the upper half
    # measured on 4 pairs: r = 0.997, top head L23H3 +0.53 estimated vs +0.45 patched; 1.8 s vs 57 s (1 thread)
    cmp = compare_patching(r, attribution_patching(smollm, ioi.subset(range(2)), "heads"))
    assert cmp.correlation > 0.9, cmp.summary()


def test_patch_cli(tmp_path, capsys):
    from mechscope.cli import main
    from mechscope.models.tiny import tiny_hf

    hf, tok = tiny_hf("llama")
    hf.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    out = tmp_path / "p.html"
    code = main(["patch", str(tmp_path / "m"), "--task", "induction", "-n", "6", "--sweep", "heads", "--quiet",
                 "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0  # seeded: the random tiny model solves 2 of the 6 induction pairs
    assert "induction: 2 pairs" in text and "denoising patching of heads on induction" in text
    assert "Activation patching" in out.read_text()
    assert main(["patch", str(tmp_path / "m"), "--task", "induction", "-n", "6", "--method", "both", "--quiet",
                 "--out", str(out)]) == 0
    assert "Pearson r" in capsys.readouterr().out and "Attribution vs activation" in out.read_text()


def test_a_task_nobody_solves_is_a_clear_error(llama):
    task = random_task(llama)
    task.good, task.bad = task.bad, task.good
    task.good = [[5]] * len(task)
    task.bad = [[5]] * len(task)  # metric identically 0: solved nowhere
    with pytest.raises(ValueError, match="solves none of the 3 pairs"):
        task.solved_by(llama)


# ---------------------------------------------------------------------------------------------
# Attribution patching


def _linear_top(kind: str):
    """A model whose final norm is an identity, so the logits are linear in the last block's MLP
    output (tiny GPT-2) or, with no MLPs at all, in its attention heads (attention-only toy)."""
    from mechscope.models.tiny import tiny
    from mechscope.toy import attn_only

    model = tiny("gpt2") if kind == "gpt2" else attn_only(2, vocab=64, context=16, seed=3)
    model.hf.transformer.ln_f = torch.nn.Identity()
    return model


@pytest.mark.parametrize("kind, sweep", [("gpt2", "mlp"), ("attn_only", "attn"), ("attn_only", "heads"),
                                         ("attn_only", "head_pos")])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_attribution_patching_is_exact_where_the_metric_is_linear(kind, sweep, direction):
    model = _linear_top(kind)
    task = random_task(model, n=3, length=6)
    actual = activation_patching(model, task, sweep, direction=direction, progress=False)
    estimate = attribution_patching(model, task, sweep, direction=direction)
    last = model.cfg.n_layers - 1  # the last block's outputs reach the logits through linear maps only
    torch.testing.assert_close(estimate.effect[last], actual.effect[last], atol=1e-4, rtol=1e-4)
    assert estimate.effect.shape == actual.effect.shape
    assert not torch.allclose(estimate.effect[0], actual.effect[0], atol=1e-3)  # earlier: an approximation


def test_attribution_patching_tracks_activation_patching(llama):
    task = random_task(llama, n=4, length=6)
    actual = activation_patching(llama, task, "head_pos", progress=False)
    cmp = compare_patching(actual, attribution_patching(llama, task, "head_pos"))
    assert cmp.correlation > 0.5, cmp.summary()  # random tiny model: small effects, near-linear regime
    assert "Pearson r" in cmp.summary() and len(cmp.names) == actual.effect.numel()
    with pytest.raises(ValueError, match="same sweep"):
        compare_patching(actual, attribution_patching(llama, task, "heads"))
