"""`mechscope transcoders`: train every layer's transcoder online, then score them together."""

from __future__ import annotations

from .common import open_archive
from ..checks import indices


def _layers(spec: str | None) -> list[int] | None:
    if not spec:
        return None
    return indices(spec, "layer")


def run_transcoders(model, args, page) -> int:
    from ..sae.evaluate import evaluate_transcoders
    from ..sae.online import train_transcoders, training_blocks
    from ..sae.transcoder_sets import load_transcoders

    corpora = [c.strip() for c in args.corpora.split(",") if c.strip()]
    log = train_transcoders(model, args.directory, layers=_layers(args.layers), width=args.width, k=args.k,
                            tokens=args.tokens, batch_size=args.batch_size, context=args.context, corpora=corpora, seed=args.seed, lr=args.lr,
                            progress=not args.quiet)
    print(log.summary())
    results = [(log, "training curves, every layer")]
    if args.eval_blocks:
        held_out = training_blocks(model.tokenizer, args.context, corpora, args.seed, split="test")[:args.eval_blocks]
        fidelity = evaluate_transcoders(model, load_transcoders(args.directory, model, model.device), held_out,
                                        progress=not args.quiet)
        print(fidelity.summary())
        results.append((fidelity, "all transcoders spliced together on held-out text"))
    with open(args.page, "w", encoding="utf-8") as f:
        f.write(page("Transcoders for every layer", "".join(r.html() for r, _ in results)))
    print(f"wrote {args.page}")
    if args.archive:
        spec = open_archive(args).record(f"transcoders: {model.name}", results, model=model, tags=["transcoders"])
        print(f"stored specimen {spec.uid[:8]} {spec.name!r}")
    return 0
