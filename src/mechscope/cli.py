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


def _write_page(result, path: str) -> None:
    from .report.page import page

    with open(path, "w", encoding="utf-8") as f:
        f.write(page(result.title, result.html()))
    print(f"wrote {path}")


def _lens(args) -> int:
    from .lens import direct_logit_attribution, logit_lens
    from .models.load import load

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
    _write_page(lens, args.out)
    return 0


def _attribute(args) -> int:
    from .attribution import grad_x_input, saliency, token_ig, token_perturbation
    from .models.load import load

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
    _write_page(result, args.out)
    return 0


def _heads(args) -> int:
    from .heads import detect_heads
    from .models.load import load

    model = load(args.model)
    blocks = None
    if args.icl:
        from .data import token_blocks

        blocks = token_blocks(model.tokenizer, args.icl, 512, "test")
    result = detect_heads(model, batch=args.batch, length=args.length, k=args.k, seeds=args.seeds, text_blocks=blocks)
    print(f"{'rank':<5}" + "".join(f"{kind:>20}" for kind in ("induction", "previous", "duplicate")))
    tops = {kind: result.top(kind, args.top) for kind in ("induction", "previous", "duplicate")}
    for i in range(args.top):
        print(f"{i + 1:<5}" + "".join(f"{tops[kind][i][0]:>12} {tops[kind][i][1]:>7.2f}" for kind in tops))
    print(result.summary().split("\n", 3)[3])
    _write_page(result, args.out)
    if args.circuits:
        from .heads import head_circuits

        circuits = head_circuits(model)
        print(circuits.summary())
        _write_page(circuits, args.out.replace(".html", "-circuits.html"))
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(args.model, args.out, progress=not args.quiet, archive=args.archive)
    return 0


def _patch(args) -> int:
    from .models.load import load
    from .patching import activation_patching, attribution_patching, compare_patching
    from .tasks import make_task

    model = load(args.model)
    kwargs = {"seed": args.seed} | ({"n": args.n} if args.task != "factual" else {})
    task = make_task(args.task, model, **kwargs).solved_by(model)
    if args.sweep in ("resid", "attn", "mlp", "head_pos"):
        task = task.one_length()
    print(task.evaluate(model).summary())
    if args.method == "attribution":
        result = attribution_patching(model, task, args.sweep, direction=args.direction)
    else:
        result = activation_patching(model, task, args.sweep, direction=args.direction, batch_size=args.batch,
                                     progress=not args.quiet)
    print(result.summary())
    if args.method == "both":
        result = compare_patching(result, attribution_patching(model, task, args.sweep, direction=args.direction))
        print(result.summary())
    _write_page(result, args.out)
    return 0


def _circuit(args) -> int:
    from .circuits import discover
    from .models.load import load
    from .report.page import page
    from .tasks import make_task

    model = load(args.model)
    kwargs = {"seed": args.seed} | ({"n": args.n} if args.task != "factual" else {})
    task = make_task(args.task, model, **kwargs).solved_by(model)
    print(task.evaluate(model).summary())
    circuit, scores = discover(model, task, args.method, faithfulness=args.faithfulness, ablation=args.ablation,
                               steps=args.steps, threshold=args.threshold, measure=args.measure,
                               candidates=args.candidates,
                               progress=not args.quiet)
    if scores is not None:
        print(scores.summary())
    print(circuit.summary())
    total = circuit.extra.get("total_edges")
    if total:
        print(f"{len(circuit.edges)} of {total} edges ({len(circuit.edges) / total:.2%}), "
              f"{len(circuit.nodes)} components; {circuit.extra.get('ablation')} ablation")
    with open(args.out, "w", encoding="utf-8") as f:
        body = circuit.html() + (scores.html() if scores is not None else "")
        f.write(page(f"{args.method} circuit: {args.task}", body))
    print(f"wrote {args.out}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(circuit.to_json())
        print(f"wrote {args.json}")
    notes = f"{args.method} circuit of {args.task}, smallest reaching faithfulness {args.faithfulness}" \
        if args.method != "acdc" else f"ACDC circuit of {args.task}, threshold {args.threshold}"
    findings = [(circuit, notes)] + ([(scores, f"{args.method} score of every edge")] if scores is not None else [])
    spec = _archive(args).record(f"{args.task} circuit ({args.method})", findings, model=model, task=args.task,
                                 tags=["circuit"])
    print(f"stored specimen {spec.uid[:8]} {spec.name!r}")
    return 0


def _probe(args) -> int:
    from .models.load import load
    from .probes import probe_sweep

    model = load(args.model)
    sweep = probe_sweep(model, args.dataset, args.site, kind=args.kind, seed=args.seed, progress=not args.quiet)
    print(sweep.summary())
    for site, te, co in zip(sweep.sites, sweep.test_score, sweep.control_score):
        print(f"  {site:28s} test {te:.3f}  control {co:.3f}  selectivity {te - co:+.3f}")
    _write_page(sweep, args.out)
    spec = _archive(args).record(f"probes: {args.dataset}", [(sweep, f"{args.kind} probes of {args.dataset}")],
                                 model=model, task=args.dataset, tags=["probe"])
    print(f"stored specimen {spec.uid[:8]} {spec.name!r}")
    return 0


def _steer(args) -> int:
    from .models.load import load
    from .probes import NEGATIVE_WORDS, POSITIVE_WORDS
    from .steering import NEUTRAL, control_vector, read_pairs, steering_sweep, word_score

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
    _write_page(sweep, args.out)
    spec = _archive(args).record(f"steering: {args.pairs}", [(cv, f"{args.method} vector at {args.site}"),
                                                             (sweep, f"coefficient {args.coef}")],
                                 model=model, task="steering", tags=["steering"])
    print(f"stored specimen {spec.uid[:8]} {spec.name!r}")
    return 0


def _verify(args) -> int:
    from pathlib import Path
    from types import SimpleNamespace

    from .verify import check
    from .verify.onnx_io import load_onnx
    from .verify.vnnlib import read_vnnlib

    if args.example:
        from .verify.instances import write_instance

        pairs, acc = write_instance(args.example)
        print(f"wrote the collision-avoidance instance to {args.example} (network accuracy {acc:.3f} on its policy)")
    elif args.network and args.properties:
        pairs = [(args.network, p) for p in args.properties]
    else:
        print("error: give NET.onnx and PROP.vnnlib (one or more), or --example DIR", file=sys.stderr)
        return 2
    findings, net = [], None
    for net_path, prop_path in pairs:
        net = load_onnx(net_path)
        prop = read_vnnlib(prop_path)
        verdict = check(net, prop, args.method, timeout=args.timeout)
        word = {"verified": "holds (unsat)", "falsified": "violated (sat)", "unknown": "unknown"}[verdict.status]
        extra = f", {verdict.detail['boxes']} boxes" if "boxes" in verdict.detail else ""
        print(f"{prop.name}: {word} — {verdict.method} in {verdict.seconds:.3f} s{extra}, margin {verdict.margin:+.4g}")
        if verdict.counterexample is not None:
            x = verdict.counterexample.flatten()
            y = net(x[None].double())[0]
            print("  counterexample X = [" + ", ".join(f"{v:.6g}" for v in x.tolist()) + "]\n"
                  "               Y = [" + ", ".join(f"{v:.6g}" for v in y.tolist()) + "]")
        findings.append((verdict, f"{prop.name} ({Path(prop_path).name}) on {Path(net_path).name}"))
    model = SimpleNamespace(name=net.name, fingerprint=net.fingerprint(),
                            cfg={"input_shape": list(net.input_shape), "graph": net.describe()})
    spec = _archive(args).record(f"verify {net.name}", findings, model=model, task="verification",
                                 tags=["verify"])
    print(f"stored specimen {spec.uid[:8]} {spec.name!r}")
    return 0


def _toy(args) -> int:
    from .toy.specimens import run_toy

    run_toy(args.kind, args.out, archive=args.archive, progress=not args.quiet, quick=args.quick)
    return 0


def _distributed(device: str | None) -> str | None:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPU) and
    return this rank's device."""
    import os

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device and device.startswith("cuda"):
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        dist.init_process_group("nccl" if device and device.startswith("cuda") else "gloo")
    return device


def _sae(args) -> int:
    import torch

    from .models.load import load
    from .sae import ActivationStore, SAEConfig, SparseCoder, harvest, load_sae

    blocks = args.blocks or {"harvest": 256, "eval": 32, "dashboard": 64, "train": 0}[args.action]
    device = _distributed(args.device) if args.action in ("harvest", "train") else args.device
    batch = args.batch or (8 if args.action == "harvest" else 4096)
    if args.action == "harvest":
        if not args.model:
            raise ValueError("sae harvest needs a MODEL (e.g. smollm2-135m)")
        model = load(args.model, device=device)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
        for site, where in [(args.site, args.store)] + ([(args.target_site, args.target)] if args.target_site else []):
            if args.target_site and where is None:
                raise ValueError("--target-site needs --target DIR for the target store")
            store = harvest(model, site, where, n_blocks=blocks, context=args.context, batch=batch,
                            shard_tokens=args.shard_tokens, dtype=dtype, progress=not args.quiet)
            print(store)
        return 0
    if args.action == "train":
        store = ActivationStore(args.store)
        target = ActivationStore(args.target) if args.target else None
        cfg = SAEConfig(args.arch, store.d, args.width, k=args.k if args.arch in ("topk", "batchtopk") else None,
                        d_out=target.d if target else None, skip=args.skip, sparsity=args.sparsity, site=store.site,
                        target_site=target.site if target else None, model=store.manifest["model"])
        sae = SparseCoder(cfg, seed=args.seed)
        sae.fit(store, target, batch=batch, steps=args.steps, epochs=args.epochs, lr=args.lr, seed=args.seed,
                checkpoint=args.out, progress=not args.quiet, device=device)
        print(sae.log_.summary())
        print(f"wrote {args.out} (config.json, sae.safetensors; checkpoint.pt resumes an interrupted run)")
        return 0
    sae = load_sae(args.sae)
    if not sae.cfg.model:
        raise ValueError(f"{args.sae}: the dictionary's config names no model; it was not trained on a harvested store")
    model = load(args.model or sae.cfg.model, device=device)
    sae.to(model.device)
    if args.action == "eval":
        from .sae.evaluate import evaluate

        result = evaluate(sae, model, n_blocks=blocks, context=args.context, progress=not args.quiet)
        caption = f"{sae.cfg.arch} SAE × {sae.cfg.width} at {sae.cfg.site}"
    else:
        from .sae.dashboard import feature_cards, parse_features

        result = feature_cards(sae, model, parse_features(args.features, sae.cfg.width), n_blocks=blocks,
                               progress=not args.quiet)
        caption = f"features {args.features}"
    print(result.summary())
    _write_page(result, args.page or f"mechscope-sae-{args.action}.html")
    spec = _archive(args).record(f"SAE {args.action}: {sae.cfg.arch} × {sae.cfg.width} at {sae.cfg.site}",
                                 [(result, caption)], model=model, task="features", tags=["sae"])
    print(f"stored specimen {spec.uid[:8]} {spec.name!r}")
    return 0


def _vision(args) -> int:
    from .vision import grad_cam, load_image_model, prepare, read_image, visualize

    if args.model == "fashion-cnn" and args.action != "visualize":
        raise ValueError("fashion-cnn takes 28-px grey images: `vision visualize --model fashion-cnn --channel conv2:5`; "
                         "gradcam and specimen use EfficientNet on colour photos")
    if args.action == "visualize" and not args.channel:
        raise ValueError("vision visualize needs --channel MODULE:CHANNEL (e.g. _blocks.10:17) or class:NAME")
    model = load_image_model(args.model, progress=not args.quiet)
    if args.action == "visualize":
        natural = None
        if args.model == "fashion-cnn":
            from .vision.fashion import fashion_mnist

            natural = fashion_mnist("test", 1000)[0]
        fv = visualize(model, args.channel, steps=args.steps, seed=args.seed, natural=natural,
                       progress=not args.quiet)
        print(fv.summary())
        _write_page(fv, args.out)
        spec = _archive(args).record(f"feature visualization: {args.channel}", [(fv, f"{args.steps} steps")],
                                     model=model, task="feature visualization", tags=["vision"])
    elif args.action == "specimen":
        from .vision.specimen import vision_specimen
        from .report import write_report

        spec = vision_specimen(model, _archive(args), steps=args.steps, progress=not args.quiet)
        for f in spec.findings():
            print(f.result().summary())
        print(f"wrote {write_report(spec, args.out)[0]}")
    else:
        if not args.image:
            raise ValueError("vision gradcam needs an IMAGE (a file, or a bundled photo: chelsea, coffee, ...)")
        image = prepare(read_image(args.image), model.size, crop=args.crop)
        for name, p in model.run(image).top(5)[0]:
            print(f"  {p:6.3f}  {name}")
        cam = grad_cam(model, image, args.target if args.target is None or not args.target.isdigit()
                       else int(args.target), site=args.site)
        print(cam.summary())
        _write_page(cam, args.out)
        spec = _archive(args).record(f"Grad-CAM: {cam.target.split(',')[0]} in {args.image}",
                                     [(cam, f"at {args.site}")], model=model, task="image classification",
                                     tags=["vision"])
    print(f"stored specimen {spec.uid[:8]} {spec.name!r}")
    return 0

def _archive(args):
    from .archive import open as open_archive

    return open_archive(args.archive)


def _specimens(args) -> int:
    arch = _archive(args)
    if args.action == "list":
        specs = arch.search(args.query, model=args.model, task=args.task, tag=args.tag)
        for s in specs:
            tags = f" [{', '.join(s.tags)}]" if s.tags else ""
            print(f"{s.uid[:8]}  v{s.version:<3} {s.name}  ({s.model_name or '-'}; {s.task or '-'}){tags}")
        print(f"{len(specs)} specimen(s) in {arch!r}")
    elif args.action == "show":
        s = arch.get(args.key)
        print(f"{s.name}  uid {s.uid}  v{s.version}\n  model {s.model_name} ({s.model_fingerprint})"
              f"\n  task {s.task or '-'}  dataset {s.dataset or '-'}  tags {', '.join(s.tags) or '-'}")
        for f in s.findings():
            print(f"\n[{f.uid[:8]}] {f.title} ({f.kind})\n  " + f.summary.replace("\n", "\n  "))
            if f.notes:
                print(f"  notes: {f.notes}")
        print("\nhistory: " + "; ".join(f"v{e.version} {e.action}" for e in s.history()))
    elif args.action == "export":
        s = arch.get(args.key)
        path = arch.export(s.uid, args.path or f"{s.uid[:8]}.mscope")
        print(f"exported {s.name!r} to {path}")
    elif args.action == "import":
        s = arch.import_file(args.key, replace=args.replace)
        print(f"imported {s.name!r} ({s.uid[:8]}, {len(s.findings())} findings)")
    elif args.action == "rm":
        s = arch.get(args.key)
        arch.remove(s.uid)
        print(f"removed {s.name!r} ({s.uid[:8]})")
    return 0


def _report(args) -> int:
    from .report import write_report

    spec = _archive(args).get(args.key)
    path, seconds = write_report(spec, args.output or f"{spec.uid[:8]}.html")
    print(f"wrote {path} ({seconds:.2f}s)")
    return 0


def _serve(args) -> int:
    from .web import serve

    serve(_archive(args), host=args.host, port=args.port, writable=args.writable)
    return 0


def main(argv: list[str] | None = None) -> int:
    from .models.load import DEFAULT_MODEL, EMBEDDED

    parser = argparse.ArgumentParser(prog="mechscope", description="Mechanistic interpretability workbench")
    sub = parser.add_subparsers(dest="command", required=True)
    model_help = f"embedded model ({', '.join(EMBEDDED)}) or a local HF directory"
    archive_help = "archive directory or database URL (default: $MECHSCOPE_ARCHIVE or the user data dir)"

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

    p = sub.add_parser("lens", help="logit lens of a prompt, and the direct logit attribution of the answer")
    p.add_argument("model", help=model_help)
    p.add_argument("prompt")
    p.add_argument("--target", help="target token (default: the model's top prediction)")
    p.add_argument("--foil", help="DLA of logit(target) - logit(foil)")
    p.add_argument("--out", default="mechscope-lens.html", help="HTML page to write")
    p.set_defaults(fn=_lens)

    p = sub.add_parser("attribute", help="which input tokens a prediction comes from")
    p.add_argument("model", help=model_help)
    p.add_argument("prompt")
    p.add_argument("--method", choices=["ig", "shap", "lime", "occlusion", "saliency", "gradxinput"], default="ig")
    p.add_argument("--target", help="target token (default: the model's top prediction)")
    p.add_argument("--baseline", default="pad", choices=["pad", "zero", "mean"], help="IG baseline token embedding")
    p.add_argument("--hold", default="0", help="positions kept at their input value (default 0: the first token)")
    p.add_argument("--steps", type=int, default=32, help="IG: starting steps (adaptive) or steps (--fixed)")
    p.add_argument("--fixed", action="store_true", help="IG: fixed Gauss-Legendre steps instead of adaptive")
    p.add_argument("--budget", type=int, default=512, help="shap/lime: model evaluations")
    p.add_argument("--out", default="mechscope-attribution.html", help="HTML page to write")
    p.set_defaults(fn=_attribute)

    p = sub.add_parser("heads", help="previous-token, duplicate-token and induction heads, with ablation evidence")
    p.add_argument("model", help=model_help)
    p.add_argument("--top", type=int, default=5, help="rows of the table")
    p.add_argument("-k", type=int, default=5, help="how many top induction heads to ablate")
    p.add_argument("--seeds", type=int, default=5, help="random-head draws for the comparison")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=50, help="length of the random sequence (repeated once)")
    p.add_argument("--icl", type=int, default=0, help="also the in-context-learning score on this many corpus blocks")
    p.add_argument("--circuits", action="store_true", help="also copying and Q/K/V-composition scores from the weights")
    p.add_argument("--out", default="mechscope-heads.html", help="HTML page to write")
    p.set_defaults(fn=_heads)

    p = sub.add_parser("demo", help="study the default model and write an HTML page of the results")
    p.add_argument("--model", default=DEFAULT_MODEL, help=model_help)
    p.add_argument("--out", default="mechscope-demo", help="output directory (default ./mechscope-demo)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--archive", help=archive_help)
    p.set_defaults(fn=_demo)

    p = sub.add_parser("patch", help="activation patching of every component on a task (batched)")
    p.add_argument("model", help=model_help)
    p.add_argument("--task", default="ioi", choices=["ioi", "greater-than", "induction", "factual"])
    p.add_argument("--sweep", default="heads", choices=["resid", "attn", "mlp", "heads", "head_pos", "q", "k", "v"])
    p.add_argument("--direction", default="denoising", choices=["denoising", "noising"],
                   help="denoising: clean activations into the corrupted run; noising: the reverse")
    p.add_argument("--method", default="activation", choices=["activation", "attribution", "both"],
                   help="activation patching (batched forwards), attribution patching (gradient estimate: 2 "
                        "forwards + 1 backward), or both with their correlation")
    p.add_argument("-n", type=int, default=16, help="prompt pairs to generate (those the model solves are kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=256, help="rows per forward pass")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", default="mechscope-patch.html", help="HTML page to write")
    p.set_defaults(fn=_patch)

    p = sub.add_parser("circuit", help="discover a circuit on a task: EAP, EAP-IG or ACDC, with its faithfulness")
    p.add_argument("model", help=model_help)
    p.add_argument("--task", default="ioi", choices=["ioi", "greater-than", "induction", "factual"])
    p.add_argument("--method", default="eap-ig", choices=["eap", "eap-ig", "acdc"])
    p.add_argument("--faithfulness", type=float, default=0.8,
                   help="EAP / EAP-IG: keep the smallest circuit reaching this faithfulness")
    p.add_argument("--ablation", default="corrupted", choices=["corrupted", "mean", "resample"],
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
    p.add_argument("--json", help="also write the circuit as JSON here")
    p.add_argument("--archive", help=archive_help)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", default="mechscope-circuit.html", help="HTML page to write")
    p.set_defaults(fn=_circuit)

    p = sub.add_parser("probe", help="linear probes at every site, with control tasks and selectivity")
    p.add_argument("model", help=model_help)
    p.add_argument("--dataset", default="sentiment", choices=["sentiment", "truth", "function-words"])
    p.add_argument("--site", default="blocks.*.resid_post", help="sites to probe (globs allowed)")
    p.add_argument("--kind", default="logistic", choices=["logistic", "mass-mean"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--archive", help=archive_help)
    p.add_argument("--out", default="mechscope-probe.html", help="HTML page to write")
    p.set_defaults(fn=_probe)

    p = sub.add_parser("steer", help="a control vector from contrastive pairs, and generation steered by it")
    p.add_argument("model", help=model_help)
    p.add_argument("prompts", nargs="+", help="prompts to continue")
    p.add_argument("--pairs", default="sentiment", help="'sentiment' (embedded) or a file of positive<TAB>negative "
                                                          "lines / a JSON list of pairs")
    p.add_argument("--site", default="blocks.12.resid_post", help="where the vector is read and added (globs allowed)")
    p.add_argument("--method", default="mean-diff", choices=["mean-diff", "pca"])
    p.add_argument("--coef", type=float, default=4.0)
    p.add_argument("--after-prompt", action="store_true", help="steer only the generated tokens")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--archive", help=archive_help)
    p.add_argument("--out", default="mechscope-steer.html", help="HTML page to write")
    p.set_defaults(fn=_steer)

    p = sub.add_parser("sae", help="sparse autoencoders: harvest activations, train, evaluate, feature dashboards")
    p.add_argument("action", choices=["harvest", "train", "eval", "dashboard"])
    p.add_argument("model", nargs="?", help=model_help + " (harvest; eval/dashboard default to the SAE's own)")
    p.add_argument("--site", default="blocks.12.resid_post", help="harvest: the site to store")
    p.add_argument("--target-site", help="harvest: also store this site (a transcoder's target)")
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
    p.add_argument("--batch", type=int, default=None, help="rows per step (train: 4096) / blocks per forward (harvest: 8)")
    p.add_argument("--steps", type=int, help="training steps (default: --epochs passes over the store)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="run on this device (cpu, cuda); under torchrun, cuda means each rank's own GPU")
    p.add_argument("--out", default="sae", help="train: where the SAE and its checkpoint go")
    p.add_argument("--sae", default="sae", help="eval/dashboard: the trained SAE's directory")
    p.add_argument("--features", default="0-19", help="dashboard: features, e.g. 0-99 or 3,17,40-42")
    p.add_argument("--page", help="HTML page to write (eval/dashboard)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--archive", help=archive_help)
    p.set_defaults(fn=_sae)

    p = sub.add_parser("vision", help="image models: Grad-CAM, feature visualization, the EfficientNet specimen")
    p.add_argument("action", choices=["gradcam", "visualize", "specimen"])
    p.add_argument("image", nargs="?", help="gradcam: an image file, or a photo bundled with scikit-image (chelsea, "
                                            "coffee, astronaut, ...)")
    p.add_argument("--channel", help="visualize: MODULE:CHANNEL (e.g. _blocks.10:17) or class:NAME")
    p.add_argument("--steps", type=int, default=256, help="visualize / specimen: optimisation steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--class", dest="target", help="class name (e.g. tabby) or index; default: the top class")
    p.add_argument("--model", default="efficientnet-lite0", choices=["efficientnet-lite0", "fashion-cnn"])
    p.add_argument("--site", default="_bn1", help="feature maps for Grad-CAM (a module name)")
    p.add_argument("--crop", action="store_true", help="centre-crop a square instead of resizing the whole image")
    p.add_argument("--archive", help=archive_help)
    p.add_argument("--out", default="mechscope-vision.html", help="HTML page to write")
    p.set_defaults(fn=_vision)

    p = sub.add_parser("verify", help="prove or refute VNNLIB properties of an ONNX network")
    p.add_argument("network", nargs="?", help="NET.onnx")
    p.add_argument("properties", nargs="*", help="PROP.vnnlib (one or more)")
    p.add_argument("--method", default="bab", choices=["ibp", "crown", "milp", "bab"],
                   help="ibp / crown: one bound; milp: exact (ReLU); bab: branch and bound with CROWN")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per property (milp, bab)")
    p.add_argument("--example", metavar="DIR", help="train the collision-avoidance network, write it and its "
                                                    "VNNLIB properties to DIR, and check them")
    p.add_argument("--archive", help=archive_help)
    p.set_defaults(fn=_verify)

    p = sub.add_parser("toy", help="train a toy specimen from scratch: superposition, induction heads, grokking")
    p.add_argument("kind", choices=["superposition", "induction", "grokking"])
    p.add_argument("--out", default="mechscope-toy", help="directory for figures and the report")
    p.add_argument("--quick", action="store_true", help="fewer training steps (a smoke run)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--archive", help=archive_help)
    p.set_defaults(fn=_toy)

    p = sub.add_parser("specimens", help="the specimen archive: list, show, export, import, rm")
    p.add_argument("action", choices=["list", "show", "export", "import", "rm"])
    p.add_argument("key", nargs="?", help="specimen uid/name (show, export, rm) or file (import)")
    p.add_argument("path", nargs="?", help="export: output file (default <uid>.mscope)")
    p.add_argument("--archive", help=archive_help)
    p.add_argument("--query", "-q", help="list: text search")
    p.add_argument("--model", help="list: model name or fingerprint")
    p.add_argument("--task", help="list: task")
    p.add_argument("--tag", help="list: tag")
    p.add_argument("--replace", action="store_true", help="import: overwrite a specimen with the same uid")
    p.set_defaults(fn=_specimens)

    p = sub.add_parser("report", help="write a specimen's self-contained HTML report")
    p.add_argument("key", help="specimen uid or name")
    p.add_argument("-o", "--output", help="output file (default <uid>.html)")
    p.add_argument("--archive", help=archive_help)
    p.set_defaults(fn=_report)

    p = sub.add_parser("serve", help="browse the archive in a web browser")
    p.add_argument("--archive", help=archive_help)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--writable", action="store_true", help="allow changes (tags, notes, deletion) through the API")
    p.set_defaults(fn=_serve)

    args = parser.parse_args(argv)
    if args.command == "specimens" and args.action != "list" and not args.key:
        parser.error(f"specimens {args.action} needs a specimen (or, for import, a file)")
    from .archive import ArchiveError

    try:
        return args.fn(args)
    except (ValueError, KeyError, ModuleNotFoundError, FileNotFoundError, ArchiveError) as err:
        print(f"mechscope: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
