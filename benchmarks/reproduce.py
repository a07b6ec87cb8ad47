"""Long reproductions of known results, over several seeds: the runs the test suite only samples.

`make reproduce` (or `python benchmarks/reproduce.py [grokking] [induction] [ioi]`) runs alone, at the
threads given (default 2), writes figures beside this file and a section per reproduction in
RESULTS.md. Measured spread over seeds is what the suite's tolerances come from.

- grokking: (a + b) mod 53, Nanda et al.'s one-layer model at mechscope's defaults (half the pairs,
  lr 3e-3, weight decay 1), 3,000 full-batch steps, seeds 0–2 (~4 min each at 1 thread). Run it again
  with ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=AVX2 to see another CPU's trajectories.
- induction: 2-layer vs 1-layer attention-only models, 1,600 steps, seeds 0–2.
- ioi: the demo's IOI circuit section at its full size (32 pairs; the suite runs 16).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

HERE = Path(__file__).parent


def _fmt(values: list, digits: int = 2) -> str:
    shown = [("—" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)) for v in values]
    return " / ".join(shown)


def grokking(threads: int) -> None:
    from mechscope.toy import train_grokking

    rows, first = [], None
    for fraction in (0.5,):
        for seed in (0, 1, 2):
            t = time.perf_counter()
            _, r = train_grokking(53, train_fraction=fraction, steps=3000, seed=seed, progress=False)
            seconds = time.perf_counter() - t
            at = r.test_acc[r.steps.index(r.memorised_step)] if r.memorised_step is not None else None
            rows.append((fraction, seed, r.memorised_step, at, r.grokked_step, r.test_acc[-1],
                         r.key_frequencies, r.restricted_loss[-1], r.test_loss[-1], seconds))
            if first is None:
                first = r
                fig = r.figure()
                fig.savefig(HERE / "grokking.png", dpi=110)
            print(rows[-1], flush=True)
    table = ["| train fraction | seed | memorised (train acc ≥ 0.99) | test acc then | grokked (test acc ≥ 0.99) "
             "| final test acc | key frequencies | restricted / test loss | s |", "|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for f, seed, m, at, g, acc, keys, rl, tl, s in rows:
        table.append(f"| {f} | {seed} | {m} | {_fmt([at])} | {g} | {acc:.3f} | {keys} | {rl / tl:.3f} | {s:.0f} |")
    write_section("reproduce-grokking", f"""## Reproduction: grokking modular addition

`python benchmarks/reproduce.py grokking`: p = 53, lr 3e-3, weight decay 1, 3,000 full-batch steps. {machine(threads, "cpu")}.
Figure (train fraction 0.5, seed 0): `benchmarks/grokking.png`.

{chr(10).join(table)}
""")


def induction(threads: int) -> None:
    from mechscope.toy import train_induction

    rows = []
    for seed in (0, 1, 2):
        for layers in (2, 1):
            t = time.perf_counter()
            _, r = train_induction(layers, steps=1600, seed=seed, progress=False)
            head, score = r.best("induction")
            rows.append((layers, seed, head, score, r.phase_step, r.icl[-1], r.repeat_loss, time.perf_counter() - t))
            if seed == 0 and layers == 2:
                r.figure().savefig(HERE / "induction.png", dpi=110)
            print(rows[-1], flush=True)
    table = ["| layers | seed | best induction head | score | phase change at step | final ICL score | repeat loss | s |",
             "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for layers, seed, head, score, phase, icl, loss, s in rows:
        table.append(f"| {layers} | {seed} | {head} | {score:.2f} | {phase} | {icl:+.2f} | {loss:.2f} | {s:.0f} |")
    write_section("reproduce-induction", f"""## Reproduction: induction heads form in two layers, not one

`python benchmarks/reproduce.py induction`: attention-only models, 1,600 steps of 32 × 64 tokens. {machine(threads, "cpu")}.
Figure (2 layers, seed 0): `benchmarks/induction.png`.

{chr(10).join(table)}
""")


def ioi(threads: int) -> None:
    import tempfile

    import mechscope as ms
    from mechscope.archive import open as open_archive
    from mechscope.demo import ioi_circuit

    model = ms.load("smollm2-135m")
    arch = open_archive(Path(tempfile.mkdtemp()) / "archive")
    t = time.perf_counter()
    spec = ioi_circuit(model, arch, progress=False, pairs=32)
    seconds = time.perf_counter() - t
    circuit = next(f.result() for f in spec.findings() if f.kind == "Circuit")
    total = circuit.extra["total_edges"]
    write_section("reproduce-ioi", f"""## Reproduction: the IOI circuit at full size

`python benchmarks/reproduce.py ioi`: EAP-IG (3 steps) on 32 IOI pairs, minimal circuit at faithfulness 0.8 on 16
(corrupted ablation), path patching into the top name mover's query on 4. {machine(threads, "cpu")}.

| edges kept | of | share | faithfulness | top name mover in circuit | s |
|---:|---:|---:|---:|---|---:|
| {len(circuit.edges)} | {total} | {len(circuit.edges) / total:.1%} | {circuit.faithfulness:.3f} | {'a23.h3' in circuit.nodes} | {seconds:.0f} |
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("which", nargs="*", default=["grokking", "induction", "ioi"],
                        choices=["grokking", "induction", "ioi"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.which:
        t = time.perf_counter()
        globals()[name](args.threads)
        print(f"{name}: {time.perf_counter() - t:.0f}s")


if __name__ == "__main__":
    main()
