"""Opening and running dictionaries from elsewhere: mechscope against the peer libraries' own code
(run alone, in the SAE benchmark environment: `.venv-bench-sae/bin/python benchmarks/dictionary_speed.py`).

- Load time of a 16k-latent dictionary (d_in 576, SmolLM2's width) in each format, alone and with a
  first encoded row (the peers map the file lazily, mechscope reads and checks it): mechscope's
  `load_dictionary` against SAELens's `SAE.load_from_disk` (SAELens files), sparsify's
  `SparseCoder.load_from_disk` (sparsify folders), and — Gemma Scope's loader in SAELens reads only
  from the hub — the floor of reading `params.npz` with numpy into tensors. Files are in the page
  cache (each is read once before timing): this measures parsing and building, not the disk.
- Encode throughput of a loaded JumpReLU and TopK dictionary: rows per second of mechscope's `encode`
  and SAELens's on the same 4,096 rows.

Median of interleaved rounds, 1 torch thread (as the test workers run). Writes a section to RESULTS.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved, machine, write_section  # noqa: E402

from mechscope.sae.formats import load_dictionary  # noqa: E402

D_IN, WIDTH, ROWS = 576, 16_384, 4096


def random_peer(cls, cfg_cls, **extra):
    peer = cls(cfg_cls(d_in=D_IN, d_sae=WIDTH, **extra))
    with torch.no_grad():
        for p in peer.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
        if hasattr(peer, "threshold"):
            peer.threshold.copy_(torch.rand(WIDTH) * 0.1)
    return peer.eval()


def _peer_encode(peer, x):
    out = peer.encode(x)
    return out[0] if isinstance(out, tuple) else out  # sparsify returns (values, indices, pre)


def main() -> None:
    import sae_lens
    import sparsify
    from sae_lens import SAE
    from sae_lens.saes import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = Path(tempfile.mkdtemp())
    jump = random_peer(JumpReLUSAE, JumpReLUSAEConfig)
    topk = random_peer(TopKSAE, TopKSAEConfig, k=64)
    jump.save_model(root / "saelens-jumprelu")
    topk.save_model(root / "saelens-topk")
    coder = sparsify.SparseCoder(D_IN, sparsify.SparseCoderConfig(num_latents=WIDTH, k=64))
    coder.save_to_disk(root / "layers.6")
    gemma = root / "layer_6" / "width_16k" / "average_l0_40"
    gemma.mkdir(parents=True)
    np.savez(gemma / "params.npz", **{"W_enc": jump.W_enc.detach().numpy(), "W_dec": jump.W_dec.detach().numpy(),
                                      "b_enc": jump.b_enc.detach().numpy(), "b_dec": jump.b_dec.detach().numpy(),
                                      "threshold": jump.threshold.detach().numpy()})

    def npz_floor():
        with np.load(gemma / "params.npz") as data:
            return {k: torch.from_numpy(data[k]) for k in data.files}

    loads = [("SAELens jumprelu", lambda: load_dictionary(root / "saelens-jumprelu"),
              lambda: SAE.load_from_disk(root / "saelens-jumprelu"), "SAE.load_from_disk"),
             ("SAELens topk", lambda: load_dictionary(root / "saelens-topk"),
              lambda: SAE.load_from_disk(root / "saelens-topk"), "SAE.load_from_disk"),
             ("sparsify topk", lambda: load_dictionary(root / "layers.6"),
              lambda: sparsify.SparseCoder.load_from_disk(root / "layers.6"), "SparseCoder.load_from_disk"),
             ("Gemma Scope params.npz", lambda: load_dictionary(gemma, site="blocks.6.resid_post"), npz_floor,
              "numpy floor (np.load → tensors)")]
    rows = []
    one = torch.randn(1, D_IN)
    for name, ours, peer, how in loads:
        t = interleaved({"ours": ours, "peer": peer}, rounds=7, device="cpu", warmup=1)
        rows.append(f"| load {name} | {t['ours'] * 1e3:.0f} ms | {t['peer'] * 1e3:.0f} ms ({how}) | "
                    f"{t['peer'] / t['ours']:.2f}× |")
        if "floor" in how:
            continue
        # the peers map the file and read it on first use; mechscope reads and checks it (NaN/inf) at load:
        # the time to a first result is load + one encoded row
        encode = {"ours": lambda: ours().encode(one), "peer": lambda: _peer_encode(peer(), one)}
        with torch.no_grad():
            t = interleaved(encode, rounds=7, device="cpu", warmup=1)
        rows.append(f"| load {name} + encode 1 row | {t['ours'] * 1e3:.0f} ms | {t['peer'] * 1e3:.0f} ms | "
                    f"{t['peer'] / t['ours']:.2f}× |")
    x = torch.randn(ROWS, D_IN)
    for name, peer, folder in (("jumprelu", jump, "saelens-jumprelu"), ("topk k=64", topk, "saelens-topk")):
        ours = load_dictionary(root / folder)
        with torch.no_grad():
            # the same latents, but for the few whose pre-activation sits within float rounding of the
            # threshold / the k-th value (summed in another order): ≤ 1 in 10⁵ may flip
            flipped = float(((ours.encode(x) - peer.encode(x)).abs() > 1e-4).float().mean())
            assert flipped < 1e-5, f"{name}: {flipped:.1e} of the latents differ"
            t = interleaved({"ours": lambda: ours.encode(x), "peer": lambda: peer.encode(x)}, rounds=7, device="cpu")
        rows.append(f"| encode {name} ({ROWS:,} rows) | {ROWS / t['ours']:,.0f} rows/s | {ROWS / t['peer']:,.0f} rows/s "
                    f"(SAELens encode) | {t['peer'] / t['ours']:.2f}× |")
    md = "\n".join([
        "## Dictionaries from elsewhere: load time and encode throughput (cpu)", "",
        f"`.venv-bench-sae/bin/python benchmarks/dictionary_speed.py`: {WIDTH:,} latents × d_in {D_IN} (float32, "
        f"{WIDTH * D_IN * 8 / 1e6:.0f} MB of weights), files in the page cache; sae-lens {sae_lens.__version__}, "
        f"eai-sparsify 1.3.3; median of 7 interleaved rounds. Speed-up = peer time / mechscope time. "
        f"{machine(1, 'cpu')}.", "",
        "| what | mechscope | peer | speed-up |", "|---|---:|---:|---:|", *rows])
    write_section("dictionary_speed", md)
    print(md)


if __name__ == "__main__":
    main()
