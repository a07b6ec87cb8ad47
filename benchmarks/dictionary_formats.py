"""mechscope's readers and writers of SAELens and sparsify files against those libraries' own code
(run in the SAE benchmark environment, where both install: `make .venv-bench-sae/.installed`, then
`.venv-bench-sae/bin/python benchmarks/dictionary_formats.py`). Gemma Scope's params.npz is read and
compared with SAELens's JumpReLU SAE holding the same arrays.

For standard, topk and jumprelu SAEs (with and without apply_b_dec_to_input) with random weights:
files written by SAELens's `save_model` are read by `mechscope.sae.formats.load_dictionary`, and
mechscope's encode/decode/forward are compared with SAELens's on the same rows; files written by
`save_saelens` are opened by SAELens's `SAE.load_from_disk` and compared the same way; the same for
TopK SAEs through sparsify's `save_to_disk` / `load_from_disk` / `encode` / `decode`. Writes a section
to RESULTS.md; exits non-zero when any relative difference exceeds 1e-5.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

from mechscope.sae import SAEConfig, SparseCoder  # noqa: E402
from mechscope.sae.formats import load_dictionary, save_saelens, save_sparsify  # noqa: E402

TOL = 1e-5


def sparse_of(f: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, values) of the k largest latents per row (sparsify's decode takes them)."""
    v, i = f.topk(k, dim=-1)
    return i, v


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def main() -> None:
    import sae_lens
    from sae_lens import SAE
    from sae_lens.saes import (JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE,
                               TopKSAEConfig)

    torch.manual_seed(0)
    torch.set_num_threads(1)
    d_in, d_sae, n = 64, 512, 256
    x = torch.randn(n, d_in) * 3
    rows = []
    peers = [("standard", StandardSAE, StandardSAEConfig, {}), ("topk", TopKSAE, TopKSAEConfig, {"k": 16}),
             ("jumprelu", JumpReLUSAE, JumpReLUSAEConfig, {})]
    for name, cls, cfg_cls, extra in peers:
        for b_dec_in in (True, False):
            peer = cls(cfg_cls(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=b_dec_in, **extra))
            with torch.no_grad():
                for p in peer.parameters():
                    p.copy_(torch.randn_like(p) * 0.2)
                if name == "jumprelu":
                    peer.threshold.copy_(torch.rand(d_sae) * 0.5)
            folder = tempfile.mkdtemp()
            peer.save_model(folder)
            ours = load_dictionary(folder)
            with torch.no_grad():
                f_peer, f_ours = peer.encode(x), ours.encode(x)
                diffs = [rel(f_ours, f_peer), rel(ours.decode(f_peer), peer.decode(f_peer)), rel(ours(x), peer(x))]
            rows.append((f"{name}, apply_b_dec_to_input={b_dec_in}", "SAELens save_model → mechscope", *diffs))
    for arch, kw in (("relu", {}), ("topk", {"k": 16}), ("jumprelu", {}), ("batchtopk", {"k": 16})):
        sae = SparseCoder(SAEConfig(arch, d_in, d_sae, **kw))
        with torch.no_grad():
            for p in sae.parameters():
                p.add_(torch.randn_like(p) * 0.2)
            sae.scale_in.fill_(0.37)
            sae.scale_out.fill_(0.37)
            sae.batch_threshold.fill_(0.3)
        folder = save_saelens(sae, tempfile.mkdtemp())
        peer = SAE.load_from_disk(folder)
        with torch.no_grad():
            f_peer, f_ours = peer.encode(x), sae.encode(x)
            diffs = [rel(f_peer, f_ours), rel(peer.decode(f_ours), sae.decode(f_ours)), rel(peer(x), sae(x))]
        rows.append((f"{arch}", "mechscope save_saelens → SAELens load_from_disk", *diffs))
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
