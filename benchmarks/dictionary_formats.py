"""mechscope's readers and writers of SAELens and sparsify files against those libraries' own code
(run in the SAE benchmark environment, where both install: `make .venv-bench-sae/.installed`, then
`.venv-bench-sae/bin/python benchmarks/dictionary_formats.py`). Gemma Scope's params.npz is read and
compared with SAELens's JumpReLU SAE holding the same arrays.

For every architecture in SAELens's class registry that mechscope reads (standard, gated, topk incl.
rescale_acts_by_decoder_norm, jumprelu, the four transcoders; with and without apply_b_dec_to_input;
constant_norm_rescale and layer_norm inputs) with random weights: files written by SAELens's
`save_model` are read by `mechscope.sae.formats.load_dictionary`, and mechscope's encode/decode/forward
are compared with SAELens's on the same rows; files written by `save_saelens` are opened by SAELens's
`SAE.load_from_disk` and compared the same way; the same for TopK SAEs through sparsify's
`save_to_disk` / `load_from_disk` / `encode` / `decode`. Dictionaries on TransformerLens's
`ln2.hook_normalized` (no gain) are run by SAELens on TransformerLens's activations of a tiny llama and
gemma, and by mechscope on its own `mlp.in` (gain folded in at load). Writes a section to RESULTS.md;
exits non-zero when any relative difference exceeds 1e-5.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, transformer_lens_model, write_section  # noqa: E402

from mechscope.sae import SAEConfig, SparseCoder  # noqa: E402
from mechscope.sae.formats import load_dictionary, save_saelens, save_sparsify  # noqa: E402

TOL = 1e-5


def sparse_of(f: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, values) of the k largest latents per row (sparsify's decode takes them)."""
    v, i = f.topk(k, dim=-1)
    return i, v


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def transformer_lens_rows(n: int) -> list[tuple]:
    """A dictionary on TransformerLens's ``blocks.1.ln2.hook_normalized`` (SAELens's own SAE and
    transcoder) loaded by mechscope with the model given reads mechscope's ``mlp.in`` instead: its
    latents on the same tokens equal SAELens's on TransformerLens's activations."""
    from sae_lens.registry import SAE_CLASS_REGISTRY

    from mechscope.models.tiny import tiny

    rows = []
    for family in ("llama", "gemma"):
        model = tiny(family)
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():  # gains far from 1 (gemma's stored weight is gain − 1)
            for name, p in model.hf.named_parameters():
                if "post_attention_layernorm" in name:
                    p.copy_(torch.rand(p.shape, generator=g) + (0.5 if family == "llama" else -0.5))
        tl = transformer_lens_model(model)
        tokens = torch.randint(3, 300, (4, 32), generator=g)
        logits_tl, cache = tl.run_with_cache(tokens, names_filter="blocks.1.ln2.hook_normalized")
        ours = model.run(tokens, cache="blocks.1.mlp.in")
        x_tl = cache["blocks.1.ln2.hook_normalized"].reshape(-1, model.cfg.d_model)
        x_ours = ours.cache["blocks.1.mlp.in"].reshape(-1, model.cfg.d_model)
        rows.append((f"TransformerLens {family} logits", "no processing vs mechscope (sanity)",
                     0.0, 0.0, rel(ours.logits, logits_tl)))
        for arch, extra in (("standard", {}), ("jumprelu_skip_transcoder", {"d_out": model.cfg.d_model})):
            cls, cfg_cls = SAE_CLASS_REGISTRY[arch]
            meta = {"hook_name": "blocks.1.ln2.hook_normalized", "model_name": model.name}
            if extra:
                meta["hook_name_out"] = "blocks.1.hook_mlp_out"
            peer = cls(cfg_cls(d_in=model.cfg.d_model, d_sae=256, apply_b_dec_to_input=not extra, **extra))
            with torch.no_grad():
                for p in peer.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
                if hasattr(peer, "threshold"):
                    peer.threshold.copy_(torch.rand(256, generator=g) * 0.3)
            for k, v in meta.items():
                peer.cfg.metadata[k] = v
            folder = tempfile.mkdtemp()
            peer.save_model(folder)
            sae = load_dictionary(folder, model=model)
            gain = model.hf.model.layers[1].post_attention_layernorm.weight.detach() + (family == "gemma")
            with torch.no_grad():
                want = peer(x_tl) * (1 if extra else gain)  # an SAE's reconstruction lives in mlp.in's units
                rows.append((f"{arch} on ln2.hook_normalized ({family})", "SAELens on TransformerLens → mechscope on mlp.in",
                             rel(sae.encode(x_ours), peer.encode(x_tl)), 0.0, rel(sae(x_ours), want)))
    return rows


def main() -> None:
    import sae_lens
    from sae_lens import SAE
    from sae_lens.saes import JumpReLUSAE, JumpReLUSAEConfig

    torch.manual_seed(0)
    torch.set_num_threads(1)
    d_in, d_sae, n = 64, 512, 256
    x = torch.randn(n, d_in) * 3
    rows = []
    from sae_lens.registry import SAE_CLASS_REGISTRY

    d_out = d_in + 16  # transcoders write a wider site
    peers = [(arch, {}) for arch in ("standard", "gated", "jumprelu")] + [
        ("topk", {"k": 16}), ("topk", {"k": 16, "rescale_acts_by_decoder_norm": True}),
        ("standard", {"normalize_activations": "constant_norm_rescale"}), ("topk", {"k": 16, "normalize_activations": "layer_norm"})]
    cases = [(arch, {**extra, "apply_b_dec_to_input": b}) for arch, extra in peers for b in (True, False)]
    cases += [(arch, {"d_out": d_out, "apply_b_dec_to_input": False}) for arch in
              ("transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder")]
    cases += [("jumprelu_transcoder", {"d_out": d_out, "apply_b_dec_to_input": False, "normalize_activations": "layer_norm"})]
    for name, extra in cases:
        cls, cfg_cls = SAE_CLASS_REGISTRY[name]
        peer = cls(cfg_cls(d_in=d_in, d_sae=d_sae, **extra))
        with torch.no_grad():
            for p in peer.parameters():
                p.copy_(torch.randn_like(p) * 0.2)
            if hasattr(peer, "threshold"):
                peer.threshold.copy_(torch.rand(d_sae) * 0.5)
            if extra.get("rescale_acts_by_decoder_norm"):
                peer.W_dec.mul_(torch.rand(d_sae, 1) * 3 + 0.2)
        folder = tempfile.mkdtemp()
        peer.save_model(folder)
        ours = load_dictionary(folder)
        with torch.no_grad():
            f_peer, f_ours = peer.encode(x), ours.encode(x)
            y_peer = peer(x)
            dec_peer = peer(x) - (x @ peer.W_skip.T if "skip" in name else 0)  # decode(f), with the row statistics of x
            dec_ours = ours.decode(f_peer, x) - (x @ ours.W_skip if "skip" in name else 0)
            diffs = [rel(f_ours, f_peer), rel(dec_ours, dec_peer), rel(ours(x), y_peer)]
        label = ", ".join([name] + [f"{k}={v}" for k, v in extra.items() if k not in ("d_out",)])
        rows.append((label, "SAELens save_model → mechscope", *diffs))
    mine = [("relu", {}), ("topk", {"k": 16}), ("jumprelu", {}), ("batchtopk", {"k": 16}), ("gated", {}),
            ("relu", {"input_norm": "layer_norm"}), ("topk", {"k": 16, "input_norm": "rescale"}),
            ("relu", {"d_out": d_out, "site": "blocks.1.mlp.in", "target_site": "blocks.1.mlp.out"}),
            ("jumprelu", {"d_out": d_out, "skip": True, "site": "blocks.1.mlp.in", "target_site": "blocks.1.mlp.out"})]
    for arch, kw in mine:
        sae = SparseCoder(SAEConfig(arch, d_in, d_sae, **kw))
        with torch.no_grad():
            for p in sae.parameters():
                p.add_(torch.randn_like(p) * 0.2)
            sae.scale_in.fill_(0.37)
            sae.scale_out.fill_(0.37 if not sae.cfg.transcoder else 1.7)
            sae.b_in.normal_()
            # batchtopk's one θ: put it midway in a gap of the pre-activations near 0.3, so that no latent
            # sits within float rounding of it (summation order may differ between the libraries)
            pre = sae.preacts(x).flatten().sort().values
            i = int(torch.searchsorted(pre, torch.tensor(0.3)))
            j = i - 50 + int((pre[i - 49:i + 51] - pre[i - 50:i + 50]).argmax())
            sae.batch_threshold.fill_(float(pre[j] + pre[j + 1]) / 2)
        folder = save_saelens(sae, tempfile.mkdtemp())
        peer = SAE.load_from_disk(folder)
        with torch.no_grad():
            f_peer, f_ours = peer.encode(x), sae.encode(x)
            skip_ours = (x * sae.scale_in) @ sae.W_skip / sae.scale_out if sae.W_skip is not None else 0
            dec_peer = peer(x) - (x @ peer.W_skip.T if sae.W_skip is not None else 0)
            diffs = [rel(f_peer, f_ours), rel(dec_peer, sae.decode(f_ours, x) - skip_ours), rel(peer(x), sae(x))]
        label = ", ".join([arch] + [f"{k}={v}" for k, v in kw.items() if k not in ("d_out", "site", "target_site")]
                          + (["transcoder"] if sae.cfg.transcoder else []))
        rows.append((label, f"mechscope save_saelens → SAELens load_from_disk ({type(peer).__name__})", *diffs))
    # Gemma Scope: params.npz as its releases hold it, into SAELens's own JumpReLU SAE (its Gemma Scope
    # loader maps the same keys into a JumpReLU SAE that does not subtract b_dec from its input)
    import numpy as np

    g = np.random.default_rng(0)
    arrays = {"W_enc": g.normal(size=(d_in, d_sae)) * 0.2, "W_dec": g.normal(size=(d_sae, d_in)) * 0.2,
              "b_enc": g.normal(size=d_sae) * 0.2, "b_dec": g.normal(size=d_in) * 0.2, "threshold": g.random(d_sae) * 0.5}
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    folder = Path(tempfile.mkdtemp()) / "layer_3" / "width_512" / "average_l0_20"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **arrays)
    peer = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=False))
    peer.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    ours = load_dictionary(folder, site="blocks.3.resid_post")
    with torch.no_grad():
        f_peer = peer.encode(x)
        rows.append(("jumprelu (Gemma Scope params.npz)", "params.npz → mechscope vs SAELens JumpReLU", rel(ours.encode(x), f_peer),
                     rel(ours.decode(f_peer), peer.decode(f_peer)), rel(ours(x), peer(x))))

    import sparsify
    from sparsify import SparseCoder as PeerCoder, SparseCoderConfig

    def sparsify_dense(peer, x):  # (latents [n, width], reconstruction) through sparsify's own encode/decode
        acts, idx, _ = peer.encode(x)
        return torch.zeros(len(x), peer.num_latents).scatter(-1, idx, acts), peer.decode(acts, idx)

    peer = PeerCoder(d_in, SparseCoderConfig(num_latents=d_sae, k=16))
    with torch.no_grad():
        for p in peer.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    folder = Path(tempfile.mkdtemp()) / "layers.3"
    peer.save_to_disk(folder)
    ours = load_dictionary(folder)
    with torch.no_grad():
        f_peer, y_peer = sparsify_dense(peer, x)
        rows.append(("topk (sparsify)", "sparsify save_to_disk → mechscope", rel(ours.encode(x), f_peer),
                     rel(ours.decode(f_peer), y_peer), rel(ours(x), y_peer)))
    peer = PeerCoder(d_in, SparseCoderConfig(num_latents=d_sae, k=16, transcode=True, skip_connection=True))
    with torch.no_grad():
        for p in peer.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    folder = Path(tempfile.mkdtemp()) / "layers.3.mlp"
    peer.save_to_disk(folder)
    ours = load_dictionary(folder)
    with torch.no_grad():
        f_peer, y_peer = sparsify_dense(peer, x)
        y_peer = y_peer + x @ peer.W_skip.mT  # sparsify's forward adds the skip after decode
        rows.append(("topk skip transcoder (sparsify)", "sparsify save_to_disk → mechscope", rel(ours.encode(x), f_peer),
                     rel(ours.decode(f_peer, x), y_peer), rel(ours(x), y_peer)))
        sae = SparseCoder(SAEConfig("topk", d_in, d_sae, k=16, skip=True, site="blocks.3.mlp.in",
                                    target_site="blocks.3.mlp.out"))
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        sae.scale_in.fill_(0.37)
        sae.scale_out.fill_(1.3)
        sae.b_in.normal_()
        peer = PeerCoder.load_from_disk(save_sparsify(sae, Path(tempfile.mkdtemp()) / "layers.3.mlp"))
        f_peer, y_peer = sparsify_dense(peer, x)
        y_peer = y_peer + x @ peer.W_skip.mT
        rows.append(("topk skip transcoder", "mechscope save_sparsify → sparsify load_from_disk", rel(f_peer, sae.encode(x)),
                     rel(y_peer, sae.decode(sae.encode(x), x)), rel(y_peer, sae(x))))
    sae = SparseCoder(SAEConfig("topk", d_in, d_sae, k=16))
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        sae.scale_in.fill_(0.37)
        sae.scale_out.fill_(0.37)
    peer = PeerCoder.load_from_disk(save_sparsify(sae, tempfile.mkdtemp()))
    with torch.no_grad():
        f_peer, y_peer = sparsify_dense(peer, x)
        rows.append(("topk", "mechscope save_sparsify → sparsify load_from_disk", rel(f_peer, sae.encode(x)),
                     rel(peer.decode(*reversed(sparse_of(sae.encode(x), 16))), sae.decode(sae.encode(x))),
                     rel(y_peer, sae(x))))
    rows += transformer_lens_rows(x.shape[0])
    worst = max(max(r[2:]) for r in rows)
    table = ["| dictionary | direction | encode | decode | forward |", "|---|---|---:|---:|---:|"]
    table += [f"| {a} | {b} | {c:.1e} | {d:.1e} | {e:.1e} |" for a, b, c, d, e in rows]
    md = "\n".join([
        "## Dictionaries: SAELens and sparsify files, read and written (cpu)", "",
        f"`.venv-bench-sae/bin/python benchmarks/dictionary_formats.py`: sae-lens {sae_lens.__version__}, "
        f"eai-sparsify {getattr(sparsify, '__version__', '1.3.3')}, d_in {d_in}, "
        f"{d_sae} latents, {n} rows; largest |difference| / largest |value| of mechscope's against the peer library's own "
        f"outputs (tolerance {TOL}). {machine(1, 'cpu')}.", "", *table, "",
        f"**{'all within tolerance' if worst <= TOL else 'FAILED'}** (worst {worst:.1e}).",
    ])
    write_section("dictionary_formats", md)
    print(md)
    if worst > TOL:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
