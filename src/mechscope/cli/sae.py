"""`mechscope sae harvest|train|eval|dashboard|explain|info|convert` (torchrun-aware: harvest and train divide their
own work, eval and dashboard their sweeps) and `mechscope transcoders` (every layer's, trained online)."""

from __future__ import annotations

import os

from .common import MODEL_HELP, command, emit, group, outputs, quiet, write_text


def _self_managed(run):
    """``run(args, device)`` inside the process group when under torchrun (the command divides its own work)."""
    def in_group(args) -> int:
        from ..distributed import group

        with group(args.device) as device:
            return run(args, device)
    return in_group


def _harvest(args, device: str | None) -> int:
    import torch

    from ..models.load import load
    from ..sae import harvest

    if bool(args.target_site) != bool(args.target_dir):
        raise ValueError("a transcoder's target needs both --target-site SITE and --target-dir DIR (its store)")
    model = load(args.model, device=device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    sites, dirs = [args.site], [args.dir]
    if args.target_site:  # a transcoder's input and target, from the same forwards
        sites, dirs = sites + [args.target_site], dirs + [args.target_dir]
    for store in harvest(model, sites, dirs, n_blocks=args.blocks, context=args.context, batch_size=args.batch_size,
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
    sae.fit(store, target, batch_size=args.batch_size, steps=args.steps, epochs=args.epochs, lr=args.lr, seed=args.seed,
            checkpoint=args.dir, progress=not args.quiet, device=device)
    print(sae.log_.summary())
    print(f"wrote {args.dir} (config.json, sae.safetensors; checkpoint.pt resumes an interrupted run)")
    return 0


def _dictionary_and_model(args):
    """The dictionary at ``args.path`` and its model (``--model``, else the one its files name), read again
    against the model: checked (name, site, width) and, where needed, rewritten for its sites."""
    from ..models.load import load
    from ..sae import load_dictionary

    sae = load_dictionary(args.path, site=args.site, target_site=args.target_site)
    if not (args.model or sae.cfg.model):
        raise ValueError(f"{args.path}: the dictionary's config names no model; give --model MODEL")
    model = load(args.model or sae.cfg.model, device=args.device)
    return load_dictionary(args.path, model.device, model=model, site=args.site, target_site=args.target_site,
                           other_model=args.other_model), model


def _eval(args) -> int:
    from ..sae.evaluate import evaluate

    sae, model = _dictionary_and_model(args)
    result = evaluate(sae, model, n_blocks=args.blocks, context=args.context, progress=not args.quiet)
    print(result.summary())
    what = f"{sae.cfg.arch} × {sae.cfg.width} at {sae.cfg.site}"
    emit(args, [(result, f"{sae.cfg.arch} SAE × {sae.cfg.width} at {sae.cfg.site}")], f"SAE eval: {what}",
         model=model, task="features", tags=["sae"])
    return 0


def _dashboard(args) -> int:
    from ..sae.dashboard import feature_cards, parse_features

    sae, model = _dictionary_and_model(args)
    cards = feature_cards(sae, model, parse_features(args.features, sae.cfg.width), n_blocks=args.blocks,
                          progress=not args.quiet)
    if os.path.isdir(args.path):  # explanations written for these weights (``sae explain``) go on the cards
        from ..explain.sidecar import card_explanations, dictionary_fingerprint, read_sidecar

        cards = cards.with_explanations(card_explanations(read_sidecar(args.path, dictionary_fingerprint(sae))))
    if args.neuronpedia:
        import json

        set_name = args.neuronpedia_set or f"{cards.layer}-{sae.cfg.site.split('.')[-1]}-mechscope"
        write_text(args.neuronpedia, json.dumps(cards.to_neuronpedia(model.name, set_name)),
                   f"Neuronpedia dashboard batch, source set {set_name!r}")
    print(cards.summary())
    emit(args, [(cards, f"features {args.features}")],
         f"SAE dashboard: {sae.cfg.arch} × {sae.cfg.width} at {sae.cfg.site}", model=model, task="features",
         tags=["sae"])
    return 0


def _explain_units(args):
    """(units, model, dictionary or None) for ``sae explain``: ``neurons:LAYER``, a transcoder set's or CLT's
    layer (``--layer``), or a dictionary folder."""
    from pathlib import Path

    from ..explain import dictionary_units, neuron_units
    from ..models.load import load
    from ..sae.dashboard import parse_features

    if args.path.startswith("neurons:"):
        if not args.model:
            raise ValueError("neurons:LAYER needs --model MODEL")
        model = load(args.model, device=args.device)
        try:
            layer = int(args.path.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"{args.path!r}: write neurons:LAYER, LAYER in 0..{model.cfg.n_layers - 1}") from None
        if not 0 <= layer < model.cfg.n_layers:
            raise ValueError(f"{args.path!r}: {model.name} has layers 0..{model.cfg.n_layers - 1}")
        from ..checks import indices

        return neuron_units(model, layer, indices(args.features, "neuron", model.cfg.d_mlp)), model, None
    if (Path(args.path) / "config.yaml").exists():  # a transcoder set or CLT (circuit-tracer's layout)
        from ..sae.transcoder_sets import load_transcoders

        if args.layer is None:
            raise ValueError(f"{args.path} is a transcoder set: say which layer's features with --layer L")
        if not args.model:
            raise ValueError(f"{args.path} is a transcoder set: give --model MODEL")
        model = load(args.model, device=args.device)
        tset = load_transcoders(args.path, model, model.device)
        sae = tset.layer_coder(args.layer) if hasattr(tset, "layer_coder") else tset[args.layer]
    else:
        sae, model = _dictionary_and_model(args)
    return dictionary_units(sae, model, parse_features(args.features, sae.cfg.width)), model, sae


def _explain(args) -> int:
    from ..explain import ExampleConfig, explain_units
    from ..explain.clients import default_cache
    from ..explain.sidecar import dictionary_fingerprint, write_sidecar

    units, model, sae = _explain_units(args)
    config = ExampleConfig(n_train=args.n_train, n_test=args.n_test, n_negatives=args.n_negatives,
                           ctx_len=args.ctx_len, n_quantiles=args.quantiles)
    cache = False if args.no_cache else (args.cache or default_cache())
    scorers = [s.strip() for s in args.scorers.split(",") if s.strip()]
    result = explain_units(units, model, explainer=args.explainer, scorer=args.scorer, scorers=scorers,
                           baselines=() if args.no_baselines else ("top_tokens", "shuffled"), config=config,
                           n_blocks=args.blocks, length=args.ctx_len * max(1, args.context // args.ctx_len),
                           corpora=[c.strip() for c in args.corpora.split(",") if c.strip()], n_shown=args.shown,
                           negatives=args.negatives, cache=cache, endpoint_model=args.endpoint_model,
                           intruder_shown=args.intruder_shown, simulation_mode=args.simulation_mode,
                           progress=not args.quiet)
    print(result.summary())
    print("chat usage: " + "; ".join(f"{k}: {v['requests']} requests ({v['cache_hits']} cached), "
                                     f"{v['prompt_tokens']:,} prompt + {v['completion_tokens']:,} answer tokens"
                                     for k, v in result.usage.items()))
    if args.neuronpedia:
        from ..explain.neuronpedia import write_explanations

        layer = result.layer if result.layer >= 0 else 0
        source = args.neuronpedia_set or f"{layer}-{result.site.split('.')[-1]}-mechscope"
        for path in write_explanations(result, args.neuronpedia, model.name, source):
            print(f"wrote {path}")
    if sae is not None and args.layer is None and not args.no_sidecar:
        print(f"wrote {write_sidecar(result, args.path, dictionary_fingerprint(sae))}")
    emit(args, [(result, f"{units.kind}s {args.features} at {units.site}")],
         f"explanations: {units.kind}s at {units.site}", model=model, task="features", tags=["explanations"])
    return 0


def _info(args) -> int:
    """Format, architecture, sites and sizes of a dictionary folder."""
    from pathlib import Path

    from ..sae.formats import dictionary_format, load_dictionary

    from ..sae.config import SitesNotNamed

    path = args.path
    if dictionary_format(path) == "circuit-tracer":
        return _set_info(path)
    try:
        sae = load_dictionary(path, site=args.site, target_site=args.target_site)
    except SitesNotNamed as err:  # describe what the files do say, and what is missing
        k = err.known
        rows = [("format", k["format"]), ("dictionary", f"{k['dictionary']} (transcoder)"),
                ("reads", f"{k['reads'] or '(not named: give --site)'}, d_in {k['d_in']}"),
                ("writes", f"(not named: give --target-site), d_out {k['d_out']}"), ("latents", f"{k['width']:,}"),
                ("model", k["model"] or "(not named)")]
        for key, value in rows:
            print(f"{key:<11}{value}")
        print(f"missing: {err}")
        return 0
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

    path = args.path
    sae = load_dictionary(path, site=args.site, target_site=args.target_site)
    writer = {"saelens": save_saelens, "sparsify": save_sparsify, "mechscope": lambda d, out: d.save(out)}[args.to]
    out = writer(sae, args.dir)
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
    from ..checks import indices
    from ..models.load import load
    from ..sae.evaluate import evaluate_transcoders
    from ..sae.online import train_transcoders, training_blocks
    from ..sae.transcoder_sets import load_transcoders

    model = load(args.model, device=args.device)
    corpora = [c.strip() for c in args.corpora.split(",") if c.strip()]
    log = train_transcoders(model, args.dir, layers=indices(args.layers, "layer") if args.layers else None,
                            width=args.width, k=args.k, tokens=args.tokens, batch_size=args.batch_size,
                            context=args.context, corpora=corpora, seed=args.seed, lr=args.lr, progress=not args.quiet)
    print(log.summary())
    results = [(log, "training curves, every layer")]
    if args.eval_blocks:
        held_out = training_blocks(model.tokenizer, args.context, corpora, args.seed, split="test")[:args.eval_blocks]
        fidelity = evaluate_transcoders(model, load_transcoders(args.dir, model, model.device), held_out,
                                        progress=not args.quiet)
        print(fidelity.summary())
        results.append((fidelity, "all transcoders spliced together on held-out text"))
    emit(args, results, f"transcoders: {model.name}", model=model, tags=["transcoders"])
    return 0


def _dictionary(p, *, model: bool = False, path_help: str = "") -> None:
    """A dictionary's folder, the sites its files may not name, and (``model``) the model it is run on."""
    p.add_argument("path", help=path_help or "the dictionary's folder (mechscope, SAELens, sparsify, Gemma Scope; "
                                             "circuit-tracer for info)")
    p.add_argument("--site", help="the site it reads, where its files do not say (Gemma Scope)")
    p.add_argument("--target-site", help="the site a transcoder writes, where its files do not say")
    if model:
        p.add_argument("--model", help=MODEL_HELP + " (default: the one the dictionary's files name)")
        p.add_argument("--other-model", action="store_true", help="use a dictionary whose files name another model")
        p.add_argument("--context", type=int, default=128, help="tokens per corpus block")
        p.add_argument("--device", help="run on this device (cpu, cuda); under torchrun each rank's own GPU")
        quiet(p)


def add(sub) -> None:
    """Declare `transcoders`, and `sae` with its subcommands, on the subparsers ``sub``."""
    actions = group(sub, "sae", "sparse dictionaries: harvest, train, eval, dashboard; info and convert any format",
                    ["mechscope sae harvest smollm2-135m --dir store", "mechscope sae train store --dir sae",
                     "mechscope sae eval sae", "mechscope sae dashboard sae --features 0-99",
                     "mechscope sae info gemma-scope/layer_7/width_16k/average_l0_40",
                     "mechscope sae convert sae --to saelens --dir sae-saelens"])

    p = command(actions, "harvest", "store a site's activations over the corpus (sharded; resumable)",
                ["mechscope sae harvest smollm2-135m --site blocks.12.resid_post --blocks 200 --dir store",
                 "mechscope sae harvest MODEL --site blocks.3.resid_mid --dir in --target-site blocks.3.mlp.out "
                 "--target-dir out   # a transcoder's pair"], parent="sae")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--dir", required=True, help="the activation store to write")
    p.add_argument("--site", default="blocks.12.resid_post", help="the site to store (default blocks.12.resid_post)")
    p.add_argument("--target-site", help="also store this site from the same forwards (a transcoder's target)")
    p.add_argument("--target-dir", help="the target's store (with --target-site)")
    p.add_argument("--blocks", type=int, default=256, help="corpus blocks (default 256)")
    p.add_argument("--context", type=int, default=128, help="tokens per block")
    p.add_argument("--batch-size", type=int, default=8, help="blocks per forward")
    p.add_argument("--shard-tokens", type=int, default=65_536)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", help="run on this device (cpu, cuda); under torchrun, cuda means each rank's own GPU")
    quiet(p)
    p.set_defaults(fn=_self_managed(_harvest))

    p = command(actions, "train", "train a sparse autoencoder (or, with --target, a transcoder) on a store; resumable",
                ["mechscope sae train store --arch topk -k 32 --width 2304 --epochs 10 --dir sae",
                 "mechscope sae train in --target out --skip --dir transcoder"], parent="sae")
    p.add_argument("store", help="the activation store to train on (`sae harvest` writes it)")
    p.add_argument("--dir", required=True, help="where the dictionary and its checkpoint go (a rerun resumes)")
    p.add_argument("--target", metavar="STORE", help="a second store: the transcoder's target activations")
    p.add_argument("--arch", default="topk", choices=["relu", "topk", "batchtopk", "jumprelu"])
    p.add_argument("-k", "--k", type=int, default=32, help="latents per token (topk, batchtopk)")
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--sparsity", type=float, help="λ of the L1 (relu) or L0 (jumprelu) loss")
    p.add_argument("--skip", action="store_true", help="transcoder skip connection")
    p.add_argument("--batch-size", type=int, default=4096, help="rows per step")
    p.add_argument("--steps", type=int, help="training steps (default: --epochs passes over the store)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="train on this device (cpu, cuda); under torchrun, cuda means each rank's own GPU")
    quiet(p)
    p.set_defaults(fn=_self_managed(_train))

    p = command(actions, "eval", "a dictionary's fidelity on held-out text: FVU, CE loss recovered, L0, dead features",
                ["mechscope sae eval sae", "mechscope sae eval saelens-run/blocks.6.hook_resid_post --model smollm2-135m"],
                parent="sae")
    _dictionary(p, model=True)
    p.add_argument("--blocks", type=int, default=32, help="corpus blocks (default 32)")
    outputs(p, "sae-eval")
    p.set_defaults(fn=_eval)

    p = command(actions, "dashboard", "feature cards: top examples, activation histogram, top logits",
                ["mechscope sae dashboard sae --features 0-99", "mechscope sae dashboard sae --neuronpedia cards.json"],
                parent="sae")
    _dictionary(p, model=True)
    p.add_argument("--features", default="0-19", help="features, e.g. 0-99 or 3,17,40-42")
    p.add_argument("--blocks", type=int, default=64, help="corpus blocks (default 64)")
    p.add_argument("--neuronpedia", metavar="FILE", help="also write the cards as a Neuronpedia batch (JSON)")
    p.add_argument("--neuronpedia-set", help="the Neuronpedia source set id (default LAYER-SITE-mechscope)")
    outputs(p, "sae-dashboard")
    p.set_defaults(fn=_dashboard)

    p = command(actions, "explain", "explain features (or neurons) with a chat model and score the explanations",
                ["mechscope sae explain sae --features 0-19   # the dictionary's model explains and scores",
                 "mechscope sae explain neurons:3 --model smollm2-135m --features 0-9 --n-test 20 --n-negatives 20",
                 "mechscope sae explain sae --explainer http://127.0.0.1:8000/v1 --endpoint-model my-model",
                 "mechscope sae explain mechscope-transcoders/smollm2-135m-quick --layer 12 --model smollm2-135m"],
                parent="sae")
    _dictionary(p, model=True, path_help="the dictionary's folder (mechscope, SAELens, sparsify, Gemma Scope), a "
                                         "transcoder set or CLT folder (with --layer), or neurons:LAYER for an MLP's neurons")
    p.add_argument("--layer", type=int, help="a transcoder set's (or CLT's) layer whose features to explain")
    p.add_argument("--features", default="0-9", help="features (or neurons), e.g. 0-99 or 3,17,40-42")
    p.add_argument("--explainer", help="who writes explanations: a model name mechscope loads, or an OpenAI-compatible "
                                       "URL (http://host:port/v1; key from $OPENAI_API_KEY). Default: the model")
    p.add_argument("--scorer", help="who scores them (same forms; default: the explainer)")
    p.add_argument("--endpoint-model", help="the model name an endpoint serves (default $MECHSCOPE_EXPLAINER_MODEL)")
    p.add_argument("--scorers", default="detection,fuzz", help="comma-separated: detection, fuzz, simulation (token-by-"
                   "token activations predicted from the explanation), intruder (the odd-one-out test of the unit itself)")
    p.add_argument("--simulation-mode", choices=["logprobs", "json"],
                   help="how the simulation scorer predicts: from a local model's log-probabilities (default for a "
                        "local scorer) or as a JSON answer (default for an endpoint)")
    p.add_argument("--intruder-shown", type=int, default=5, help="contexts per intruder prompt (default 5)")
    p.add_argument("--shown", type=int, default=1, help="contexts per scorer prompt (default 1, for small models)")
    p.add_argument("--negatives", default="random", choices=["random", "hard"],
                   help="non-activating contexts: random ones, or look-alikes holding the tokens it fires on")
    p.add_argument("--n-train", type=int, default=40, help="contexts the explainer reads (delphi: 40)")
    p.add_argument("--n-test", type=int, default=50, help="activating contexts scored (delphi: 50)")
    p.add_argument("--n-negatives", type=int, default=50, help="non-activating contexts scored (delphi: 50)")
    p.add_argument("--ctx-len", type=int, default=32, help="tokens per context (delphi: 32)")
    p.add_argument("--quantiles", type=int, default=10, help="activation quantiles the contexts are drawn from (delphi: 10)")
    p.add_argument("--blocks", type=int, default=256, help="corpus blocks to find contexts in (default 256)")
    p.add_argument("--corpora", default="shakespeare", help="comma-separated: shakespeare, sotu, brown")
    p.add_argument("--no-baselines", action="store_true", help="do not score top-token and shuffled baselines")
    p.add_argument("--cache", metavar="FILE", help="the reply cache (SQLite; default: the user cache's "
                                                   "explain/replies.sqlite): a rerun asks nothing twice")
    p.add_argument("--no-cache", action="store_true", help="ask every question afresh")
    p.add_argument("--neuronpedia", metavar="DIR",
                   help="also write the explanations as Neuronpedia exports them: DIR/explanations/batch-N.jsonl.gz")
    p.add_argument("--neuronpedia-set", help="the Neuronpedia source id (default LAYER-SITE-mechscope)")
    p.add_argument("--no-sidecar", action="store_true", help="do not add the explanations to the dictionary folder's "
                                                             "explanations.json")
    outputs(p, "sae-explain")
    p.set_defaults(fn=_explain)

    p = command(actions, "info", "a dictionary's format, architecture, sites and sizes",
                "mechscope sae info gemma-scope/layer_7/width_16k/average_l0_40 --site blocks.7.resid_post",
                parent="sae")
    _dictionary(p)
    p.set_defaults(fn=_info)

    p = command(actions, "convert", "write a dictionary in another format, then read it back and compare outputs",
                "mechscope sae convert sae --to saelens --dir sae-saelens", parent="sae")
    _dictionary(p)
    p.add_argument("--to", required=True, choices=["saelens", "sparsify", "mechscope"], help="the format to write")
    p.add_argument("--dir", required=True, help="the folder to write")
    p.set_defaults(fn=_convert)

    p = command(sub, "transcoders", "train every layer's transcoder online and score them together",
                "mechscope transcoders smollm2-135m --dir transcoders/smollm2-135m --tokens 3000000")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--dir", required=True,
                   help="where the transcoders and the run's checkpoints go (an interrupted run resumes)")
    p.add_argument("--tokens", type=int, default=3_000_000, help="training tokens (default 3M: for SmolLM2 ~2.6 h on 2 "
                                                                  "CPU cores, 8.6 min on an H200 with --device cuda)")
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("-k", "--k", type=int, default=32, help="latents per token (topk)")
    p.add_argument("--layers", help="e.g. 0-29 or 3,7 (default: every layer)")
    p.add_argument("--context", type=int, default=128, help="tokens per block")
    p.add_argument("--batch-size", type=int, default=1024, help="rows per step (each step is one forward of batch / context blocks)")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate (Adam, warmed up and decayed)")
    p.add_argument("--corpora", default="shakespeare,sotu,brown",
                   help="comma-separated: shakespeare, sotu, brown (`make corpora` fetches the last two)")
    p.add_argument("--eval-blocks", type=int, default=32, help="held-out blocks to score the transcoders on (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="run the model and train on this device (cpu, cuda); checkpoints resume on any")
    quiet(p)
    outputs(p, "transcoders")
    p.set_defaults(fn=_transcoders)
