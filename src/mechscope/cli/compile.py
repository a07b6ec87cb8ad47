"""`mechscope compile PROGRAM`: compile an example program into an HF model, check it against the
program on every input, measure its true circuit and store both as a specimen."""

from __future__ import annotations

import time

from .common import command, emit, outputs


def _compile(args) -> int:
    from ..circuits.discovery import evaluate
    from ..compile import compile_example
    from ..compile.task import compiled_task

    from pathlib import Path

    from ..checks import positive_int

    max_len = None if args.max_len is None else positive_int(args.max_len, "--max-len", "the longest input")
    positive_int(args.pairs, "--pairs", "clean/corrupted pairs")
    if args.dir and Path(args.dir).exists() and not Path(args.dir).is_dir():
        raise ValueError(f"--dir {args.dir}: a file is there; the compiled model is saved as a folder")
    t0 = time.perf_counter()
    compiled = compile_example(args.program, max_len, None if args.causal is None else args.causal == "yes")
    seconds = time.perf_counter() - t0
    vocab, max_len, causal = compiled.vocab, compiled.max_len, compiled.causal
    c = compiled.model.cfg
    n_params = sum(p.numel() for p in compiled.model.hf.parameters())
    print(f"compiled {args.program} for inputs over {vocab} of up to {max_len} tokens "
          f"({'causal' if causal else 'non-causal'}) in {seconds:.2f} s: {c.n_layers} layers, {c.n_heads} heads, "
          f"d_model {c.d_model}, d_head {c.d_head}, d_mlp {c.d_mlp}, {n_params:,} parameters")
    for label, place in compiled.steps.items():
        kind, layer, where = place
        print(f"  {label}: " + (f"head L{layer}H{where}" if kind == "attn" else f"MLP {layer}, units {where[0]}–{where[1] - 1}"))
    report = compiled.verify()
    print(f"equals the program on {report['checked']:,} inputs ({'every input' if report['exhaustive'] else 'sampled'}; "
          f"{report['undefined']} where the program is undefined): {report['n_mismatches']} mismatches")
    if report["n_mismatches"]:
        print(f"first mismatches: {report['mismatches']}")
        return 1
    from ..compile.proofs import prove_mlps

    proofs = prove_mlps(compiled, args.eps)
    for verdict in proofs.values():
        print(f"  {verdict.summary()}")
    truth = compiled.circuit()
    if args.dir:
        compiled.model.hf.save_pretrained(args.dir)
        compiled.model.tokenizer.save_pretrained(args.dir)
        print(f"wrote the model to {args.dir} (mechscope.load({args.dir!r}) opens it)")
    findings = []
    try:
        task = compiled_task(compiled, args.pairs)
    except ValueError as err:  # e.g. length: every input of one length has one output
        print(f"no task to measure the circuit on: {err}")
    else:
        for ablation in ("zero", "corrupted"):
            measured = evaluate(compiled.model, task, truth, ablation=ablation)
            print(f"true circuit ({len(truth.nodes)} nodes, {len(truth.edges)} edges), {ablation} ablation: "
                  f"faithfulness {measured.faithfulness:.3f}, completeness {measured.completeness:.3f}")
            findings.append((measured, f"the true circuit of {args.program} ({ablation} ablation of everything else), "
                                       f"checked on {report['checked']:,} inputs"))
    findings = findings or [(truth, "the true circuit")]
    findings += [(v, f"proof about the compiled MLP of {label}") for label, v in proofs.items()]
    emit(args, findings, f"compiled: {args.program}", model=compiled.model, task=f"compiled:{args.program}",
         tags=["compiled"])
    return 0


def add(sub) -> None:
    """Declare this module's commands and their arguments on the subparsers ``sub``."""
    from ..compile.programs import PROGRAMS

    p = command(sub, "compile", "compile a RASP program into a transformer whose circuit is known, and check it",
                ["mechscope compile reverse --dir rev --archive", "mechscope compile sort --max-len 4 --pairs 8"])
    p.add_argument("program", choices=sorted(PROGRAMS))
    p.add_argument("--max-len", type=int, help="longest input (default: the program's own)")
    p.add_argument("--causal", choices=["yes", "no"], help="causal attention (default: what the program needs)")
    p.add_argument("--pairs", type=int, default=32, help="clean/corrupted pairs to measure the true circuit on")
    p.add_argument("--eps", type=float, default=0.1,
                   help="prove each MLP step decodes every input within this L∞ radius of its codes")
    p.add_argument("--dir", help="save the compiled model (an HF directory) here")
    outputs(p, "compiled")
    p.set_defaults(fn=_compile)
