"""Long reproductions of known results, over several seeds: the runs the test suite only samples.

`make reproduce` (or `python benchmarks/reproduce.py [crashes] [grokking] [induction] [ioi] [siit]`) runs alone, at the
threads given (default 2), writes figures beside this file and a section per reproduction in
RESULTS.md. Measured spread over seeds is what the suite's tolerances come from.

- grokking: (a + b) mod 53, Nanda et al.'s one-layer model at mechscope's defaults (half the pairs,
  lr 3e-3, weight decay 1), 3,000 full-batch steps, seeds 0–2 (~4 min each at 1 thread). Run it again
  with ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=AVX2 to see another CPU's trajectories.
- induction: 2-layer vs 1-layer attention-only models, 1,600 steps, seeds 0–2.
- ioi: the demo's IOI circuit section at its full size (32 pairs; the suite runs 16).
- siit: SIIT-trained stand-ins for compiled reverse and sort (2,000 steps), seeds 0–2: accepted
  (interchange accuracy ≥ 0.9, the other nodes moving ≤ 5% of outputs) or not, and how close.
- crashes: 60 rounds of a process writing to an archive (its first open, `record`, import) killed by
  SIGKILL at a random moment, each followed by the checks the issue asks for (see the section it writes);
  the suite's crash tests stop at every named step deterministically, this samples the moments between.
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
            r = train_grokking(53, train_fraction=fraction, steps=3000, seed=seed, progress=False)
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
            r = train_induction(layers, steps=1600, seed=seed, progress=False)
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
    from mechscope.specimens.demo import ioi_circuit

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


def _writer(location: str, export: str, fresh: bool) -> None:
    """The killed process: open the archive, then replace the specimen's findings again and again
    (three per round, all noted with the round) and re-import an export, until killed."""
    import random

    from mechscope.archive import open as open_archive
    from mechscope.results import NextTokens, Provenance

    arch = open_archive(location)
    if fresh:
        return
    rng = random.Random(os.getpid())
    for k in range(10**6):
        if rng.random() < 0.25:
            arch.import_file(export, replace=True)
            continue
        results = [(NextTokens(Provenance("toy", "f0"), ["a"], [["b", "c"]], torch.rand(1, 2)), f"round {k} {os.getpid()}")
                   for _ in range(3)]
        arch.record("target", results)


def crashes(threads: int, rounds: int = 60) -> None:
    import multiprocessing
    import random
    import signal
    import sqlite3
    import tempfile

    from sqlalchemy import select

    from mechscope.archive import open as open_archive
    from mechscope.archive.schema import finding_files
    from mechscope.results import NextTokens, Provenance

    root = Path(tempfile.mkdtemp())
    rng = random.Random(0)
    location = str(root / "archive")
    arch = open_archive(location)
    first = [(NextTokens(Provenance("toy", "f0"), ["a"], [["b", "c"]], torch.rand(1, 2)), "round start") for _ in range(3)]
    arch.record("target", first)
    src = open_archive(str(root / "source")).record("imported", first)
    export = str(src.archive.export(src.uid, root / "imported.mscope"))
    arch.import_file(export)
    arch.close()
    ctx = multiprocessing.get_context("fork")
    tally = {"rounds": 0, "first open killed": 0, "writer killed": 0, "opened": 0, "old or new findings": 0,
             "imported whole": 0, "unreferenced after gc": 0, "missing files": 0, "integrity ok": 0}
    t0 = time.perf_counter()
    for r in range(rounds):
        fresh = r % 6 == 5
        where = str(root / f"fresh{r}") if fresh else location
        proc = ctx.Process(target=_writer, args=(where, export, fresh))
        proc.start()
        time.sleep(rng.uniform(0.0, 0.02) if fresh else rng.uniform(0.3, 3.0))  # a fresh open takes ~12 ms
        killed = proc.is_alive()
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        tally["rounds"] += 1
        tally["first open killed" if fresh else "writer killed"] += killed
        arch = open_archive(where)
        tally["opened"] += 1
        if not fresh:
            notes = [f.notes for f in arch.get("target").findings()]
            tally["old or new findings"] += len(notes) == 3 and len(set(notes)) == 1
            got = arch.search("imported")
            tally["imported whole"] += len(got) == 1 and len(got[0].findings()) == 3
        arch.collect_garbage(grace=0)
        with arch.engine.connect() as conn:
            used = set(conn.execute(select(finding_files.c.hash)).scalars())
        present = arch.blobs.all()
        tally["unreferenced after gc"] += len(present - used)
        tally["missing files"] += len(used - present)
        arch.close()
        db = sqlite3.connect(Path(where) / "archive.db")
        tally["integrity ok"] += db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
        print(r, tally, flush=True)
    seconds = time.perf_counter() - t0
    writes = rounds - rounds // 6
    ok = (tally["opened"] == tally["integrity ok"] == rounds and not tally["unreferenced after gc"]
          and not tally["missing files"] and tally["old or new findings"] == tally["imported whole"] == writes)
    rows = "\n".join(f"| {k} | {v} |" for k, v in tally.items())
    verdict = "all held" if ok else "FAILED"
    write_section("reproduce-crashes", f"""## Reproduction: random SIGKILLs of archive writers

`python benchmarks/reproduce.py crashes`: {rounds} rounds; in each a forked process opens an SQLite archive and
replaces a specimen's three findings in a loop (`record`; a quarter of the time it re-imports an export with
`replace=True`), killed with SIGKILL 0.3–3 s in; every sixth round a fresh archive is killed 0–20 ms into its first
open (the migration). After each kill: the archive opens, the specimen holds three findings of one round, the
imported specimen is whole, `gc --grace 0` leaves no unreferenced file and no finding lacks one, and SQLite's
integrity check passes. {machine(threads, "cpu")}; {seconds:.0f} s. **{verdict}**.

| count | value |
|---|---:|
{rows}
""")
    if not ok:
        raise SystemExit(f"crash reproduction failed: {tally}")


def siit(threads: int) -> None:
    from mechscope.compile import PROGRAMS, compile_program
    from mechscope.compile.siit import train_siit

    rows = []
    for name in ("reverse", "sort"):
        make, vocab, max_len, non_causal = PROGRAMS[name]
        compiled = compile_program(make(), vocab, max_len, causal=not non_causal)
        for seed in (0, 1, 2):
            r = train_siit(compiled, seed=seed, progress=False)
            rows.append((name, seed, r.accuracy, r.interchange_accuracy, r.strict_change, r.accepted, r.seconds))
            print(r.summary(), flush=True)
    table = ["| program | seed | accuracy | interchange accuracy | outputs moved by the other nodes | accepted | s |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for name, seed, acc, iit, strict, ok, s in rows:
        table.append(f"| {name} | {seed} | {acc:.3f} | {iit:.3f} | {strict:.1%} | {'yes' if ok else 'no'} | {s:.0f} |")
    write_section("reproduce-siit", f"""## Reproduction: SIIT stand-ins for compiled programs

`python benchmarks/reproduce.py siit`: `compile.siit.train_siit` at its defaults (d_model 64, 2,000 steps of 64
pairs, lr 1e-3, strict weight 1, inputs of every length). {machine(threads, "cpu")}.

{chr(10).join(table)}
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("which", nargs="*", default=["crashes", "grokking", "induction", "ioi", "siit"],
                        choices=["crashes", "grokking", "induction", "ioi", "siit"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.which:
        t = time.perf_counter()
        globals()[name](args.threads)
        print(f"{name}: {time.perf_counter() - t:.0f}s")


if __name__ == "__main__":
    main()
