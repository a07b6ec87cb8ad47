"""One sample of every result type, made from a tiny model (for round-trip and rendering tests)."""

import torch

from mechscope.attribution import integrated_gradients, layer_attribution, token_ig
from mechscope.circuits import Circuit, eap_ig, minimal_circuit
from mechscope.concepts.geometry import weight_tying
from mechscope.components.heads import AttentionPatterns, detect_heads, head_circuits
from mechscope.lenses.logit import direct_logit_attribution, logit_lens
from mechscope.circuits.paths import path_patching
from mechscope.components.patching import ablation_scan, activation_patching, attribution_patching, compare_patching
from mechscope.circuits.scrubbing import causal_scrubbing
from mechscope.verify import Box, as_network, branch_and_bound, output_bounds, robustness
from mechscope.tasks import make_task
from mechscope.results import NextTokens, Provenance
from mechscope.concepts.steering import SteeredGeneration
from mechscope.toy import interference, superposition_phases, train_grokking, train_induction, train_superposition
from mechscope.lenses.tuned import TunedLens, compare_lenses, train_tuned_lens


def sample_results(model):
    prompts = ["The cat sat on the mat", "Paris is in"]
    return [
        NextTokens.of(model.run(prompts), prompts, k=3),
        ablation_scan(model, "The cat sat", " the", components="heads", progress=False),
        AttentionPatterns.of(model.run(prompts, cache="blocks.1.attn.pattern"), layer=1, row=1),
        Circuit(provenance=Provenance.of(model, prompts=prompts, method="hand-written"),
                nodes=["embed", "a0.h1", "a1.h3", "m1", "logits"],
                edges=[["embed", "a0.h1", 0.8], ["a0.h1", "a1.h3", 0.5], ["a1.h3", "logits", 1.2],
                       ["embed", "m1", -0.3], ["m1", "logits", 0.2]],
                metric="logit diff", faithfulness=0.91, completeness=0.85, method="hand-written"),
        SteeredGeneration.compare(model, "The cat", "blocks.1.resid_pre", "Paris is", "The mat", coef=4.0,
                                  max_new_tokens=5),
        logit_lens(model, "The cat sat"),
        direct_logit_attribution(model, "The cat sat", " the"),
        token_ig(model, "The cat sat", " the", steps=8),
        layer_attribution(model, "The cat sat", "blocks.1.attn.z", " the", steps=8),
        integrated_gradients(lambda p: (p ** 2).sum(-1), torch.tensor([1.0, -2.0, 0.5]), steps=4),
        compare_lenses(model, TunedLens(model.cfg.d_model, [0, 1]), model.tokenize(["The cat sat on the mat"] * 2)[0],
                       train_loss=[1.0, 0.5]),
        train_tuned_lens(model, model.tokenize(["The cat sat on the mat"] * 2)[0], layers=[0], steps=2, batch_size=1,
                         progress=False),
        detect_heads(model, batch=2, length=8, k=2, seeds=2),
        head_circuits(model),
        weight_tying(model, tokens=(5,), k=3, sample=64),
        train_induction(1, steps=4, eval_every=2, context=16, vocab=32, d_model=16, n_heads=2, progress=False),
        train_superposition(steps=5, instances=2, progress=False),
        superposition_phases([0.5, 2.0], [0.1, 1.0], instances=1, steps=5, progress=False),
        train_grokking(5, steps=4, eval_every=2, d_model=16, d_mlp=16, progress=False),
        make_task("induction", model, n=3, length=5).evaluate(model),
        activation_patching(model, make_task("induction", model, n=2, length=4), "resid", progress=False),
        compare_patching(activation_patching(model, make_task("induction", model, n=2, length=4), "heads",
                                             progress=False),
                         attribution_patching(model, make_task("induction", model, n=2, length=4), "heads")),
        *_circuit_samples(model),
        *_concept_samples(model),
        *_verify_samples(),
        *_sae_samples(model),
        *_vision_samples(),
        _siit_sample(),
    ]


def _siit_sample():
    from mechscope.compile import compile_program
    from mechscope.compile.programs import make_reverse
    from mechscope.compile.siit import train_siit

    return train_siit(compile_program(make_reverse(), ["a", "b", "c"], 3), d_model=16, steps=3, batch_size=4, log_every=1,
                      progress=False)


def _vision_samples():
    from mechscope.vision import ImageModel, channel_ablation, grad_cam, visualize

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3))
    cnn = ImageModel(net, ["a", "b", "c"], name="cnn", size=8, mean=[0.5] * 3, std=[0.25] * 3)
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return [grad_cam(cnn, images[:1], site="0"), channel_ablation(cnn, images, "0", progress=False),
            visualize(cnn, "0:1", steps=2, natural=images, progress=False)]


def _sae_samples(model):
    from mechscope.sae import SAEConfig, SparseCoder
    from mechscope.sae.dashboard import feature_cards
    from mechscope.sae.evaluate import evaluate

    site = "blocks.0.resid_post"
    tokens = torch.randint(3, 100, (4, 12), generator=torch.Generator().manual_seed(0))
    x = model.run(tokens, cache=site).cache[site].reshape(-1, model.cfg.d_model)
    sae = SparseCoder(SAEConfig("topk", model.cfg.d_model, 32, k=4, site=site)).fit(x, batch_size=16, steps=4,
                                                                                  log_every=2, progress=False)
    import tempfile

    from mechscope.models.tiny import _TEXT
    from mechscope.sae import evaluate_transcoders, load_transcoders, train_transcoders

    folder = tempfile.mkdtemp()
    texts = {f"w{i}": (_TEXT + " ") * 3 for i in range(14)}
    log = train_transcoders(model, folder, width=16, k=4, tokens=240, batch_size=60, context=16, corpora=texts, log_every=2,
                            progress=False)
    from mechscope.explain import ExampleConfig, explain_features

    from helpers import RuleChat

    from mechscope.explain.sidecar import card_explanations

    explained = explain_features(sae, model, list(range(8)), explainer=RuleChat(), blocks=tokens, cache=False,
                                 scorers=("detection", "fuzz", "simulation"),
                                 config=ExampleConfig(ctx_len=6, n_quantiles=1, n_test=2, n_train=1, n_negatives=2,
                                                      min_windows=1), progress=False)
    cards = feature_cards(sae, model, [0, 3], blocks=tokens, k=2, progress=False)
    return [sae.log_, evaluate(sae, model, tokens, progress=False), cards.with_explanations(card_explanations(explained)),
            log,
            evaluate_transcoders(model, load_transcoders(folder, model), tokens[:2, :10], progress=False), explained]


def _verify_samples():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.tensor([0.5, -0.2, 0.1])
    flip = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2))
    with torch.no_grad():
        flip[0].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        flip[2].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        flip[0].bias.zero_()
        flip[2].bias.zero_()
    return [output_bounds(net, Box.linf(x, 0.2), "crown", samples=100),
            robustness(flip, torch.tensor([1.0, 0.0]), 0.6, method="milp"),  # falsified: carries a counterexample
            robustness(net, x, 0.05, method="bab"),  # verified, with the boxes searched
            interference(train_superposition(steps=50, instances=1, progress=False), -1),
            branch_and_bound(as_network(net, (3,)), x - 0.05, x + 0.05, [(torch.tensor([[1.0, -1.0]]), torch.tensor([-100.0]))],
                             timeout=10)]


def _concept_samples(model):
    from mechscope.concepts.datasets import ProbeDataset
    from mechscope.concepts.probes import probe_sweep
    from mechscope.concepts.steering import control_vector, steering_sweep

    from mechscope.concepts.geometry import WordVectors, relation_geometry
    from mechscope.components.neurons import gating_neurons, neuron_cards

    data = ProbeDataset("s", ["I love it.", "I hate it.", "so good.", "so bad."], [1, 0, 1, 0], ["a", "a", "b", "b"],
                        types=["love", "hate", "good", "bad"])
    wv = WordVectors([f"w{i}" for i in range(8)], torch.randn(8, 5, generator=torch.Generator().manual_seed(0)))
    cv = control_vector(model, [("I love it", "I hate it")], "blocks.0.resid_post")
    return [probe_sweep(model, data, "blocks.*.resid_post", test_fraction=0.5, progress=False), cv,
            relation_geometry(wv, {"r": [("w0", "w1"), ("w2", "w3"), ("w4", "w5")]}, vocab=None),
            neuron_cards(model, 0, [1, 2], blocks=torch.randint(3, 100, (2, 12), generator=torch.Generator().manual_seed(0)),
                         k=2, progress=False),
            gating_neurons(model, make_task("induction", model, n=2, length=4), 0, candidates=3, progress=False),
            steering_sweep(model, cv, ["The cat"], [0.0, 2.0], score=lambda ts: 0.0, neutral=["The cat sat."],
                           max_new_tokens=2, progress=False)]


def _circuit_samples(model):
    from mechscope.tracing import attribution_graph, validate_graph
    from mechscope.sae import SAEConfig, SparseCoder

    d = model.cfg.d_model
    coders = [SparseCoder(SAEConfig("relu", d, 16, d_out=d, site=f"blocks.{layer}.mlp.in",
                                    target_site=f"blocks.{layer}.mlp.out"), seed=layer)
              for layer in range(model.cfg.n_layers)]
    graph = attribution_graph(model, coders, "The cat sat", max_logits=3, batch_size=16, progress=False)
    task = make_task("induction", model, n=3, length=4)
    scores = eap_ig(model, task, steps=2, progress=False)
    first = lambda toks: toks[0]  # noqa: E731
    return [
        scores,
        minimal_circuit(model, task, scores, target=0.5, sizes=[2, 8, 32], progress=False),
        path_patching(model, task, "logits", progress=False),
        causal_scrubbing(model, task.clean, [g[0] for g in task.good], {"first": {"a1.h0": first}}, resamples=1),
        graph,
        validate_graph(graph, model, coders, k=3, factor=0.5),
    ]


def same_result(a, b) -> bool:
    da, ta = a.to_dict()
    db, tb = b.to_dict()
    def equal(x, y):  # bit for bit, NaN where NaN
        return x.dtype == y.dtype and x.shape == y.shape and (torch.equal(x, y) or (
            x.is_floating_point() and bool((torch.isnan(x) == torch.isnan(y)).all())
            and torch.equal(x.nan_to_num(0.0), y.nan_to_num(0.0))))

    return da == db and ta.keys() == tb.keys() and all(equal(ta[k], tb[k]) for k in ta)
