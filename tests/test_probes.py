"""Linear probes: planted features recovered, agreement with scikit-learn, control tasks and
selectivity, group splits; sweeps over a model's sites."""

import pytest
import torch

from mechscope.models.tiny import tiny
from mechscope.concepts.datasets import ProbeDataset, sentiment_dataset, truth_dataset
from mechscope.concepts.probes import LinearProbe, control_labels, group_split, probe_sweep


def _planted(n=600, d=32, seed=0, strength=1.5):
    """X = noise + (2y − 1)·strength·v: a linear feature along a planted unit direction v."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(d, generator=g, dtype=torch.float64)
    v /= v.norm()
    y = (torch.rand(n, generator=g) < 0.5).double()
    X = torch.randn(n, d, generator=g, dtype=torch.float64) + (2 * y - 1)[:, None] * strength * v
    return X, y, v


@pytest.mark.parametrize("kind", ["logistic", "mass-mean"])
def test_a_planted_linear_feature_is_recovered(kind):
    X, y, v = _planted(n=1400)
    probe = LinearProbe(kind).fit(X[:600], y[:600])
    assert probe.score(X[600:], y[600:]) > 0.88  # Bayes accuracy Φ(1.5) = 0.933
    cos = float(probe.direction.double() @ v)
    assert cos > 0.9, cos  # the direction is the planted one, signed towards class 1


def test_logistic_and_ridge_match_scikit_learn():
    sk = pytest.importorskip("sklearn.linear_model")
    X, y, _ = _planted(n=300, d=10, strength=0.7)
    ours = LinearProbe("logistic", C=0.5).fit(X, y)
    ref = sk.LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(X.numpy(), y.numpy())
    torch.testing.assert_close(ours.coef_, torch.tensor(ref.coef_[0]), atol=1e-5, rtol=0)  # same objective, optimum
    assert ours.intercept_ == pytest.approx(float(ref.intercept_[0]), abs=1e-5)
    target = X @ torch.arange(10, dtype=torch.float64) + 0.3 * torch.randn(300, generator=torch.Generator().manual_seed(1),
                                                                           dtype=torch.float64)
    ours = LinearProbe("ridge", alpha=2.0).fit(X, target)
    ref = sk.Ridge(alpha=2.0).fit(X.numpy(), target.numpy())
    torch.testing.assert_close(ours.coef_, torch.tensor(ref.coef_), atol=1e-8, rtol=0)
    assert ours.score(X, target) == pytest.approx(ref.score(X.numpy(), target.numpy()), abs=1e-10)


def test_mass_mean_direction_is_the_difference_of_class_means():
    X, y, _ = _planted(n=200, d=8)
    for iid in (False, True):
        p = LinearProbe("mass-mean", iid=iid).fit(X, y)
        diff = X[y == 1].mean(0) - X[y == 0].mean(0)
        torch.testing.assert_close(p.direction.double(), diff / diff.norm(), atol=1e-6, rtol=0)
        assert p.score(X, y) > 0.85


def test_control_task_and_selectivity():
    """Real labels: high accuracy, control at chance, selectivity high. Random labels: the task is
    no better than its control: selectivity ≈ 0."""
    X, y, _ = _planted(n=800, d=16, strength=1.5)
    groups = [f"g{i // 4}" for i in range(800)]
    types = [f"t{i % 50}" for i in range(800)]  # types recur across groups, as words do across sentences
    real = ProbeDataset("planted", [""] * 800, y.tolist(), groups, types)
    sweep = probe_sweep(None, real, cached={"site": X.float()})
    assert sweep.test_score[0] > 0.88 and abs(sweep.control_score[0] - 0.5) < 0.15 and sweep.selectivity[0] > 0.3
    rand = (torch.rand(800, generator=torch.Generator().manual_seed(5)) < 0.5).double()
    noise = ProbeDataset("random", [""] * 800, rand.tolist(), groups, types)
    sweep = probe_sweep(None, noise, cached={"site": X.float()})
    assert abs(sweep.test_score[0] - 0.5) < 0.1 and abs(sweep.selectivity[0]) < 0.12
    # a label that is a function of the type is memorised by the control probe too: the control task
    # of "type-determined" labels scores far above chance when types repeat
    c = control_labels(types, y.tolist(), seed=0)
    assert all(c[i] == c[i + 50] for i in range(700))


def test_group_split_never_mixes_groups():
    groups = [f"w{i % 13}" for i in range(130)]
    train, test = group_split(groups, 0.3, seed=2)
    assert not {groups[i] for i in train.tolist()} & {groups[i] for i in test.tolist()}
    assert len(train) + len(test) == 130 and 30 <= len(test) <= 50
    with pytest.raises(ValueError, match="at least 2 groups"):
        group_split(["a"] * 5)


def test_probe_errors():
    with pytest.raises(ValueError, match="kind='svm'; valid: logistic, ridge, mass-mean"):
        LinearProbe("svm")
    with pytest.raises(ValueError, match="need labels 0 and 1"):
        LinearProbe().fit(torch.randn(4, 2), [0, 1, 2, 1])
    with pytest.raises(ValueError, match="NaN"):
        LinearProbe().fit(torch.tensor([[float("nan"), 0.0], [1.0, 1.0]]), [0, 1])
    with pytest.raises(RuntimeError, match="not fitted"):
        LinearProbe().predict(torch.randn(2, 2))
    p = LinearProbe().fit(torch.randn(10, 3), [0, 1] * 5)
    with pytest.raises(ValueError, match="X has 4 features; the probe was fitted on 3"):
        p.predict(torch.randn(2, 4))


def test_sweep_over_a_models_sites_and_embedded_datasets():
    model = tiny("llama")
    data = sentiment_dataset()
    assert len(data.prompts) == 320 and data.prompts[0] == "The movie was wonderful."
    assert len(truth_dataset().prompts) == 96
    small = ProbeDataset("s", data.prompts[::8], data.labels[::8], data.groups[::8], position=-2)
    sweep = probe_sweep(model, small, "blocks.*.resid_post", progress=False)
    assert sweep.sites == [f"blocks.{i}.resid_post" for i in range(model.cfg.n_layers)]
    assert sweep.directions.shape == (model.cfg.n_layers, model.cfg.d_model)
    assert torch.allclose(sweep.directions.norm(dim=1), torch.ones(model.cfg.n_layers))
    assert "selectivity" in sweep.summary() and sweep.png_bytes()[:4] == b"\x89PNG"
    # a probe's direction steers and can be removed like any vector
    cv = sweep.control_vector("blocks.1.resid_post", scale=10.0)
    plain = model.run(["The movie was"]).logits[0, -1]
    steered = model.run(["The movie was"], interventions=cv.interventions(1.0)).logits[0, -1]
    assert (plain - steered).abs().max() > 1e-3
    from mechscope.concepts.steering import directional_ablation

    run = model.run(["The movie was"], cache="blocks.1.resid_post", interventions=directional_ablation(cv.vectors[0]))
    assert float((run.cache["blocks.1.resid_post"] @ sweep.directions[1]).abs().max()) < 1e-4
    with pytest.raises(ValueError, match="no probe at 'embed'"):
        sweep.control_vector("embed")
    with pytest.raises(ValueError, match="unknown dataset 'pos'; embedded: sentiment, truth, function-words"):
        probe_sweep(model, "pos")


def test_function_word_dataset_from_the_corpus():
    from mechscope.concepts.datasets import FUNCTION_WORDS, function_word_dataset

    model = tiny("llama")  # a tiny BPE: few whole-word tokens, but the construction is the same
    data = function_word_dataset(model.tokenizer, n_blocks=40, per_block=3, length=20)
    assert 0 < len(data.prompts) <= 120 and all(isinstance(p, list) for p in data.prompts)
    for ids, label, word, group in zip(data.prompts, data.labels, data.types, data.groups):
        assert model.tokenizer.decode([ids[-1]]).strip().lower() == word  # probed at the word itself
        assert label == (1.0 if word in FUNCTION_WORDS else 0.0) and group.startswith("block")
