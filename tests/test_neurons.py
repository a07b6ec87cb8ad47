"""Neuron cards and gating neurons on a tiny model: the numbers match the cached activations and
one-at-a-time ablations; the polysemanticity count on planted clusters."""

import pytest
import torch

from mechscope.models.interventions import Replace
from mechscope.models.tiny import tiny
from mechscope.components.neurons import _clusters, gating_neurons, neuron_cards
from mechscope.tasks import make_task


def test_cards_match_the_cache():
    model = tiny("llama")
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(3, model.cfg.vocab, (6, 20), generator=g)
    cards = neuron_cards(model, 1, [0, 5, 7], blocks=blocks, k=4, window=5, progress=False)
    post = model.run(blocks, cache="blocks.1.mlp.post").cache["blocks.1.mlp.post"][..., [0, 5, 7]].float()
    flat = post.reshape(-1, 3)
    for i in range(3):
        assert cards.max_act[i] == pytest.approx(float(flat[:, i].max()), abs=1e-6)
        assert cards.top[i][0]["acts"][cards.top[i][0]["peak"]] == pytest.approx(cards.max_act[i], abs=1e-6)
        assert len(cards.top[i]) == 4 and len(cards.top[i][0]["tokens"]) <= 5
        assert int(cards.hist[i].sum()) == 120 and cards.n_tokens == 120
        assert cards.density[i] == pytest.approx(float((flat[:, i] > 0).double().mean()))
        assert cards.promoted[i][0][1] >= cards.promoted[i][-1][1] and cards.suppressed[i][0][1] <= cards.suppressed[i][-1][1]
    html = cards.html()
    assert html.count('class="card"') == 3 and "top activating" in html and "data-rgb=\"255,120,0\"" in html
    assert "fires on" in cards.summary()
    d = model.cfg.d_mlp
    with pytest.raises(ValueError, match=f"out of range: layer 1 has neurons 0..{d - 1}"):
        neuron_cards(model, 1, [d], blocks=blocks)


def test_cluster_count_on_planted_contexts():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g)
    pts = torch.cat([c + 0.05 * torch.randn(10, 16, generator=g) for c in centres])
    assert _clusters(pts) == pytest.approx(3.0)  # three equal clusters
    assert _clusters(centres[0] + 0.05 * torch.randn(12, 16, generator=g)) == pytest.approx(1.0)


def test_gating_neurons_equal_one_at_a_time_ablation():
    model = tiny("llama")
    task = make_task("induction", model, n=3, length=5)
    result = gating_neurons(model, task, 0, neurons=range(model.cfg.d_mlp), batch_size=16, progress=False)
    assert result.effect.shape == (model.cfg.d_mlp,)
    clean = task.run_metric(model, "clean")
    for n in (0, 17, int(result.effect.argmin())):
        def zero(x, n=n):
            x = x.clone()
            x[..., n] = 0.0
            return x

        one = task.run_metric(model, "clean", interventions=[Replace("blocks.0.mlp.post", zero)])
        assert float(result.effect[n]) == pytest.approx(float((one - clean).mean()), abs=1e-5)
        expected = float(((one <= 0) & (clean > 0)).double().sum() / (clean > 0).sum().clamp(min=1))
        assert float(result.switched[n]) == pytest.approx(expected)
    assert "gating neurons" in result.summary() and result.png_bytes()[:4] == b"\x89PNG"
    top = gating_neurons(model, task, 0, candidates=5, progress=False)  # gradient-ranked, then exact
    tested = (~top.effect.isnan()).nonzero().flatten()
    assert len(tested) == 5
    torch.testing.assert_close(top.effect[tested], result.effect[tested])
    assert float(top.effect[tested].abs().max()) >= 0.5 * float(result.effect.abs().max())  # finds the big ones
