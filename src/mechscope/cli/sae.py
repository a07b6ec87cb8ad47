"""The `sae` command: harvest activations, train, evaluate, feature dashboards (torchrun-aware); read
and convert dictionaries from SAELens, sparsify and Gemma Scope."""

from __future__ import annotations

from .common import ARCHIVE_HELP, MODEL_HELP, open_archive, write_page


def _sae(args) -> int:
    if args.action in ("info", "convert"):
        return (_info if args.action == "info" else _convert)(args)
    if args.action in ("harvest", "train"):
        from ..distributed import group

        with group(args.device) as device:
            return (_harvest if args.action == "harvest" else _train)(args, device)
    return _inspect(args)


def _harvest(args, device: str | None) -> int:
    import torch

    from ..models.load import load
    from ..sae import harvest

    if not args.model:
        raise ValueError("sae harvest needs a MODEL (e.g. smollm2-135m)")
    if args.target_site and args.target is None:
        raise ValueError("--target-site needs --target DIR for the target store")
    model = load(args.model, device=device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    sites, dirs = [args.site or "blocks.12.resid_post"], [args.store]
    if args.target_site:  # a transcoder's input and target, from the same forwards
        sites, dirs = sites + [args.target_site], dirs + [args.target]
    for store in harvest(model, sites, dirs, n_blocks=args.blocks or 256, context=args.context, batch_size=args.batch_size or 8,
                         shard_tokens=args.shard_tokens, dtype=dtype, progress=not args.quiet):
        print(store)
    return 0


def _train(args, device: str | None) -> int:
    from ..sae import ActivationStore, SAEConfig, SparseCoder

    store = ActivationStore(args.store)
    target = ActivationStore(args.target) if args.target else None
    cfg = SAEConfig(args.arch, store.d, args.width, k=args.k if args.arch in ("topk", "batchtopk") else None,
                    d_out=target.d if target else None, skip=args.skip, sparsity=args.sparsity, site=store.site,
                    target_site=target.site if target else None, model=store.manifest["model"])
    sae = SparseCoder(cfg, seed=args.seed)
    sae.fit(store, target, batch_size=args.batch_size or 4096, steps=args.steps, epochs=args.epochs, lr=args.lr, seed=args.seed,
            checkpoint=args.out, progress=not args.quiet, device=device)
    print(sae.log_.summary())
    print(f"wrote {args.out} (config.json, sae.safetensors; checkpoint.pt resumes an interrupted run)")
    return 0


def _inspect(args) -> int:
    """eval or dashboard of a trained SAE: a page, printed summary and a specimen."""
    from ..models.load import load
    from ..sae import load_dictionary

    sae = load_dictionary(args.sae, site=args.site, target_site=args.target_site)
    if not (args.model or sae.cfg.model):
        raise ValueError(f"{args.sae}: the dictionary's config names no model; give MODEL")
    model = load(args.model or sae.cfg.model, device=args.device)
    # read again against the model: checked (name, site, width) and, where needed, rewritten for its sites
    sae = load_dictionary(args.sae, model.device, model=model, site=args.site, target_site=args.target_site,
                          other_model=args.other_model)
    blocks = args.blocks or {"eval": 32, "dashboard": 64}[args.action]
    if args.action == "eval":
        from ..sae.evaluate import evaluate

        result = evaluate(sae, model, n_blocks=blocks, context=args.context, progress=not args.quiet)
        caption = f"{sae.cfg.arch} SAE × {sae.cfg.width} at {sae.cfg.site}"
    else:
        from ..sae.dashboard import feature_cards, parse_features

        result = feature_cards(sae, model, parse_features(args.features, sae.cfg.width), n_blocks=blocks,
                               progress=not args.quiet)
        caption = f"features {args.features}"
        if args.neuronpedia:
            import json
            from pathlib import Path

            set_name = args.neuronpedia_set or f"{result.layer}-{sae.cfg.site.split('.')[-1]}-mechscope"
            Path(args.neuronpedia).write_text(json.dumps(result.to_neuronpedia(model.name, set_name)))
            print(f"wrote {args.neuronpedia} (Neuronpedia dashboard batch, source set {set_name!r})")
    print(result.summary())
    write_page(result, args.page or f"mechscope-sae-{args.action}.html")
    spec = open_archive(args).record(f"SAE {args.action}: {sae.cfg.arch} × {sae.cfg.width} at {sae.cfg.site}",
                                 [(result, caption)], model=model, task="features", tags=["sae"])
    print(f"stored specimen {spec.uid[:8]} {spec.name!r}")
    return 0


def _path_arg(args) -> str:
    if not args.model:
        raise ValueError(f"sae {args.action} needs the dictionary's folder: mechscope sae {args.action} PATH")
    return args.model


def _info(args) -> int:
    """Format, architecture, sites and sizes of a dictionary folder."""
    from pathlib import Path

    from ..sae.formats import dictionary_format, load_dictionary

    path = _path_arg(args)
    if dictionary_format(path) == "circuit-tracer":
        return _set_info(path)
    sae = load_dictionary(path, site=args.site, target_site=args.target_site)
    c = sae.cfg
    kind = ("transcoder" + (" with a skip connection" if c.skip else "")) if c.transcoder else "SAE"
    if c.k:
        rule = f"k = {c.k} per row"
    elif sae.threshold is not None:
        rule = f"threshold median {float(sae.threshold.detach().median()):.4g}"
    else:
        rule = "ReLU"
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    size = lambda n: f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"  # noqa: E731
    files = ", ".join(f"{f.name} {size(f.stat().st_size)}" for f in sorted(folder.iterdir()) if f.is_file())
    head = f", head {c.head}" if c.head is not None else ""
    rows = [("format", dictionary_format(path)), ("dictionary", f"{c.arch} {kind}"),
            ("reads", f"{c.site or '(not named: give --site)'}{head}, d_in {c.d_in}"),
            *([("writes", f"{c.target_site}, d_out {c.d_out}")] if c.transcoder else []),
            ("latents", f"{c.width:,} ({rule})"), ("input", {"none": "as it is", "center": "centred per row",
                                                         "rescale": "rescaled to norm √d_in per row",
                                                         "layer_norm": "layer-normalised per row"}[c.input_norm]),
            ("model", c.model or "(not named)"), ("files", files)]
    for key, value in rows:
        print(f"{key:<11}{value}")
    return 0


def _set_info(path: str) -> int:
    from ..sae.transcoder_sets import CrossLayerTranscoder, load_transcoder_set

    tset = load_transcoder_set(path)
    if isinstance(tset, CrossLayerTranscoder):
        rows = [("format", "circuit-tracer cross-layer transcoder"),
                ("layers", f"{tset.n_layers}: layer l reads {tset.sites[0].replace('0', 'l', 1)}, writes to "
                           f"{tset.targets[0].replace('0', 'l', 1)} and every later layer's"),
                ("latents", f"{tset.width:,} per layer ({'JumpReLU' if tset.threshold is not None else 'ReLU'})"),
                ("widths", f"d_in {tset.d_in}, d_out {tset.d_out}"), ("model", tset.model or "(not named)")]
    else:
        first = tset[0].cfg
        rows = [("format", "circuit-tracer transcoder set (one transcoder per layer)"),
                ("layers", f"{len(tset)}: layer l reads {first.site.replace('.0.', '.l.', 1)}, writes "
                           f"{first.target_site.replace('.0.', '.l.', 1)}"),
                ("latents", f"{first.width:,} per layer ({first.arch}{', skip' if first.skip else ''})"),
                ("widths", f"d_in {first.d_in}, d_out {first.d_out}"), ("model", tset.model or "(not named)")]
    for key, value in rows:
        print(f"{key:<11}{value}")
    return 0


def _convert(args) -> int:
    """Write a dictionary in another format, then read the copy back and compare outputs."""
    import torch

    from ..sae.formats import load_dictionary, save_saelens, save_sparsify

    path = _path_arg(args)
    if not args.out_path:
        raise ValueError("sae convert needs where to write: mechscope sae convert PATH OUT --to saelens|sparsify|mechscope")
    sae = load_dictionary(path, site=args.site, target_site=args.target_site)
    writer = {"saelens": save_saelens, "sparsify": save_sparsify, "mechscope": lambda d, out: d.save(out)}[args.to]
    out = writer(sae, args.out_path)
    back = load_dictionary(out, site=sae.cfg.site, target_site=sae.cfg.target_site if sae.cfg.transcoder else None)
    x = torch.randn(256, sae.cfg.d_in, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y, y2 = sae(x), back(x)
        diff = float((y - y2).abs().max() / y.abs().max().clamp(min=1e-12))
    print(f"wrote {out} ({args.to}); read back, its outputs on 256 random rows differ by {diff:.1e} (relative)")
    if diff > 1e-5:
        raise ValueError(f"the converted dictionary's outputs differ by {diff:.1e} (relative) from the original")
    return 0


def _transcoders(args) -> int:
    from ..models.load import load
    from ..report.page import page
    from .sae_online import run_transcoders

    model = load(args.model, device=args.device)
    return run_transcoders(model, args, page)


def add(sub) -> None:
    """Declare this module's commands and their arguments on the subparsers ``sub``."""
    p = sub.add_parser("transcoders", help="train a transcoder for every layer online (one forward feeds all), "
                                           "resumable; then score them together on held-out text")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("directory", help="where the transcoders and the run's checkpoints go (an interrupted run resumes)")
    p.add_argument("--tokens", type=int, default=3_000_000, help="training tokens (default 3M: for SmolLM2 ~2.6 h on 2 "
                                                                  "CPU cores, 8.6 min on an H200 with --device cuda)")
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--k", type=int, default=32, help="latents per token (topk)")
    p.add_argument("--layers", help="e.g. 0-29 or 3,7 (default: every layer)")
    p.add_argument("--context", type=int, default=128, help="tokens per block")
    p.add_argument("--batch-size", type=int, default=1024, help="rows per step (each step is one forward of batch / context blocks)")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate (Adam, warmed up and decayed)")
    p.add_argument("--corpora", default="shakespeare,sotu,brown",
                   help="comma-separated: shakespeare, sotu, brown (`make corpora` fetches the last two)")
    p.add_argument("--eval-blocks", type=int, default=32, help="held-out blocks to score the transcoders on (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="run the model and train on this device (cpu, cuda); checkpoints resume on any")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--page", default="mechscope-transcoders.html", help="HTML page to write")
    p.add_argument("--archive", help=ARCHIVE_HELP + "; the training curves and the scores are stored there when given")
    p.set_defaults(fn=_transcoders)

    p = sub.add_parser("sae", help="sparse autoencoders: harvest activations, train, evaluate, feature dashboards; "
                                   "info and convert for SAELens, sparsify and Gemma Scope files")
    p.add_argument("action", choices=["harvest", "train", "eval", "dashboard", "info", "convert"])
    p.add_argument("model", nargs="?", metavar="MODEL|PATH",
                   help=MODEL_HELP + " (harvest; eval/dashboard default to the SAE's own); info/convert: the "
                                     "dictionary's folder (mechscope, SAELens, sparsify or Gemma Scope)")
    p.add_argument("out_path", nargs="?", metavar="OUT", help="convert: the folder to write")
    p.add_argument("--to", default="saelens", choices=["saelens", "sparsify", "mechscope"], help="convert: the format")
    p.add_argument("--site", help="harvest: the site to store (default blocks.12.resid_post); otherwise the site "
                                  "a dictionary reads, where its files do not say (Gemma Scope)")
    p.add_argument("--target-site", help="harvest: also store this site (a transcoder's target); otherwise the site "
                                         "a transcoder writes, where its files do not say")
    p.add_argument("--other-model", action="store_true",
                   help="eval/dashboard: use a dictionary whose files name another model")
    p.add_argument("--store", default="sae-store", help="the activation store directory")
    p.add_argument("--target", help="a second store: the transcoder's target activations")
    p.add_argument("--blocks", type=int, default=None, help="corpus blocks (harvest: 256; eval/dashboard: 32/64)")
    p.add_argument("--context", type=int, default=128, help="tokens per block")
    p.add_argument("--shard-tokens", type=int, default=65_536)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--arch", default="topk", choices=["relu", "topk", "batchtopk", "jumprelu"])
    p.add_argument("--k", type=int, default=32, help="latents per token (topk, batchtopk)")
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--sparsity", type=float, help="λ of the L1 (relu) or L0 (jumprelu) loss")
    p.add_argument("--skip", action="store_true", help="transcoder skip connection")
    p.add_argument("--batch-size", type=int, default=None, help="rows per step (train: 4096) / blocks per forward (harvest: 8)")
    p.add_argument("--steps", type=int, help="training steps (default: --epochs passes over the store)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="run on this device (cpu, cuda); under torchrun, cuda means each rank's own GPU")
    p.add_argument("--out", default="sae", help="train: where the SAE and its checkpoint go")
    p.add_argument("--sae", default="sae", help="eval/dashboard: the dictionary's folder (any format `sae info` reads)")
    p.add_argument("--features", default="0-19", help="dashboard: features, e.g. 0-99 or 3,17,40-42")
    p.add_argument("--page", help="HTML page to write (eval/dashboard)")
    p.add_argument("--neuronpedia", metavar="FILE", help="dashboard: also write the cards as a Neuronpedia batch (JSON)")
    p.add_argument("--neuronpedia-set", help="dashboard: the Neuronpedia source set id (default LAYER-SITE-mechscope)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--archive", help=ARCHIVE_HELP)
    p.set_defaults(fn=_sae)
