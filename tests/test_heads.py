"""Head detectors score hand-built heads ~1; the induction evidence compares with random heads."""

import pytest
import torch

import mechscope as ms
from mechscope.heads import HeadScores, detect_heads, pattern_scores, repeated_random_tokens

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
    assert result.top_heads == ["L2H3"] and result.top("induction", 1)[0][0] == "L2H3"
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
