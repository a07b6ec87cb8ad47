"""The `mechscope` command."""

from __future__ import annotations

import argparse
import json
import sys


def _info(args) -> int:
    from .models.load import load

    model = load(args.model)
    info = model.info()
    if args.json:
        print(json.dumps(info, indent=1))
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
    from .models.load import load
    from .results import NextTokens

    model = load(args.model)
    result = NextTokens.of(model.run(args.prompt), args.prompt, k=args.k)
    if args.json:
        data, tensors = result.to_dict()
        data["probs"] = tensors["probs"].tolist()
        print(json.dumps(data, indent=1))
    else:
        print(result.summary())
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(args.model, args.out, progress=not args.quiet)
    return 0


def main(argv: list[str] | None = None) -> int:
    from .models.load import DEFAULT_MODEL, EMBEDDED

    parser = argparse.ArgumentParser(prog="mechscope", description="Mechanistic interpretability workbench")
    sub = parser.add_subparsers(dest="command", required=True)
    model_help = f"embedded model ({', '.join(EMBEDDED)}) or a local HF directory"

    p = sub.add_parser("info", help="a model's config, fingerprint and sites")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=model_help)
    p.add_argument("--sites", action="store_true", help="list every site")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_info)

    p = sub.add_parser("run", help="top next tokens after each prompt")
    p.add_argument("model", help=model_help)
    p.add_argument("prompt", nargs="+")
    p.add_argument("-k", type=int, default=5, help="how many tokens (default 5)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_run)

    p = sub.add_parser("demo", help="study the default model and write an HTML page of the results")
    p.add_argument("--model", default=DEFAULT_MODEL, help=model_help)
    p.add_argument("--out", default="mechscope-demo", help="output directory (default ./mechscope-demo)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=_demo)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, KeyError, ModuleNotFoundError, FileNotFoundError) as err:
        print(f"mechscope: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
