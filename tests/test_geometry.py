"""Weight tying: the direct path of a tied model is a symmetric form that favours the input token."""

import pytest

from mechscope.concepts.geometry import weight_tying
from mechscope.models.tiny import tiny


def test_tied_direct_path_is_symmetric_and_predicts_itself():
    tied = weight_tying(tiny("qwen2"), tokens=(5, 9), k=4)
    assert tied.tied and tied.symmetry > 0.999
    assert tied.self_top1 > 0.9  # random tied embeddings: E_i·E_i dominates
    untied = weight_tying(tiny("llama"), tokens=(5,), k=4)
    assert not untied.tied and abs(untied.symmetry) < 0.1 and untied.self_top1 < 0.1
    assert len(tied.neighbours) == 2 and all(len(n["embedding"]) == 4 for n in tied.neighbours.values())
    assert "tied embeddings" in tied.summary()


def test_gpt2_direct_path_uses_its_layernorm_and_multi_token_is_an_error():
    r = weight_tying(tiny("gpt2"), tokens=(7,), sample=100)
    assert r.sampled == 100 and r.tied
    with pytest.raises(ValueError, match="single-token"):
        weight_tying(tiny("gpt2"), tokens=("The cat sat",))


@pytest.mark.slow
def test_smollm2_weight_tying(smollm):
    """Measured: symmetry 1.000, the direct path predicts the input token for 14% of tokens (median
    rank 71 of 49,152); ' king' sits next to ' King', ' kings', ' queen'; ' Paris' next to ' London'."""
    r = weight_tying(smollm, tokens=(" king", " Paris"))
    assert r.tied and r.symmetry > 0.999
    assert r.self_top1 > 0.05 and r.self_rank_median < 500
    near = [t for t, _ in r.neighbours[" king"]["embedding"]]
    assert " queen" in near and " King" in near
    assert " London" in [t for t, _ in r.neighbours[" Paris"]["embedding"]]
