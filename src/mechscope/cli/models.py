"""Commands that open a model and look inside it: info, run, lens, attribute, heads, demo, toy."""

from __future__ import annotations

import json

from ..models.embedded import DEFAULT_MODEL
from .common import ARCHIVE_HELP, MODEL_HELP, command, emit, outputs, pages_dir, quiet, write_text


def _info(args) -> int:
    from ..models.load import load

    model = load(args.model)
    info = model.info()
    if args.json:
        write_text(args.json, json.dumps(info, indent=1), "the model's config and sites")
        return 0
    print(f"{info['name']}\n  {model.cfg.summary()}\n  fingerprint {info['fingerprint']}")
    sites = info["sites"]
    if args.sites:
        print("  sites:\n" + "\n".join(f"    {s}" for s in sites))
    else:
        print(f"  {len(sites)} sites: embed, blocks.{{0..{model.cfg.n_layers - 1}}}."
              f"{{{', '.join(s.split('.', 2)[2] for s in sites if s.startswith('blocks.0.'))}}}, final_norm, logits"
              "  (--sites lists them)")
    return 0


def _run(args) -> int:
    from ..models.load import load
    from ..results import NextTokens

    model = load(args.model)
    result = NextTokens.of(model.run(args.prompt), args.prompt, k=args.k)
    if args.json != "-":
        print(result.summary())
    emit(args, [(result, "the top next tokens")], "Next tokens", model=model, name=f"next tokens: {args.prompt[0][:40]}",
         tags=["run"])
    return 0


def _lens(args) -> int:
    from ..lenses.logit import direct_logit_attribution, logit_lens
    from ..models.load import load

    model = load(args.model)
    lens = logit_lens(model, args.prompt, args.target)
    width = 2 + max(len(repr(t)) for t in lens.tokens + [t for row in lens.top_tokens for t in row])
    print("layer  " + "".join(f"{t!r:>{width}}" for t in lens.tokens))
    for r, row in enumerate(lens.rows):
        print(f"{row:<6} " + "".join(f"{lens.top_tokens[r][i]!r:>{width}}" for i in range(len(lens.tokens)))
              + f"   p({lens.target!r}) = {float(lens.target_prob[r, -1]):.3f}")
    print(lens.summary())
    dla = direct_logit_attribution(model, args.prompt, lens.target, foil=args.foil)
    print(dla.summary())
    emit(args, [(lens, "each layer decoded by the final norm"), (dla, "direct logit attribution of the answer")],
         f"Logit lens: {args.prompt[:40]}", model=model, tags=["lens"])
    return 0


def _attribute(args) -> int:
    from ..attribution import grad_x_input, saliency, token_ig, token_perturbation
    from ..models.load import load

    model = load(args.model)
    target = args.target
    if target is None:
        target = int(model.run(args.prompt).logits[0, -1].argmax())
    hold = [int(h) for h in args.hold.split(",") if h != ""] if args.hold else []
    if args.method == "ig":
        result = token_ig(model, args.prompt, target, baseline=args.baseline, hold=hold, steps=args.steps,
                          adaptive=not args.fixed, method="riemann_trapezoid" if not args.fixed else "gausslegendre")
    elif args.method == "saliency":
        result = saliency(model, args.prompt, target)
    elif args.method == "gradxinput":
        result = grad_x_input(model, args.prompt, target)
    else:
        result = token_perturbation(model, args.prompt, target, method=args.method, hold=hold, budget=args.budget)
    for label, score in zip(result.labels, result.scores.tolist()):
        bar = ("+" if score >= 0 else "-") * min(40, int(round(40 * abs(score) / (float(result.scores.abs().max()) or 1))))
        print(f"{label!r:>16} {score:+10.4f} {bar}")
    print(result.summary())
    emit(args, [(result, f"{args.method} attribution")], f"{args.method} attribution: {args.prompt[:40]}", model=model,
         tags=["attribution"])
    return 0


def _heads(args) -> int:
    from ..components.heads import detect_heads
    from ..models.load import load

    model = load(args.model)
    blocks = None
    if args.icl:
        from ..data import token_blocks

        blocks = token_blocks(model.tokenizer, args.icl, 512, "test")
    result = detect_heads(model, batch=args.n, length=args.length, k=args.k, seeds=args.seeds, text_blocks=blocks,
                          progress=not args.quiet)
    print(f"{'rank':<5}" + "".join(f"{kind:>20}" for kind in ("induction", "previous", "duplicate")))
    tops = {kind: result.top(args.top, kind=kind) for kind in ("induction", "previous", "duplicate")}
    for i in range(args.top):
        print(f"{i + 1:<5}" + "".join(f"{tops[kind][i][0]:>12} {tops[kind][i][1]:>7.2f}" for kind in tops))
    print(result.summary().split("\n", 3)[3])
    findings = [(result, "head scores on repeated random tokens, with the ablation of the top induction heads")]
    if args.circuits:
        from ..components.heads import head_circuits

        circuits = head_circuits(model)
        print(circuits.summary())
        findings.append((circuits, "copying and Q/K/V composition scores from the weights"))
    emit(args, findings, f"Attention heads of {model.name}", model=model, task="induction", tags=["heads"])
    return 0


def _demo(args) -> int:
    from ..specimens.demo import run_demo

    run_demo(args.model, args.dir or pages_dir() / "demo", progress=not args.quiet, archive=args.archive or None,
             full=args.full)
    return 0


def _toy(args) -> int:
    from ..specimens.toy import run_toy

    run_toy(args.kind, args.dir or pages_dir() / "toy", archive=args.archive or None, progress=not args.quiet,
            quick=args.quick)
    return 0


def add(sub) -> None:
    """Declare this module's commands and their arguments on the subparsers ``sub``."""
    p = command(sub, "info", "a model's config, fingerprint and sites",
                ["mechscope info smollm2-135m --sites", "mechscope info ./my-model --json -"])
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--sites", action="store_true", help="list every site")
    p.add_argument("--json", metavar="PATH", help="write the config, fingerprint and sites as JSON to PATH ('-' prints it)")
    p.set_defaults(fn=_info)

    p = command(sub, "run", "the top next tokens after each prompt",
                'mechscope run smollm2-135m "The capital of France is" "Paris is in" -k 3')
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("prompt", nargs="+")
    p.add_argument("-k", type=int, default=5, help="how many tokens (default 5)")
    outputs(p, None)
    p.set_defaults(fn=_run)

    p = command(sub, "lens", "the logit lens of a prompt, and the direct logit attribution of the answer",
                'mechscope lens smollm2-135m "The capital of France is" --foil " London"')
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("prompt")
    p.add_argument("--target", help="target token (default: the model's top prediction)")
    p.add_argument("--foil", help="DLA of logit(target) - logit(foil)")
    outputs(p, "lens")
    p.set_defaults(fn=_lens)

    p = command(sub, "attribute", "which input tokens a prediction comes from (IG, SHAP, LIME, occlusion, gradients)",
                'mechscope attribute smollm2-135m "The capital of France is" --method shap')
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("prompt")
    p.add_argument("--method", choices=["ig", "shap", "lime", "occlusion", "saliency", "gradxinput"], default="ig")
    p.add_argument("--target", help="target token (default: the model's top prediction)")
    p.add_argument("--baseline", default="pad", choices=["pad", "zero", "mean"], help="IG baseline token embedding")
    p.add_argument("--hold", default="0", help="positions kept at their input value (default 0: the first token)")
    p.add_argument("--steps", type=int, default=32, help="IG: starting steps (adaptive) or steps (--fixed)")
    p.add_argument("--fixed", action="store_true", help="IG: fixed Gauss-Legendre steps instead of adaptive")
    p.add_argument("--budget", type=int, default=512, help="shap/lime: model evaluations")
    outputs(p, "attribution")
    p.set_defaults(fn=_attribute)

    p = command(sub, "heads", "previous-token, duplicate-token and induction heads, with ablation evidence",
                "mechscope heads smollm2-135m --circuits --archive")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--top", type=int, default=5, help="rows of the table")
    p.add_argument("-k", type=int, default=5, help="how many top induction heads to ablate")
    p.add_argument("--seeds", type=int, default=5, help="random-head draws for the comparison")
    p.add_argument("-n", type=int, default=8, help="random sequences to score the heads on")
    p.add_argument("--length", type=int, default=50, help="length of the random sequence (repeated once)")
    p.add_argument("--icl", type=int, default=0, help="also the in-context-learning score on this many corpus blocks")
    p.add_argument("--circuits", action="store_true", help="also copying and Q/K/V-composition scores from the weights")
    quiet(p)
    outputs(p, "heads")
    p.set_defaults(fn=_heads)

    p = command(sub, "demo", "study the default model: a specimen, its report and a digest of every section",
                ["mechscope demo --dir mechscope-demo", "mechscope demo --full --archive ./my-archive"])
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--dir", help="the folder for the report (default: demo/ in the pages folder)")
    p.add_argument("--archive", metavar="WHERE", help=ARCHIVE_HELP + "; the specimens are always stored")
    p.add_argument("--full", action="store_true",
                   help="also find the IOI circuit (~4 min) and read/write sentiment (~1 min), two more specimens")
    quiet(p)
    p.set_defaults(fn=_demo)

    p = command(sub, "toy", "train a toy specimen from scratch: superposition, induction heads, grokking",
                "mechscope toy superposition --quick --dir toys")
    p.add_argument("kind", choices=["superposition", "induction", "grokking"])
    p.add_argument("--dir", help="the folder for figures and the report (default: toy/ in the pages folder)")
    p.add_argument("--quick", action="store_true", help="fewer training steps (a smoke run)")
    p.add_argument("--archive", metavar="WHERE", help=ARCHIVE_HELP + "; the specimen is always stored")
    quiet(p)
    p.set_defaults(fn=_toy)
