"""Commands that read and write concepts: probe, steer."""

from __future__ import annotations

from .common import MODEL_HELP, command, emit, outputs, quiet


def _probe(args) -> int:
    from ..models.load import load
    from ..concepts.probes import probe_sweep

    model = load(args.model)
    sweep = probe_sweep(model, args.dataset, args.site, kind=args.kind, seed=args.seed, progress=not args.quiet)
    print(sweep.summary())
    for site, te, co in zip(sweep.sites, sweep.test_score, sweep.control_score):
        print(f"  {site:28s} test {te:.3f}  control {co:.3f}  selectivity {te - co:+.3f}")
    emit(args, [(sweep, f"{args.kind} probes of {args.dataset}")], f"probes: {args.dataset}", model=model,
         task=args.dataset, tags=["probe"])
    return 0


def _steer(args) -> int:
    from ..models.load import load
    from ..concepts.datasets import NEGATIVE_WORDS, POSITIVE_WORDS
    from ..concepts.steering import NEUTRAL, control_vector, read_pairs, steering_sweep, word_score

    model = load(args.model)
    pairs = read_pairs(args.pairs)
    cv = control_vector(model, pairs, args.site, method=args.method)
    print(cv.summary())
    score = (lambda texts: word_score(texts, POSITIVE_WORDS, NEGATIVE_WORDS)) if args.pairs == "sentiment" \
        else (lambda texts: 0.0)
    sweep = steering_sweep(model, cv, args.prompts, [0.0, args.coef], score=score,
                           score_name="sentiment words" if args.pairs == "sentiment" else "none", neutral=NEUTRAL,
                           max_new_tokens=args.max_new_tokens, after_prompt=args.after_prompt, progress=not args.quiet)
    print(sweep.summary())
    emit(args, [(cv, f"{args.method} vector at {args.site}"), (sweep, f"coefficient {args.coef}")],
         f"steering: {args.pairs}", model=model, task="steering", tags=["steering"])
    return 0


def add(sub) -> None:
    """Declare this module's commands and their arguments on the subparsers ``sub``."""
    p = command(sub, "probe", "linear probes at every site, with control tasks and selectivity",
                "mechscope probe smollm2-135m --dataset sentiment --site 'blocks.*.resid_post'")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--dataset", default="sentiment", choices=["sentiment", "truth", "function-words"])
    p.add_argument("--site", default="blocks.*.resid_post", help="sites to probe (globs allowed)")
    p.add_argument("--kind", default="logistic", choices=["logistic", "mass-mean"])
    p.add_argument("--seed", type=int, default=0)
    quiet(p)
    outputs(p, "probe")
    p.set_defaults(fn=_probe)

    p = command(sub, "steer", "a control vector from contrastive pairs, and generation steered by it",
                ['mechscope steer smollm2-135m "I went to the market and" --pairs sentiment --site blocks.10.resid_post',
                 'mechscope steer MODEL "prompt" --pairs pairs.tsv --method pca --after-prompt'])
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("prompts", nargs="+", help="prompts to continue")
    p.add_argument("--pairs", default="sentiment", help="'sentiment' (embedded) or a file of positive<TAB>negative "
                                                          "lines / a JSON list of pairs")
    p.add_argument("--site", default="blocks.12.resid_post", help="where the vector is read and added (globs allowed)")
    p.add_argument("--method", default="mean-diff", choices=["mean-diff", "pca"])
    p.add_argument("--coef", type=float, default=4.0)
    p.add_argument("--after-prompt", action="store_true", help="steer only the generated tokens")
    p.add_argument("--max-new-tokens", type=int, default=24)
    quiet(p)
    outputs(p, "steer")
    p.set_defaults(fn=_steer)
