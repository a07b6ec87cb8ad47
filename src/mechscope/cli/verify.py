"""The `verify` command: prove or refute VNNLIB properties of an ONNX network."""

from __future__ import annotations

from .common import command, emit, outputs, pages_dir


def _verify(args) -> int:
    from pathlib import Path
    from types import SimpleNamespace

    from ..verify import check
    from ..verify.onnx_io import load_onnx
    from ..verify.vnnlib import read_vnnlib

    if args.example:
        from ..verify.instances import write_instance

        folder = args.dir or pages_dir() / "collision-avoidance"
        pairs, acc = write_instance(folder)
        print(f"wrote the collision-avoidance instance to {folder} (network accuracy {acc:.3f} on its policy)")
    elif args.network and args.properties:
        pairs = [(args.network, p) for p in args.properties]
    else:
        raise ValueError("give NET.onnx and PROP.vnnlib (one or more), or --example [--dir DIR]")
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
    emit(args, findings, f"verify {net.name}", model=model, task="verification", tags=["verify"])
    return 0


def add(sub) -> None:
    """Declare this module's commands and their arguments on the subparsers ``sub``."""
    p = command(sub, "verify", "prove or refute VNNLIB properties of an ONNX network",
                ["mechscope verify NET.onnx PROP.vnnlib PROP2.vnnlib --method bab --timeout 30",
                 "mechscope verify --example --dir inst   # train, write and check the collision-avoidance instance"])
    p.add_argument("network", nargs="?", help="NET.onnx")
    p.add_argument("properties", nargs="*", help="PROP.vnnlib (one or more)")
    p.add_argument("--method", default="bab", choices=["ibp", "crown", "milp", "bab"],
                   help="ibp / crown: one bound; milp: exact (ReLU); bab: branch and bound with CROWN")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per property (milp, bab)")
    p.add_argument("--example", action="store_true", help="train the collision-avoidance network, write it and its "
                                                          "VNNLIB properties to --dir, and check them")
    p.add_argument("--dir", help="--example: the folder to write (default: collision-avoidance/ in the pages folder)")
    outputs(p, "verify")
    p.set_defaults(fn=_verify)
