"""The `sae` command: harvest activations, train, evaluate, feature dashboards (torchrun-aware)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from .common import ARCHIVE_HELP, MODEL_HELP, open_archive, write_page


@contextmanager
def _distributed(device: str | None) -> Iterator[str | None]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPU) for the
    command, yield this rank's device, and leave the group after it (a rank that exits with its
    group still open can abort in gloo's threads)."""
    import torch
    import torch.distributed as dist

    joined = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if joined:
        if device and device.startswith("cuda"):
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        dist.init_process_group("nccl" if device and device.startswith("cuda") else "gloo")
    try:
        yield device
    finally:
        if joined:
            dist.destroy_process_group()


def _sae(args) -> int:
    if args.action in ("harvest", "train"):
        with _distributed(args.device) as device:
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
    sites, dirs = [args.site], [args.store]
    if args.target_site:  # a transcoder's input and target, from the same forwards
        sites, dirs = sites + [args.target_site], dirs + [args.target]
    for store in harvest(model, sites, dirs, n_blocks=args.blocks or 256, context=args.context, batch=args.batch or 8,
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
    sae.fit(store, target, batch=args.batch or 4096, steps=args.steps, epochs=args.epochs, lr=args.lr, seed=args.seed,
            checkpoint=args.out, progress=not args.quiet, device=device)
    print(sae.log_.summary())
    print(f"wrote {args.out} (config.json, sae.safetensors; checkpoint.pt resumes an interrupted run)")
    return 0


def _inspect(args) -> int:
    """eval or dashboard of a trained SAE: a page, printed summary and a specimen."""
    from ..models.load import load
    from ..sae import load_sae

    sae = load_sae(args.sae)
    if not sae.cfg.model:
        raise ValueError(f"{args.sae}: the dictionary's config names no model; it was not trained on a harvested store")
    model = load(args.model or sae.cfg.model, device=args.device)
    sae.to(model.device)
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
    print(result.summary())
    write_page(result, args.page or f"mechscope-sae-{args.action}.html")
    spec = open_archive(args).record(f"SAE {args.action}: {sae.cfg.arch} × {sae.cfg.width} at {sae.cfg.site}",
                                 [(result, caption)], model=model, task="features", tags=["sae"])
    print(f"stored specimen {spec.uid[:8]} {spec.name!r}")
    return 0


def add(sub) -> None:
    """Declare this module's commands and their arguments on the subparsers ``sub``."""
    p = sub.add_parser("sae", help="sparse autoencoders: harvest activations, train, evaluate, feature dashboards")
    p.add_argument("action", choices=["harvest", "train", "eval", "dashboard"])
    p.add_argument("model", nargs="?", help=MODEL_HELP + " (harvest; eval/dashboard default to the SAE's own)")
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
    p.add_argument("--archive", help=ARCHIVE_HELP)
    p.set_defaults(fn=_sae)
