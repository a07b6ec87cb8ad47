"""Models split across devices: alternate blocks offloaded to disk (accelerate's ``device_map``) give
what the whole model in memory gives — logits, caches, interventions, gradients and the edge engine
(which reads projection weights inside hooks, where an offloaded module's weights are on meta)."""

from __future__ import annotations

import pytest
import torch

import mechscope as ms
from mechscope.circuits.edges import edge_run, sender_outputs
from mechscope.circuits.graph import Graph
from mechscope.models.tiny import tiny

PROMPTS = ["The cat sat on the mat", "A dog ran"]


def offloaded(model, tmp_path):
    """``model`` saved and loaded again with its odd blocks on disk, the rest on the CPU."""
    model.hf.save_pretrained(tmp_path / "model")
    model.tokenizer.save_pretrained(tmp_path / "model")
    blocks = model.adapter.blocks
    parent, leaf = blocks.rsplit(".", 1)
    device_map = {f"{blocks}.{l}": "disk" if l % 2 else "cpu" for l in range(model.cfg.n_layers)}
    device_map |= {f"{parent}.{n}": "cpu" for n, _ in model.hf.get_submodule(parent).named_children() if n != leaf}
    device_map |= {n: "cpu" for n, _ in model.hf.named_children() if n != parent.split(".")[0]}
    return ms.load(str(tmp_path / "model"), device_map=device_map, offload_folder=str(tmp_path / "offload"))


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_offloaded_blocks_give_the_same_results(family, tmp_path):
    whole = tiny(family)
    split = offloaded(whole, tmp_path)
    assert any(p.device.type == "meta" for p in split.hf.parameters())  # really offloaded
    assert split.fingerprint == whole.fingerprint  # provenance: the same weights, wherever they live
    sites = ["blocks.*.resid_post", "blocks.1.attn.pattern", "blocks.1.mlp.post", "blocks.0.attn.z"]
    a, b = whole.run(PROMPTS, cache=sites), split.run(PROMPTS, cache=sites)
    assert torch.equal(a.logits, b.logits) and all(torch.equal(a.cache[k], b.cache[k]) for k in a.cache)
    edits = [ms.Ablate("blocks.1.attn.z", heads=[0]), ms.Add("blocks.0.resid_post", torch.ones(whole.cfg.d_model)),
             ms.Patch("blocks.2.mlp.out", source=PROMPTS[::-1], positions=[-1])]
    assert torch.equal(whole.run(PROMPTS, interventions=edits).logits, split.run(PROMPTS, interventions=edits).logits)

    def metric(run):
        return run.logits[:, -1].logsumexp(-1).sum()

    ga = whole.run(PROMPTS, grads=["blocks.1.resid_post"], metric=metric).grads["blocks.1.resid_post"]
    gb = split.run(PROMPTS, grads=["blocks.1.resid_post"], metric=metric).grads["blocks.1.resid_post"]
    assert torch.allclose(ga, gb, atol=1e-6)
    # the edge engine: every sender's output, and a run with the embedding's edges into the logits cut
    g = Graph.of(whole)
    ids = [whole.tokenize(p)[0][0].tolist() for p in PROMPTS[:1]]
    assert torch.equal(sender_outputs(whole, g, ids), sender_outputs(split, g, ids))
    keep = g.allowed.float().clone()
    keep[0] = 0.0  # nothing reads the embedding directly
    ablated = torch.zeros(1, len(ids[0]), len(g.senders), whole.cfg.d_model)
    # the q/k/v paths recompute projections with weights loaded in the hook: float rounding may differ
    assert torch.allclose(edge_run(whole, g, ids, keep=keep, ablated=ablated).logits,
                          edge_run(split, g, ids, keep=keep, ablated=ablated).logits, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_weight_readers_and_logit_attribution_work_offloaded(family, tmp_path):
    """Weights read outside a forward (head and neuron weights, embeddings, norms) are real under
    ``loaded`` — direct logit attribution and head circuits equal the model in memory's."""
    from mechscope.lenses.logit import direct_logit_attribution
    from mechscope.models.weights import attention_weights, embedding_weights, mlp_out_weights, norm_affine

    whole = tiny(family)
    split = offloaded(whole, tmp_path)
    for layer in range(whole.cfg.n_layers):
        assert all(torch.equal(a, b) for a, b in zip(attention_weights(whole, layer), attention_weights(split, layer)))
        assert torch.equal(mlp_out_weights(whole, layer), mlp_out_weights(split, layer))
        assert all(torch.equal(a, b) for a, b in zip(norm_affine(whole, layer)[:2], norm_affine(split, layer)[:2]))
    assert all(torch.equal(a, b) for a, b in zip(embedding_weights(whole), embedding_weights(split)))
    target = int(whole.run(PROMPTS[0]).logits[0, -1].argmax())
    a = direct_logit_attribution(whole, PROMPTS[0], target)
    b = direct_logit_attribution(split, PROMPTS[0], target)
    assert torch.allclose(a.values, b.values, atol=1e-6)


def test_attribution_graphs_splices_and_the_fingerprint_work_offloaded(tmp_path, monkeypatch):
    """An attribution graph through transcoders and a transcoder splice on a model with every other
    block on disk equal the model in memory's; its fingerprint reads one offloaded module at a time."""
    import accelerate.utils

    from mechscope.tracing import attribution_graph
    from mechscope.sae import splice
    from test_attribution_graph import random_transcoders

    whole = tiny("llama")
    split = offloaded(whole, tmp_path)
    coders = random_transcoders(whole)
    a = attribution_graph(whole, coders, PROMPTS[0], batch_size=8, progress=False)
    b = attribution_graph(split, coders, PROMPTS[0], batch_size=8, progress=False)
    assert torch.equal(a.edge_index, b.edge_index) and torch.allclose(a.edge_weight, b.edge_weight, atol=1e-5)
    spliced = [iv for c in coders[1:2] for iv in splice(c)]
    assert torch.allclose(whole.run(PROMPTS, interventions=spliced).logits,
                          split.run(PROMPTS, interventions=spliced).logits, atol=1e-6)
    active, most = [0], [0]
    align = accelerate.utils.align_module_device

    def counted(module, *args, **kwargs):
        class Held:
            def __enter__(self):
                active[0] += 1
                most[0] = max(most[0], active[0])
                self.inner = align(module, *args, **kwargs)
                return self.inner.__enter__()

            def __exit__(self, *exc):
                active[0] -= 1
                return self.inner.__exit__(*exc)
        return Held()

    monkeypatch.setattr(accelerate.utils, "align_module_device", counted)
    again = ms.Model(split.hf, split.tokenizer)  # a fresh wrapper: its fingerprint is computed anew
    assert again.fingerprint == whole.fingerprint and most[0] == 1
