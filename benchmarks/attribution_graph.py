"""Attribution graphs on SmolLM2-135M: mechscope against circuit-tracer 0.5.0 (its own environment,
`make ct-env`) on the same model and the same transcoders, run alone:
`.venv/bin/python benchmarks/attribution_graph.py` (or `--longest`: that measurement alone, ~1 h).

Transcoders: one random ReLU transcoder per layer (width 4,096; encoder bias set per layer so ~32
features fire per token, as trained TopK-32 transcoders would) — timing does not depend on what the
features mean, and random ones let both libraries read the same files. Both build the full graph
(every active feature visited) and capped ones, with the same backward batch; both sides take the
time of the attribution call alone and the process's peak RSS above what it held before. Their
adjacency matrices are compared as a check (no skip connections here: circuit-tracer's nnsight
backend drops a skip's gradient, see tests/test_attribution_graph.py).

Also: how mechscope's time and peak memory grow with the prompt length and the feature cap, and
(--longest, on its own) the longest prompt whose graph completes here, doubling from 256 tokens until
memory, the dense-row budget (``attribution_graph.ROW_BUDGET``) or an hour runs out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, reset_peak_rss, status_kb, write_section  # noqa: E402

import mechscope as ms  # noqa: E402
from mechscope.tracing import attribution_graph  # noqa: E402
from mechscope.sae import SAEConfig, SparseCoder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CT = ROOT / ".venv-ct" / "bin" / "python"
WIDTH, ACTIVE, THREADS, BATCH = 4096, 32, 2, 32
PROMPT = "The Eiffel Tower is a famous landmark in the city of"
LONG = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, ")


def transcoders(model, ids: list[int]) -> list[SparseCoder]:
    """Random ReLU transcoders whose biases let ~ACTIVE features fire per token on ``ids``."""
    L, d = model.cfg.n_layers, model.cfg.d_model
    sites = [f"blocks.{layer}.mlp.in" for layer in range(L)]
    with torch.no_grad():
        cache = model.run(torch.tensor([ids]), cache=sites).cache
    out = []
    for layer in range(L):
        c = SparseCoder(SAEConfig("relu", d, WIDTH, d_out=d, site=sites[layer], target_site=f"blocks.{layer}.mlp.out"),
                        seed=layer)
        with torch.no_grad():
            pre = torch.sort((cache[sites[layer]][0, 1:].float() @ c.W_enc.T).flatten(), descending=True).values
            n = ACTIVE * (len(ids) - 1)  # the threshold sits in the widest gap near rank n, so that float
            lo, hi = int(n * 0.9), int(n * 1.1) + 1  # differences between two implementations flip no feature
            gap = int(torch.argmax(pre[lo:hi] - pre[lo + 1:hi + 1])) + lo
            c.b_enc.fill_(-float(pre[gap] + pre[gap + 1]) / 2)
            c.b_dec.zero_()
        out.append(c)
    return out


def ours(model, coders, ids, cap=None) -> tuple[float, float, object]:
    base = reset_peak_rss()
    t = time.perf_counter()
    g = attribution_graph(model, coders, ids, max_feature_nodes=cap, batch_size=BATCH, progress=False)
    return time.perf_counter() - t, (status_kb("VmHWM") - base) / 1024, g


def theirs(folder: Path, coders, ids, cap=None) -> tuple[float, float, torch.Tensor]:
    from safetensors.torch import load_file, save_file

    w = {f"{layer}.{name}": getattr(c, name).detach().contiguous() for layer, c in enumerate(coders)
         for name in ("W_enc", "W_dec", "b_enc", "b_dec")}
    save_file(w, str(folder / "transcoders.safetensors"))
    (folder / "prompt.json").write_text(json.dumps({"ids": ids, "batch_size": BATCH, "max_feature_nodes": cap,
                                                    "threads": THREADS}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run([str(CT), str(ROOT / "tests" / "oracles" / "circuit_tracer_graph.py"), str(folder)],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    info = json.loads((folder / "circuit_tracer.json").read_text())
    return info["seconds"], info["peak_rss_mb"] - 0.0, load_file(str(folder / "circuit_tracer.safetensors"))["adjacency"]


def main() -> None:
    torch.set_num_threads(THREADS)
    model = ms.load("smollm2-135m")
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if "--longest" in sys.argv:
        return longest(model, tok, bos)
    folder = Path(tempfile.mkdtemp())
    model.hf.save_pretrained(folder / "model")
    tok.save_pretrained(folder / "model")
    ids = [bos] + tok(PROMPT, add_special_tokens=False)["input_ids"]
    coders = transcoders(model, ids)
    rows = []
    for cap in (None, 2000, 500):
        t_ours, m_ours, g = ours(model, coders, ids, cap)
        line = {"cap": cap or "all", "features": g.n_active, "visited": g.n_features, "ours_s": t_ours, "ours_mb": m_ours}
        if CT.exists():
            t_ct, m_ct, adj = theirs(folder, coders, ids, cap)
            A = g.adjacency(dense=True)
            same = cap is None and A.shape == adj.shape  # capped graphs may visit different features on near ties
            line.update(ct_s=t_ct, ct_mb=m_ct, diff=float((A - adj).abs().max() / adj.abs().max()) if same else float("nan"))
        rows.append(line)
        print(line, flush=True)
    growth = []
    for n_tokens, cap in ((10, 2000), (40, 2000), (160, 2000), (160, 500)):
        long_ids = [bos] + tok(LONG * 8, add_special_tokens=False)["input_ids"][:n_tokens]
        t, m, g = ours(model, transcoders(model, long_ids), long_ids, cap)
        growth.append((n_tokens + 1, cap, g.n_active, t, m, int(g.edge_weight.numel())))
        print(growth[-1], flush=True)
    md = [f"Attribution graph of {PROMPT!r} ({len(ids)} tokens with BOS) on SmolLM2-135M, 30 random ReLU transcoders × "
          f"{WIDTH} (~{ACTIVE} active per token), backward batch {BATCH}; {machine(THREADS, 'cpu')}.",
          "", "| features visited | active | mechscope s | circuit-tracer s | ratio | mechscope peak MB | circuit-tracer peak MB | max |ΔA| / max |A| |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ct = r.get("ct_s")
        md.append(f"| {r['cap']} | {r['features']} | {r['ours_s']:.1f} | {ct:.1f} | {ct / r['ours_s']:.2f}× | {r['ours_mb']:.0f} | "
                  f"{r['ct_mb']:.0f} | {'—' if r['diff'] != r['diff'] else format(r['diff'], '.1e')} |" if ct is not None else
                  f"| {r['cap']} | {r['features']} | {r['ours_s']:.1f} | — | — | {r['ours_mb']:.0f} | — | — |")
    md += ["", "Growth (mechscope): prompt tokens, feature cap → active features, seconds, peak MB, stored edges", "",
           "| tokens | cap | active features | s | peak MB | edges |", "|---|---|---|---|---|---|"]
    md += [f"| {n} | {c} | {a} | {t:.1f} | {m:.0f} | {e} |" for n, c, a, t, m, e in growth]
    write_section("attribution-graph", "## Attribution graphs (mechscope vs circuit-tracer)\n\n" + "\n".join(md))
    print("\n".join(md))




def longest(model, tok, bos: int) -> None:
    """Double the prompt from 256 tokens (cap 1,000 features, backward batch 2) until a graph fails
    or takes over an hour; the table goes to its own section."""
    global BATCH
    BATCH = 2
    found, n = [], 256
    while n <= 4096:
        long_ids = [bos] + tok(LONG * 200, add_special_tokens=False)["input_ids"][:n - 1]
        try:
            t, m, g = ours(model, transcoders(model, long_ids), long_ids, 1000)
            found.append((n, f"{t:.0f}", f"{m:.0f}", str(g.n_active)))
        except (RuntimeError, MemoryError, ValueError) as err:  # ValueError: the dense-row budget, said so
            found.append((n, "—", "—", str(err).splitlines()[0][:160]))
        print(found[-1], flush=True)
        if found[-1][1] == "—" or float(found[-1][1]) > 3600:
            break
        n *= 2
    md = [f"Longest prompts on SmolLM2-135M, 30 random ReLU transcoders × {WIDTH} (~{ACTIVE} active per token), cap "
          f"1,000 features, backward batch 2; {machine(THREADS, 'cpu')}.", "",
          "| tokens | s | peak MB | active features / why it stopped |", "|---|---|---|---|"]
    md += [f"| {n} | {t} | {m} | {a} |" for n, t, m, a in found]
    write_section("attribution-graph-longest", "## Attribution graphs: the longest prompt\n\n" + "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
