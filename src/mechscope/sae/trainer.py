"""Training a sparse coder: initialisation from the data, the loss per architecture, schedules,
dead latents, checkpoints, and data parallelism under ``torch.distributed``.

Before the first step, on a sample of ``init_rows`` rows (the same on every rank):

- input normalisation: s = √(d / E‖x‖²) for the inputs (and separately the targets), kept in the
  model, so that E‖x_n‖² = d whatever the site's scale;
- b_dec = the geometric median (Weiszfeld) or the mean of the normalised targets; transcoders also
  centre their inputs on the input mean (b_in);
- var = E‖y_n − ȳ_n‖², the targets' variance per row (FVU denominator, fixed for the run).

Each step on a batch of N rows (in normalised units; y = x for an SAE):

    relu       L = Σ‖ŷ − y‖²/N + λ_t Σ_rows Σ_i f_i ‖W_dec,i‖ / N
    jumprelu   L = Σ‖ŷ − y‖²/N + λ_t Σ_rows Σ_i H(pre_i − θ_i) / N
    topk,
    batchtopk  L = Σ‖ŷ − y‖²/(N·var) + α · Σ‖ê − e‖² / Σ‖e − ē‖²

where λ_t rises linearly from 0 over the first ``sparsity_warmup`` of the steps; e = y − ŷ
(detached) and ê = f_aux W_dec the reconstruction of e by the ``aux_k`` largest pre-activations of
dead latents (AuxK, scaled by min(1, dead / aux_k)). Adam; learning rate warmed up linearly over
``warmup`` of the steps and decayed linearly to 0 over the last ``decay`` of them; gradients
clipped to norm ``clip``. A latent is dead when it has not fired in ``dead_tokens`` tokens.

Data parallel: under an initialised ``torch.distributed`` process group (``torchrun``; gloo on
CPU, NCCL on GPU) every rank walks the same global batch stream and takes rows rank::world of each
batch; sums are divided by the global batch, gradients are all-reduced (sum) before clipping, so
the run equals one process with the same ``batch``; rank 0 writes checkpoints. (BatchTopK's
batch selection and its θ are per rank, as in other implementations.)
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Iterator

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..checks import positive_int
from ..results import Provenance, Result
from .config import TRAINABLE, SAEError
from .kernels import Step, TopKEncode
from ..distributed import rank_world
from ..files import write_atomic
from .store import ActivationStore

if TYPE_CHECKING:  # the trainer fits a dictionary it is handed (SparseCoder.fit calls it)
    from .dictionary import SparseCoder

CHECKPOINT = "checkpoint.pt"


def _all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    if rank_world()[1] > 1:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def worse_than_zero(fvu: float) -> str:
    """A warning for a summary when a dictionary reconstructs worse than predicting zero (FVU > 1)."""
    return ("\n  WARNING: FVU > 1 — it reconstructs worse than predicting zero; train longer (more tokens or "
            "epochs), lower the learning rate, or check the activation store") if fvu > 1 else ""


@dataclass
class TrainingLog(Result):
    """Training curves: per logged step ``columns`` (step, tokens, loss, fvu, l0, dead, lr) as
    rows of ``values`` [logged steps, columns]."""

    arch: str
    width: int
    columns: list[str]
    values: torch.Tensor
    title: ClassVar[str] = "SAE training"

    def column(self, name: str) -> torch.Tensor:
        return self.values[:, self.columns.index(name)]

    def summary(self) -> str:
        if not len(self.values):
            return f"{self.arch} × {self.width}: no steps logged"
        last = dict(zip(self.columns, self.values[-1].tolist()))
        return (f"{self.arch} SAE × {self.width}: {int(last['step'])} steps, {int(last['tokens']):,} tokens; "
                f"final FVU {last['fvu']:.4f}, L0 {last['l0']:.1f}, dead {last['dead']:.1%}{worse_than_zero(last['fvu'])}")

    def evidence(self) -> dict:
        last = dict(zip(self.columns, self.values[-1].tolist())) if len(self.values) else {}
        return {k: round(v, 5) for k, v in last.items()}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(10, 2.6))
        t = self.column("tokens").numpy()
        for ax, name in zip(axes, ("fvu", "l0", "dead")):
            ax.plot(t, self.column(name).numpy())
            ax.set(xlabel="tokens", title=name)
        axes[0].set_yscale("log")
        fig.tight_layout()
        return fig


def _stream(data, target, batch_size: int, seed: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless global batches, epoch after epoch (seed + epoch), each rank's rows rank::world."""
    epoch = 0
    while True:
        if isinstance(data, ActivationStore):
            xs = data.batches(batch_size, shuffle=True, seed=seed + epoch, drop_last=True)
            ys = target.batches(batch_size, shuffle=True, seed=seed + epoch, drop_last=True) if target is not None else None
            pairs = zip(xs, ys) if ys is not None else ((x, x) for x in xs)
        else:
            perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + epoch))
            idx = [perm[i:i + batch_size] for i in range(0, len(perm) - batch_size + 1, batch_size)]
            pairs = ((data[i], (target if target is not None else data)[i]) for i in idx)
        for x, y in pairs:
            yield x[rank::world], y[rank::world]
        epoch += 1


def _sample(data, target, rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, ActivationStore):
        x = next(data.batches(rows, seed=seed))
        y = next(target.batches(rows, seed=seed)) if target is not None else x
    else:
        i = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:rows]
        x = data[i]
        y = (target if target is not None else data)[i]
    return x.float(), y.float()


def geometric_median(x: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """The point minimising Σ‖x_i − m‖ (Weiszfeld's iteration, from the mean): [d] of x [n, d]."""
    m = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=1).clamp(min=1e-8)
        new = (w[:, None] * x).sum(0) / w.sum()
        if (new - m).norm() <= tol * m.norm().clamp(min=1e-8):
            return new
        m = new
    return m


def _validate(sae: SparseCoder, data, target) -> None:
    c = sae.cfg
    if c.arch not in TRAINABLE:
        raise SAEError(f"{c.arch} dictionaries are read from files, not trained here; trainable: {', '.join(TRAINABLE)}")
    if c.input_norm != "none":
        raise SAEError(f"input_norm={c.input_norm!r} is for dictionaries read from files; training normalises by a "
                       "constant (input_norm='none')")
    if target is None and c.transcoder:
        raise SAEError(f"a transcoder ({c.site} → {c.target_site}) needs target= activations")
    for what, src, d in (("data", data, c.d_in), ("target", target, c.d_out)):
        if src is None:
            continue
        if isinstance(src, ActivationStore):
            if src.d != d:
                raise SAEError(f"{what} store has d={src.d}; the SAE expects {d}")
        elif not isinstance(src, torch.Tensor) or src.dim() != 2 or src.shape[1] != d:
            got = tuple(src.shape) if isinstance(src, torch.Tensor) else type(src).__name__
            raise SAEError(f"{what} must be an ActivationStore or a tensor [n, {d}]; got {got}")
        elif not torch.isfinite(src).all():
            raise SAEError(f"{what} contains NaN or infinite values")
    if target is not None:
        if type(target) is not type(data):
            raise SAEError("data and target must both be ActivationStores or both tensors")
        if isinstance(data, ActivationStore):
            if [s["rows"] for s in data.manifest["shards"]] != [s["rows"] for s in target.manifest["shards"]] or \
                    data.manifest["tokens_hash"] != target.manifest["tokens_hash"]:
                raise SAEError("data and target stores are not row-aligned (harvest both sites from the same tokens)")
        elif len(data) != len(target):
            raise SAEError(f"data has {len(data)} rows, target {len(target)}")


@torch.no_grad()
def initialise(sae: SparseCoder, x: torch.Tensor, y: torch.Tensor, b_dec: str = "geometric_median") -> float:
    """Set the normalisation constants and b_dec (and b_in) from a sample; returns var."""
    sae.scale_in.fill_(math.sqrt(sae.cfg.d_in / x.pow(2).sum(1).mean().clamp(min=1e-12).item()))
    sae.scale_out.fill_(sae.scale_in.item() if not sae.cfg.transcoder
                        else math.sqrt(sae.cfg.d_out / y.pow(2).sum(1).mean().clamp(min=1e-12).item()))
    yn = y * sae.scale_out.item()
    if b_dec not in ("geometric_median", "mean", "zeros"):
        raise SAEError(f"b_dec={b_dec!r}; valid: 'geometric_median', 'mean', 'zeros'")
    centre = {"geometric_median": lambda: geometric_median(yn), "mean": lambda: yn.mean(0),
              "zeros": lambda: torch.zeros(yn.shape[1])}[b_dec]()
    sae.b_dec.copy_(centre.to(sae.b_dec))
    if sae.cfg.transcoder:
        sae.b_in.copy_((x * sae.scale_in.item()).mean(0).to(sae.b_in))
    return float((yn - yn.mean(0)).pow(2).sum(1).mean())


@dataclass
class _State:
    step: int = 0
    since_fired: torch.Tensor = None  # [width] tokens since each latent last fired
    var: float = 1.0
    rows: list = field(default_factory=list)


def _schedule(step: int, steps: int, warmup: float, decay: float) -> float:
    w = max(1, int(warmup * steps))
    d = int(decay * steps)
    if step < w:
        return (step + 1) / w
    if d and step >= steps - d:
        return max(0.0, (steps - step) / d)
    return 1.0


class Trainer:
    """One dictionary's optimiser, schedules and statistics: ``step(x, y)`` on each batch (rows in
    raw units), ``state_dict`` / ``load_state_dict`` to checkpoint, ``log`` for the curves. ``train``
    drives one from a dataset; ``online.train_transcoders`` drives one per layer from a model's forwards."""

    def __init__(self, sae: SparseCoder, steps: int, batch_size: int, *, lr: float | None = None, warmup: float = 0.01,
                 decay: float = 0.2, sparsity_warmup: float = 0.05, clip: float = 1.0, dead_tokens: int | None = None):
        c = sae.cfg
        self.sae, self.steps, self.batch = sae, steps, batch_size
        self.lr = lr if lr is not None else min(1e-3, 2e-4 * math.sqrt(16384 / c.width))
        self.clip, self.sparsity_warmup = clip, sparsity_warmup
        self.dead_tokens = dead_tokens if dead_tokens is not None else min(10_000_000, max(10 * batch_size, steps * batch_size // 10))
        self.opt = torch.optim.Adam(sae.parameters(), lr=self.lr, betas=(0.9, 0.999))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _schedule(s, steps, warmup, decay))
        self.st = _State(since_fired=torch.zeros(c.width, dtype=torch.long, device=sae.W_dec.device))

    def initialise(self, x: torch.Tensor, y: torch.Tensor, b_dec: str = "geometric_median") -> None:
        """Normalisation constants, b_dec and the FVU denominator from a sample, before the first step."""
        self.st.var = initialise(self.sae, x.float(), y.float(), b_dec)
        self.sae.normalise_decoder()

    def step(self, x: torch.Tensor, y: torch.Tensor, world: int = 1) -> dict:
        """One optimiser step on this rank's rows of a global batch; returns {"fvu", "l0"}."""
        sae, c, st = self.sae, self.sae.cfg, self.st
        dev = sae.W_dec.device
        x, y = x.to(dev, torch.float32), y.to(dev, torch.float32)
        lam = c.sparsity * min(1.0, (st.step + 1) / max(1, int(self.sparsity_warmup * self.steps))) if c.sparsity else 0.0
        sae.train()
        loss, stats = _loss(sae, x, y, self.batch, st, lam, self.dead_tokens)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            for p in sae.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
        torch.nn.utils.clip_grad_norm_(sae.parameters(), self.clip)
        sae.remove_parallel_grads()
        self.opt.step()
        self.sched.step()
        sae.normalise_decoder()
        st.step += 1
        stats["loss"] = loss.detach()
        return stats

    def record(self, stats: dict) -> None:
        """Append a log row (step, tokens, loss, fvu, l0, dead, lr) from ``step``'s stats."""
        st = self.st
        total = float(_all_reduce(stats["loss"].clone()))  # every rank logs at the same steps
        st.rows.append([st.step, st.step * self.batch, total, stats["fvu"], stats["l0"],
                        float((st.since_fired >= self.dead_tokens).float().mean()), self.opt.param_groups[0]["lr"]])

    def state_dict(self) -> dict:
        c = self.sae.cfg
        return {"config": dict(c.__dict__), "steps": self.steps, "batch": self.batch, "state": self.sae.state_dict(),
                "optim": self.opt.state_dict(), "sched": self.sched.state_dict(), "step": self.st.step,
                "since_fired": self.st.since_fired.cpu(), "var": self.st.var, "rows": self.st.rows}

    def load_state_dict(self, ck: dict, where: str) -> None:
        if ck["config"] != self.sae.cfg.__dict__ or ck["steps"] != self.steps or ck["batch"] != self.batch:
            raise SAEError(f"{where} is a checkpoint of another run (config, steps or batch differ); "
                           "use another directory or delete it")
        dev = self.sae.W_dec.device
        self.sae.load_state_dict(ck["state"])
        self.opt.load_state_dict(ck["optim"])
        self.sched.load_state_dict(ck["sched"])
        st = self.st
        st.step, st.since_fired, st.var, st.rows = ck["step"], ck["since_fired"].to(dev), ck["var"], ck["rows"]

    def log(self, provenance: Provenance) -> TrainingLog:
        c = self.sae.cfg
        return TrainingLog(provenance=provenance, arch=c.arch, width=c.width,
                           columns=["step", "tokens", "loss", "fvu", "l0", "dead", "lr"],
                           values=torch.tensor(self.st.rows, dtype=torch.float64).reshape(-1, 7))


def load_checkpoint(path: Path) -> dict:
    """A checkpoint this trainer wrote (tensors and plain containers only: reading one never runs code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise SAEError(f"{path} is not a checkpoint this trainer wrote (it may hold code, which is never "
                       f"run, or be truncated): {str(e).splitlines()[0]}; delete it to start afresh") from None


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (a temporary name, then a rename)."""
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def train(sae: SparseCoder, data, target=None, *, batch_size: int = 4096, steps: int | None = None, epochs: float = 1.0,
          lr: float | None = None, warmup: float = 0.01, decay: float = 0.2, sparsity_warmup: float = 0.05,
          clip: float = 1.0, dead_tokens: int | None = None, b_dec: str = "geometric_median", init_rows: int = 16384,
          seed: int = 0, log_every: int = 10, checkpoint: str | os.PathLike | None = None,
          checkpoint_every: int = 500, progress: bool = True, device: str | torch.device | None = None) -> TrainingLog:
    """Train ``sae`` in place on ``data`` (ActivationStore or [n, d_in]; ``target`` for transcoders)
    for ``steps`` (default ``epochs`` passes) of ``batch_size`` rows; see the module docstring. With
    ``checkpoint`` (a directory) the run saves every ``checkpoint_every`` steps and resumes from it."""
    _validate(sae, data, target)
    positive_int(batch_size, "batch_size", "rows per step")
    rank, world = rank_world()
    if batch_size % world:
        raise SAEError(f"batch_size={batch_size} must be divisible by the world size {world}")
    n = len(data)
    if n < batch_size:
        raise SAEError(f"the data has {n} rows, fewer than one batch of {batch_size}")
    steps = steps if steps is not None else max(1, int(epochs * (n // batch_size)))
    c = sae.cfg
    if device is not None:
        sae.to(device)
    trainer = Trainer(sae, steps, batch_size, lr=lr, warmup=warmup, decay=decay, sparsity_warmup=sparsity_warmup, clip=clip,
                      dead_tokens=dead_tokens)
    st = trainer.st
    path = Path(checkpoint) / CHECKPOINT if checkpoint is not None else None
    if path is not None and path.exists():
        trainer.load_state_dict(load_checkpoint(path), str(path))
    else:
        x0, y0 = _sample(data, target, min(init_rows, n), seed + 7919)
        trainer.initialise(x0, y0, b_dec)
    stream = _stream(data, target, batch_size, seed, rank, world)
    for _ in range(st.step):  # resume: the same batches as an uninterrupted run
        next(stream)
    bar = tqdm(total=steps, initial=st.step, desc=f"train {c.arch} × {c.width}", disable=not progress or rank != 0)
    while st.step < steps:
        x, y = next(stream)
        stats = trainer.step(x, y, world)
        if st.step % log_every == 0 or st.step == steps:
            trainer.record(stats)
            bar.set_postfix(L0=f"{stats['l0']:.1f}", FVU=f"{stats['fvu']:.3f}", dead=f"{st.rows[-1][5]:.1%}")
        bar.update(1)
        if path is not None and rank == 0 and (st.step % checkpoint_every == 0 or st.step == steps):
            save_checkpoint(path, trainer.state_dict())
    bar.close()
    sae.eval()
    if path is not None and rank == 0:
        sae.save(path.parent)
    store = data.manifest if isinstance(data, ActivationStore) else {}
    return trainer.log(Provenance(model=c.model or store.get("model", "synthetic"),
                                  fingerprint=store.get("fingerprint", ""), seed=seed, params={
        "arch": c.arch, "width": c.width, "k": c.k, "sparsity": c.sparsity, "site": c.site, "target_site": c.target_site,
        "batch": batch_size, "steps": steps, "lr": trainer.lr, "seed": seed, "world": world}))


def _loss(sae: SparseCoder, x: torch.Tensor, y: torch.Tensor, batch_size: int, st: _State, lam: float,
          dead_tokens: int) -> tuple[torch.Tensor, dict]:
    """One step's loss (sums over this rank's rows / the global batch_size) and its statistics."""
    from torch.nn.functional import embedding_bag

    c = sae.cfg
    yn = y * sae.scale_out
    skip = (x * sae.scale_in) @ sae.W_skip if sae.W_skip is not None else 0.0
    if c.arch == "topk":  # sparse: k latents per row, gathered decoder rows
        vals, idx, pre = TopKEncode.apply(sae.normalised(x), sae.W_enc, sae.encoder_bias(), c.k)
        y_hat = embedding_bag(idx, sae.W_dec, per_sample_weights=vals, mode="sum") + sae.b_dec + skip
        on = vals > 0
        fired = torch.bincount(idx[on], minlength=c.width) > 0
        nonzero = on.sum()
    else:
        pre = sae.preacts(x)
        f = sae.activate(pre, train=True)
        y_hat = f @ sae.W_dec + sae.b_dec + skip
        on = f > 0
        fired = on.any(0)
        nonzero = on.sum()
    err = (y_hat - yn).pow(2).sum()
    fired = _all_reduce(fired.to(torch.int32), dist.ReduceOp.MAX if rank_world()[1] > 1 else None)
    st.since_fired += batch_size
    st.since_fired[fired.bool()] = 0
    stats_t = _all_reduce(torch.stack([err.detach(), nonzero.float().detach()]))
    stats = {"fvu": float(stats_t[0]) / batch_size / st.var, "l0": float(stats_t[1]) / batch_size}
    if c.arch == "relu":
        return err / batch_size + lam * (f @ sae.W_dec.norm(dim=1)).sum() / batch_size, stats
    if c.arch == "jumprelu":
        return err / batch_size + lam * Step.apply(pre, sae.threshold, c.bandwidth).sum() / batch_size, stats
    if c.arch == "batchtopk":
        with torch.no_grad():
            kept = f[on]
            low = _all_reduce(kept.min().reshape(1) if len(kept) else torch.zeros(1, device=f.device),
                              dist.ReduceOp.MIN if rank_world()[1] > 1 else None)
            sae.batch_threshold.copy_(low[0] if st.step == 0 else 0.99 * sae.batch_threshold + 0.01 * low[0])
    loss = err / (batch_size * st.var)
    dead = st.since_fired >= dead_tokens
    n_dead = int(dead.sum())
    if n_dead and c.aux_coef:
        e = (yn - y_hat).detach()
        vals, idx = torch.relu(pre.masked_fill(~dead, float("-inf"))).topk(min(c.aux_k, n_dead), dim=-1, sorted=False)
        e_hat = embedding_bag(idx, sae.W_dec, per_sample_weights=vals, mode="sum")
        sums = _all_reduce(torch.cat([e.sum(0), e.pow(2).sum().reshape(1)]))
        total_var = (sums[-1] - sums[:-1].pow(2).sum() / batch_size).clamp(min=1e-12)
        loss = loss + c.aux_coef * min(1.0, n_dead / c.aux_k) * (e_hat - e).pow(2).sum() / total_var
    return loss, stats
