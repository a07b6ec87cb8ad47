"""Head detectors score hand-built heads ~1; the induction evidence compares with random heads."""

import pytest
import torch

import mechscope as ms
from mechscope.components.heads import HeadScores, detect_heads, pattern_scores, repeated_random_tokens

L = 12


def exact_pattern(n: int, offset: int) -> torch.Tensor:
    """[n, n] attention that puts all weight on i − offset (on position 0 where that is < 0)."""
    p = torch.zeros(n, n)
    for i in range(n):
        p[i, i - offset if i - offset >= 0 else 0] = 1.0
    return p


def built(head_pattern):
    def fn(selected):  # selected: [batch, q, 1 head, k] (canonical order)
        return head_pattern.to(selected.dtype)[None, :, None, :].expand_as(selected).clone()
    return fn


def test_detectors_find_hand_built_heads(llama):
    n = 2 * L
    heads = [
        ms.Replace("blocks.1.attn.pattern", built(exact_pattern(n, 1)), heads=[0]),  # previous-token head
        ms.Replace("blocks.2.attn.pattern", built(exact_pattern(n, L - 1)), heads=[3]),  # induction head
        ms.Replace("blocks.0.attn.pattern", built(exact_pattern(n, L)), heads=[2]),  # duplicate-token head
    ]
    result = detect_heads(llama, batch=4, length=L, k=1, seeds=3, interventions=heads)
    s = {kind: torch.tensor(v) for kind, v in result.scores.items()}
    assert s["previous"][1, 0] == pytest.approx(1.0) and s["induction"][2, 3] == pytest.approx(1.0)
    assert s["duplicate"][0, 2] == pytest.approx(1.0)
    for kind, (layer, head) in {"previous": (1, 0), "induction": (2, 3), "duplicate": (0, 2)}.items():
        others = s[kind].clone()
        others[layer, head] = 0
        assert others.max() < 0.6, (kind, others.max())
    assert result.top_heads == ["L2H3"] and result.top(1, kind="induction")[0][0] == "L2H3"
    with pytest.raises(TypeError, match="top"):  # one argument order: top(k, kind=...)
        result.top("induction", 1)
    assert "random heads" in result.summary() and result.png_bytes()[:4] == b"\x89PNG"


def test_scores_from_patterns_directly():
    n = 2 * L
    p = torch.stack([exact_pattern(n, 1), exact_pattern(n, L - 1), torch.full((n, n), 1 / n)])[None]  # [1, 3, n, n]
    s = pattern_scores({0: p}, L)
    assert s["previous"][0].tolist() == pytest.approx([1.0, 1 / (n - 1), 1 / n])  # (1, 0) is on both diagonals
    assert s["induction"][0].tolist() == pytest.approx([0.0, 1.0, 1 / n])


def test_repeated_random_tokens(llama):
    t = repeated_random_tokens(llama, 3, 10, seed=1)
    assert t.shape == (3, 20) and torch.equal(t[:, :10], t[:, 10:]) and int(t.max()) < llama.cfg.vocab
    assert torch.equal(t, repeated_random_tokens(llama, 3, 10, seed=1))
    assert isinstance(detect_heads(llama, batch=2, length=8, k=2, seeds=2), HeadScores)


def test_weights_reproduce_the_values_every_family(model):
    from mechscope.models.weights import attention_weights

    wq, wk, wv, wo = attention_weights(model, 1)
    assert wq.shape == (model.cfg.n_heads, model.cfg.d_model, model.cfg.d_head)
    assert wo.shape == (model.cfg.n_heads, model.cfg.d_head, model.cfg.d_model)
    r = model.run("The cat sat on the mat", cache=["blocks.1.resid_pre", "blocks.1.attn.v"])
    block = model.hf.get_submodule(f"{model.adapter.blocks}.1")
    a = model.adapter  # the norm the projections read (none in OLMo 2/3)
    norm = block.get_submodule(a.attn_norm) if a.attn_norm else (lambda x: x)
    attn = model.hf.get_submodule(f"{model.adapter.blocks}.1.{model.adapter.attn}")
    with torch.no_grad():
        for b in [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "c_attn", "query_key_value")]:
            if b is not None and b.bias is not None:
                b.bias.zero_()  # the weight matrices leave biases out
        r = model.run("The cat sat on the mat", cache=["blocks.1.resid_pre", "blocks.1.attn.v"])
        v = torch.einsum("bpd,hde->bphe", norm(r.cache["blocks.1.resid_pre"]), wv)
    torch.testing.assert_close(v, r.cache["blocks.1.attn.v"], atol=1e-5, rtol=1e-4)


def test_composition_and_copying_on_hand_set_weights(llama):
    from mechscope.components.heads import head_circuits
    from mechscope.models.weights import attention_weights, embedding_weights

    torch.manual_seed(0)
    u = torch.linalg.qr(torch.randn(64, 16))[0]  # an orthonormal 16-d subspace of the residual
    with torch.no_grad():
        l0, l1 = llama.hf.model.layers[0].self_attn, llama.hf.model.layers[1].self_attn
        l0.o_proj.weight[:, 16:32] = u  # L0H1 writes into u ...
        l1.q_proj.weight[0:16] = u.T  # ... and L1H0's queries read from u: Q-composition
        l0.v_proj.weight[0:16] = u.T  # kv head 0 (heads 0, 1) reads u, so L0H1's OV = u uᵀ (PSD) ...
        llama.hf.lm_head.weight.copy_(llama.hf.model.embed_tokens.weight)  # ... and with W_U = W_Eᵀ it copies
    r = head_circuits(llama)
    q = torch.tensor(r.composition["q"])
    # a rank-16 projection caps the normalised score at 1/4; random pairs sit near 0.13
    assert r.top_pairs("q", 1)[0][:2] == ("L0H1", "L1H0") and q[1, 4] > 1.8 * q[q > 0].median()
    assert float(r.copying[0, 1]) == pytest.approx(1.0, abs=1e-4)
    # against the definitions computed on the full matrices
    q0, k0, v0, o0 = attention_weights(llama, 0)
    q1, k1, v1, o1 = attention_weights(llama, 1)
    ov, qk = v0[0] @ o0[1], q1[2] @ k1[1].T
    assert r.composition["q"][1][6] == pytest.approx(float((ov @ qk).norm() / (ov.norm() * qk.norm())), rel=1e-4)
    assert r.composition["k"][1][6] == pytest.approx(float((ov @ qk.T).norm() / (ov.norm() * qk.norm())), rel=1e-4)
    w_e, w_u = embedding_weights(llama)
    eig = torch.linalg.eigvals((w_e @ (v0[1] @ o0[3]) @ w_u).double())
    assert float(r.copying[0, 3]) == pytest.approx(float(eig.real.sum() / eig.abs().sum()), abs=1e-4)
    assert "k-composition" in r.summary()


def test_a_long_prompts_attention_page_holds_each_querys_strongest_keys():
    """A 1,024-token pattern made a 61 MB page: beyond PAGE_WEIGHTS weights the page holds each query's
    strongest keys (and says so); short prompts keep the dense pattern. The browser test draws both."""
    import json
    import re

    from mechscope.components.heads import PAGE_WEIGHTS, AttentionPatterns
    from mechscope.results import Provenance

    g = torch.Generator().manual_seed(0)
    n = 1024
    pattern = torch.rand(9, n, n, generator=g).tril().softmax(-1)
    tokens = [f"t{i}" for i in range(n)]
    result = AttentionPatterns(provenance=Provenance(model="m", fingerprint="f" * 32), prompt="".join(tokens),
                               tokens=tokens, layer=3, pattern=pattern)
    page = result.html()
    assert len(page) < 4_000_000, len(page)
    data = json.loads(re.search(r'class="attn-data">(.*?)</script>', page, re.S).group(1))
    top = data["top"]
    assert "pattern" not in data and 4 <= top and 9 * n * top <= PAGE_WEIGHTS
    assert f"each query's {top} strongest keys of 1024" in page
    q = 700
    assert data["keys"][2][q] == pattern[2, q].topk(top).indices.tolist()
    short = AttentionPatterns(provenance=result.provenance, prompt="ab", tokens=["a", "b"], layer=0,
                              pattern=torch.tensor([[[1.0, 0.0], [0.25, 0.75]]]))
    data = json.loads(re.search(r'class="attn-data">(.*?)</script>', short.html(), re.S).group(1))
    assert data["pattern"] == [[[1.0, 0.0], [0.25, 0.75]]] and "top" not in data
