"""`mechscope toy superposition|induction|grokking`: train, print the finding, store a specimen,
write its figures and report."""

from __future__ import annotations

import time
from pathlib import Path

KINDS = ("superposition", "induction", "grokking")


def _superposition(progress: bool, quick: bool):
    from ..toy.superposition import interference, superposition_phases, train_superposition

    intro = train_superposition(progress=progress)
    toy = intro.model
    sweep = train_superposition(20, 5, sparsities=(0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99), instances=4,
                                   steps=1000 if quick else 3000, progress=progress)
    phases = superposition_phases(steps=800 if quick else 1500, progress=progress)
    findings = [
        (intro, "The paper's intro figure: with dense features only the 2 most important get a dimension; as "
                "sparsity grows, features pair up antipodally, then all five share the plane as a pentagon."),
        (sweep, "n=20 in m=5: hidden dimensions spent per feature fall as features get sparser; feature "
                "dimensionalities cluster at simple fractions (1, 1/2, 2/5, ...)."),
        (phases, "One extra feature in one dimension: ignored, given the dimension, or stored in superposition "
                 "with the first, depending on its importance and density."),
        (interference(intro, -1), "Proved, not sampled (exact MILP over input boxes): how far the pentagon model "
                                  "reports a feature that is absent. The ReLU's negative bias filters part of the "
                                  "interference of one other feature; two active neighbours get through."),
    ]
    return toy, findings, dict(task="superposition", dataset="synthetic sparse features",
                               description="Toy Models of Superposition (Elhage et al. 2022), trained from scratch.")


def _induction(progress: bool, quick: bool):
    import torch

    from ..components.heads import detect_heads, head_circuits
    from ..components.patching import ablation_scan
    from ..toy.attn_only import train_induction

    steps = 800 if quick else 1600
    one = train_induction(1, steps=steps, progress=progress)
    two = train_induction(2, steps=steps, progress=progress)
    two_model = two.model
    heads = detect_heads(two_model, batch=16, length=32, k=1, seeds=5, progress=progress)
    circuits = head_circuits(two_model)
    ids = torch.randint(1, two_model.cfg.vocab, (20,), generator=torch.Generator().manual_seed(1)).tolist()
    words = [f"t{i}" for i in ids + ids]
    scan = ablation_scan(two_model, " ".join(words[:-1]), words[-1], components="heads", progress=False)
    findings = [
        (two, "The 2-layer model's phase change: the loss leaves its plateau, the in-context-learning score "
              "drops and an induction head and previous-token heads appear at the same steps."),
        (one, "The 1-layer model, same data and steps: only a gradual gain (copying tokens seen before), no "
              "induction head."),
        (heads, "The trained 2-layer model's detector scores. Its layer-1 heads are redundant induction heads, so "
                "ablating one costs little more than ablating a random head of layer 1."),
        (scan, "Zero-ablating each head on a repeated random sequence: the previous-token head of layer 0, which "
               "every induction head reads, is the one the repeat cannot do without."),
        (circuits, "From its weights: the K-composition from the layer-0 previous-token heads into the layer-1 "
                   "induction head."),
    ]
    return two_model, findings, dict(task="induction", dataset="repeated segments (random period)",
                                     description="Attention-only transformers (1 and 2 layers) trained from "
                                                 "scratch: induction heads form in a phase change in 2 layers only.")


def _grokking(progress: bool, quick: bool):
    from ..toy.grokking import train_grokking

    result = train_grokking(53, steps=2500 if quick else 6000, stop_after_grokking=500, progress=progress)
    findings = [(result, "Memorise first, generalise much later; the embedding becomes sparse in the Fourier basis "
                         "and the restricted loss falls before the test loss does.")]
    return result.model, findings, dict(task="modular-addition", dataset="(a + b) mod 53",
                                 description="Grokking (Nanda et al. 2023): a one-layer transformer on modular "
                                             "addition, and the Fourier algorithm it learns.")


def run_toy(kind: str, out: str | Path = "mechscope-toy", *, archive: str | None = None, progress: bool = True,
            quick: bool = False) -> Path:
    """Train the ``kind`` specimen, print its findings, store them in the archive and write
    ``out/<kind>/`` (one PNG per finding and ``report.html``). ``quick``: fewer steps."""
    from ..archive import open as open_archive
    from ..report import write_report

    if kind not in KINDS:
        raise ValueError(f"unknown toy specimen {kind!r}; valid: {', '.join(KINDS)}")
    t0 = time.perf_counter()
    model, findings, create = {"superposition": _superposition, "induction": _induction,
                               "grokking": _grokking}[kind](progress, quick)
    out = Path(out) / kind
    out.mkdir(parents=True, exist_ok=True)
    for i, (result, _) in enumerate(findings):
        print(f"\n{result.summary()}")
        png = result.png_bytes()
        if png:
            (out / f"{i + 1}-{type(result).__name__}.png").write_bytes(png)
    arch = open_archive(archive)
    spec = arch.record(f"toy: {kind}", findings, model=model, tags=["toy"], **create)
    report, _ = write_report(spec, out / "report.html")
    print(f"\nStored specimen {spec.name!r} ({spec.uid[:8]}, version {spec.version}) in {arch!r}.")
    print(f"Figures and report in {out}/ ({time.perf_counter() - t0:.0f}s)")
    return report
