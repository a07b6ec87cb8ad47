"""Commands that find circuits: patch (components on a task), circuit (edges on a task), graph (features on a prompt)."""

from __future__ import annotations

from .common import MODEL_HELP, command, emit, outputs, quiet


def _patch(args) -> int:
    from ..models.load import load
    from ..components.patching import activation_patching, attribution_patching, compare_patching
    from ..tasks import make_task

    model = load(args.model)
    kwargs = {"seed": args.seed} | ({"n": args.n} if args.task != "factual" else {})
    task = make_task(args.task, model, **kwargs).solved_by(model)
    if args.sweep in ("resid", "attn", "mlp", "head_pos"):
        task = task.one_length()
    print(task.evaluate(model).summary())
    if args.method == "attribution":
        result = attribution_patching(model, task, args.sweep, direction=args.direction)
    else:
        result = activation_patching(model, task, args.sweep, direction=args.direction, batch_size=args.batch_size,
                                     progress=not args.quiet)
    print(result.summary())
    if args.method == "both":
        result = compare_patching(result, attribution_patching(model, task, args.sweep, direction=args.direction))
        print(result.summary())
    findings = [(result, f"{args.method} patching of {args.sweep} ({args.direction})")]
    emit(args, findings, f"{args.method} patching: {args.task}", model=model, task=args.task, tags=["patching"])
    return 0


def _circuit(args) -> int:
    from ..circuits import discover
    from ..models.load import load
    from ..tasks import make_task

    compiled = None
    if args.task.startswith("compiled:"):  # a compiled program: its own model, and a truth to score against
        from ..compile import compile_example
        from ..compile.task import compiled_task

        compiled = compile_example(args.task.removeprefix("compiled:"))
        model, task = compiled.model, compiled_task(compiled, args.n, seed=args.seed)
    elif args.model is None:
        raise ValueError(f"--task {args.task} needs a MODEL (an embedded name or a local HF directory)")
    else:
        model = load(args.model)
        kwargs = {"seed": args.seed} | ({"n": args.n} if args.task != "factual" else {})
        task = make_task(args.task, model, **kwargs).solved_by(model)
    print(task.evaluate(model).summary())
    circuit = discover(model, task, args.method, faithfulness=args.faithfulness, ablation=args.ablation,
                       steps=args.steps, threshold=args.threshold, measure=args.measure, candidates=args.candidates,
                       progress=not args.quiet)
    scores = circuit.edge_scores
    if scores is not None:
        print(scores.summary())
    print(circuit.summary())
    total = circuit.extra.get("total_edges")
    if total:
        print(f"{len(circuit.edges)} of {total} edges ({len(circuit.edges) / total:.2%}), "
              f"{len(circuit.nodes)} components; {circuit.extra.get('ablation')} ablation")
    if compiled is not None:
        from ..compile.task import inert_edges

        truth = {(a, b) for a, b, _ in compiled.circuit().edges}
        inert = {(a, b) for a, b, _ in inert_edges(compiled, task, args.ablation)}
        found = {(a, b) for a, b, _ in circuit.edges}
        live = truth - inert
        print(f"against the true circuit ({len(truth)} edges, {len(inert)} inert on these inputs under "
              f"{args.ablation} ablation): {len(found & live)} of {len(live)} found, "
              f"{len(found - truth)} false edges; missed: {sorted(live - found)[:6]}")
    notes = f"{args.method} circuit of {args.task}, smallest reaching faithfulness {args.faithfulness}" \
        if args.method != "acdc" else f"ACDC circuit of {args.task}, threshold {args.threshold}"
    findings = [(circuit, notes)] + ([(scores, f"{args.method} score of every edge")] if scores is not None else [])
    emit(args, findings, f"{args.method} circuit: {args.task}", name=f"{args.task} circuit ({args.method})",
         model=model, task=args.task, tags=["circuit"])
    return 0


def _graph(args) -> int:
    import json

    import torch

    from ..models.load import load
    from ..sae.transcoder_sets import load_transcoders
    from ..tracing import attribution_graph, to_neuronpedia
    from ..tracing.prune import check_thresholds

    check_thresholds(args.node_threshold, args.edge_threshold)  # before minutes of computing, not after
    if args.model.startswith("compiled:"):
        from ..compile import compile_example

        model = compile_example(args.model.removeprefix("compiled:")).model
    else:
        model = load(args.model)
    if args.transcoders is not None:
        transcoders = load_transcoders(args.transcoders, model=model)
    else:  # a compiled program's MLPs are exact transcoders; any other model needs trained ones
        from ..compile import mlp_transcoders

        transcoders = mlp_transcoders(model)
    targets = args.target or None
    graph = attribution_graph(model, transcoders, args.prompt, targets=targets, max_feature_nodes=args.max_features,
                              batch_size=args.batch_size, progress=not args.quiet)
    print(graph.summary())
    if args.cards:
        from ..tracing.view import graph_cards

        graph_cards(graph, model, transcoders, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold,
                    n_blocks=args.cards, progress=not args.quiet)
    if args.supernodes:
        from ..tracing.view import set_supernodes

        try:
            with open(args.supernodes, encoding="utf-8") as f:
                named = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"--supernodes {args.supernodes}: not a readable JSON file ({err})") from None
        if not isinstance(named, dict):
            raise ValueError(f"--supernodes {args.supernodes}: want a JSON object {{name: [node id, ...]}}")
        groups = set_supernodes(graph, named)
        print(f"{len(groups)} supernodes named by hand: " + "; ".join(f"{g[0]} ({len(g) - 1})" for g in groups))
    elif args.group and not args.explain_features:  # with explanations: grouped by them, once they are written
        from ..tracing.view import group_features

        groups = group_features(graph, model, transcoders, node_threshold=args.node_threshold,
                                edge_threshold=args.edge_threshold)
        print(f"{len(groups)} supernodes: " + "; ".join(f"{g[0]} ({len(g) - 1})" for g in groups))
    if args.explain:
        from ..tracing.attention import explain_edges

        explained = explain_edges(graph, model, transcoders, top_edges=args.explain,
                                  node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
        for key, e in list(explained.items())[:5]:
            print(f"{key} ({e['edge']:+.3g}): " + ", ".join(f"{h} {v:+.3g}" for h, v in e["heads"][:3]))
    explanations = []
    if args.explain_features:
        from ..explain import ExampleConfig
        from ..explain.graph import explain_graph

        n = args.explain_contexts
        explanations = explain_graph(graph, model, transcoders, node_threshold=args.node_threshold,
                                     edge_threshold=args.edge_threshold, max_features=args.explain_features,
                                     explainer=args.explainer, endpoint_model=args.endpoint_model,
                                     config=ExampleConfig(n_test=n, n_negatives=n, n_train=min(40, n),
                                                          n_quantiles=min(10, max(1, n))),
                                     progress=not args.quiet)
        for r in explanations:
            print(r.summary().split("\n")[0])
        if args.group and not args.supernodes:  # supernodes from what the features mean and where their effect goes
            from ..tracing.supernodes import graph_texts, propose_supernodes

            groups = propose_supernodes(graph, graph_texts(graph), node_threshold=args.node_threshold,
                                        edge_threshold=args.edge_threshold)
            graph.extra["supernodes"] = groups
            print(f"{len(groups)} supernodes from explanations and edge profiles: " +
                  "; ".join(f"{g[0]} ({len(g) - 1})" for g in groups))
    findings = [(graph, f"attribution graph of {args.prompt!r}")]
    findings += [(r, f"explanations of the graph's features at {r.site}") for r in explanations]
    if args.validate:
        from ..tracing import validate_graph

        ids = graph.node_ids()
        features = set(ids[:graph.n_features])  # a supernode's feature members, by id
        groups = [[n for n in sn[1:] if n in features] for sn in graph.extra.get("supernodes", [])]
        inf = graph.influence()[:graph.n_features]
        top = [[ids[i]] for i in torch.argsort(inf, descending=True)[:args.validate].tolist()]
        check = validate_graph(graph, model, transcoders, [g for g in groups if g] + top)
        print(check.summary())
        findings.append((check, "the graph's predictions tested by ablating its supernodes and top features"))
    kept = graph.prune(args.node_threshold, args.edge_threshold)
    print(f"kept {int(kept.nodes.sum())} nodes and {int(kept.edges.sum())} edges at node threshold "
          f"{args.node_threshold}, edge threshold {args.edge_threshold}; {graph.extra['seconds']:.1f} s")
    doc = None
    if args.json:  # the graph's JSON is the field's exchange format
        doc = to_neuronpedia(graph, slug=args.slug, node_threshold=args.node_threshold,
                             edge_threshold=args.edge_threshold, supernodes=graph.extra.get("supernodes"))
        print(f"the graph's JSON: {len(doc['nodes'])} nodes, {len(doc['links'])} links")
    emit(args, findings, f"Attribution graph: {args.prompt[:40]}", name=f"attribution graph: {args.prompt[:40]}",
         model=model, tags=["attribution-graph"], json_text=json.dumps(doc) if args.json else None)
    return 0


def add(sub) -> None:
    """Declare this module's commands and their arguments on the subparsers ``sub``."""
    p = command(sub, "patch", "activation patching of every component on a task (batched)",
                ["mechscope patch smollm2-135m --task ioi --sweep heads",
                 "mechscope patch smollm2-135m --task induction --method both --direction noising"])
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--task", default="ioi", choices=["ioi", "greater-than", "induction", "factual"])
    p.add_argument("--sweep", default="heads", choices=["resid", "attn", "mlp", "heads", "head_pos", "q", "k", "v"])
    p.add_argument("--direction", default="denoising", choices=["denoising", "noising"],
                   help="denoising: clean activations into the corrupted run; noising: the reverse")
    p.add_argument("--method", default="activation", choices=["activation", "attribution", "both"],
                   help="activation patching (batched forwards), attribution patching (gradient estimate: 2 "
                        "forwards + 1 backward), or both with their correlation")
    p.add_argument("-n", type=int, default=16, help="prompt pairs to generate (those the model solves are kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256, help="rows per forward pass")
    quiet(p)
    outputs(p, "patch")
    p.set_defaults(fn=_patch)

    from ..compile.programs import PROGRAMS

    p = command(sub, "circuit", "discover a circuit on a task: EAP, EAP-IG or ACDC, with its faithfulness",
                ["mechscope circuit smollm2-135m --task ioi --method eap-ig --faithfulness 0.8 --json ioi.json",
                 "mechscope circuit --task compiled:reverse --method acdc --ablation zero"])
    p.add_argument("model", nargs="?", help=MODEL_HELP + " (none for a compiled:PROGRAM task: the program is compiled)")
    p.add_argument("--task", default="ioi", choices=["ioi", "greater-than", "induction", "factual"]
                   + [f"compiled:{name}" for name in sorted(PROGRAMS)],
                   help="a behaviour, or compiled:PROGRAM — a compiled program, scored against its true circuit")
    p.add_argument("--method", default="eap-ig", choices=["eap", "eap-ig", "acdc"])
    p.add_argument("--faithfulness", type=float, default=0.8,
                   help="EAP / EAP-IG: keep the smallest circuit reaching this faithfulness")
    p.add_argument("--ablation", default="corrupted", choices=["corrupted", "mean", "resample", "zero"],
                   help="what an edge outside the circuit carries")
    p.add_argument("--steps", type=int, default=5, help="EAP-IG integration steps")
    p.add_argument("--threshold", type=float, default=0.01,
                   help="ACDC: cut an edge whose removal moves the measure less than this")
    p.add_argument("--measure", default="kl", choices=["kl", "task"],
                   help="ACDC: KL from the full model's last-token distribution, or the task metric's drop as a "
                        "fraction of clean − corrupted")
    p.add_argument("--candidates", type=int, help="ACDC: prune EAP-IG's best N edges instead of every edge "
                                                  "(the full graph of a real model takes hours on a CPU)")
    p.add_argument("-n", type=int, default=16, help="prompt pairs to generate (those the model solves are kept)")
    p.add_argument("--seed", type=int, default=0)
    quiet(p)
    outputs(p, "circuit")
    p.set_defaults(fn=_circuit)

    p = command(sub, "graph", "the attribution graph of a prompt through transcoder features",
                ['mechscope graph smollm2-135m "The capital of France is" --transcoders DIR --cards 32 --group',
                 'mechscope graph MODEL "prompt" --transcoders DIR --json graph.json   # circuit-tracer / Neuronpedia',
                 'mechscope graph compiled:reverse "a b c"   # a compiled program: its MLPs are exact transcoders'])
    p.add_argument("model", help=MODEL_HELP + "; or compiled:PROGRAM (compiled now), or a folder `mechscope compile "
                                              "--dir` wrote")
    p.add_argument("prompt", help="the prompt (a compiled program's: its tokens separated by spaces)")
    p.add_argument("--transcoders", metavar="DIR",
                   help="folder: a circuit-tracer transcoder set (config.yaml) or one dictionary folder per layer "
                        "(needed except for a compiled program, whose MLPs are exact transcoders)")
    p.add_argument("--target", action="append",
                   help="a token to explain (repeatable; default: the likeliest next tokens up to p = 0.95, at most 10)")
    p.add_argument("--node-threshold", type=float, default=0.8, help="keep nodes holding this share of the influence")
    p.add_argument("--edge-threshold", type=float, default=0.98, help="keep edges holding this share of the influence")
    p.add_argument("--max-features", type=int, help="visit at most this many features, most influential first")
    p.add_argument("--batch-size", type=int, default=32, help="targets per backward pass (copies of the prompt)")
    p.add_argument("--cards", type=int, metavar="BLOCKS",
                   help="feature cards for the kept features from this many corpus blocks (hover in the viewer)")
    p.add_argument("--group", action="store_true", help="propose supernodes (similar decoders or top tokens; with "
                   "--explain-features: similar explanations and edge profiles, one token position each)")
    p.add_argument("--supernodes", metavar="FILE",
                   help="supernodes named by hand, a JSON object {name: [node id, ...]} (instead of --group)")
    p.add_argument("--explain", type=int, metavar="EDGES",
                   help="the heads carrying the strongest EDGES position-crossing edges, and QK attributions")
    p.add_argument("--explain-features", type=int, metavar="N",
                   help="explain and score the N most influential kept features with a chat model (on their nodes)")
    p.add_argument("--explainer", help="who explains them: a model name mechscope loads or an OpenAI-compatible URL "
                                       "(default: the model itself, if it can chat)")
    p.add_argument("--endpoint-model", help="the model name an --explainer URL serves")
    p.add_argument("--explain-contexts", type=int, default=50, metavar="N",
                   help="activating and non-activating contexts each explanation is scored on (delphi: 50)")
    p.add_argument("--validate", type=int, metavar="K",
                   help="ablate each supernode and the K most influential features: the graph's prediction against "
                        "the frozen replacement model and the real model")
    p.add_argument("--slug", default="mechscope-graph", help="the graph's slug in its JSON")
    quiet(p)
    outputs(p, "graph", json_help="also write the pruned graph as circuit-tracer / Neuronpedia graph JSON to PATH")
    p.set_defaults(fn=_graph)
