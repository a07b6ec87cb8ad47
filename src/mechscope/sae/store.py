"""An on-disk store of one site's activations over a corpus: sharded safetensors + a manifest.

``harvest(model, site, directory)`` runs token blocks (default: the embedded Shakespeare corpus,
``n_blocks`` × ``context`` tokens) through the model, caching only ``site``, drops padding and
BOS positions and (``drop_first``, default) the first position of each block — the attention sink,
whose norm dwarfs every other (SmolLM2 block 12: 23,198 vs a median of 138) — and writes rows
[tokens, d] into shards of ``shard_tokens`` rows. Each shard is
written to a temporary name and renamed, *then* listed in ``manifest.json`` (also replaced
atomically): a crash leaves at most an unlisted file, never a listed corrupt one. Harvesting again
into the same directory with the same model, site, context, dtype and tokens resumes after the
last listed shard (an unlisted leftover is overwritten); anything else is refused. Several sites
(a transcoder's input and target) with one directory each are filled from the same forwards; after
a crash each store resumes from its own last shard.

``ActivationStore(directory)`` reads it back: ``len``, ``d``, ``tensor()`` (all rows in order) and
``batches(size, shuffle=True, seed)``, which streams shards in a random order through a buffer of
``buffer_shards`` shards whose rows are shuffled together (memory: that many shards).

Under an initialised ``torch.distributed`` process group each rank harvests its share of the blocks
(``distributed.share``: contiguous, in rank order) into ``rank_NNN/`` (a store of its own, resumable
as above); rank 0 then writes the top manifest listing every rank's shards in rank order, so the
merged store holds the rows in the order one process writes them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from ..checks import positive_int
from ..distributed import rank_world, share
from ..files import write_atomic
from ..models.model import Model

MANIFEST = "manifest.json"
FORMAT = 1


class StoreError(ValueError):
    """A store that cannot be read or resumed (what differs, or what is missing)."""


def _save_manifest(directory: Path, manifest: dict) -> None:
    write_atomic(directory / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1)))


def harvest(model: Model, site: str | Sequence[str], directory: str | os.PathLike | Sequence[str | os.PathLike], *,
            tokens: torch.Tensor | None = None, n_blocks: int = 256, context: int = 128, shard_tokens: int = 65_536,
            batch_size: int = 8, dtype: torch.dtype = torch.float32, drop_first: bool = True, progress: bool = True,
            _stop_after_shards: int | None = None) -> "ActivationStore | list[ActivationStore]":
    """Harvest ``site`` over ``tokens`` [blocks, context] (default: the corpus) into ``directory``
    (see the module docstring); returns the store. Several sites (a transcoder's input and
    target) with one directory each come from the same forwards; returns one store per site."""
    from ..models.sites import parse

    several = not isinstance(site, str)
    sites = list(site) if several else [site]
    dirs = [Path(d) for d in directory] if several and not isinstance(directory, (str, os.PathLike)) else None
    if several and (dirs is None or len(dirs) != len(sites)):
        raise ValueError(f"{len(sites)} sites need as many directories (one store each); got {directory!r}")
    dirs = dirs or [Path(directory)]
    for s in sites:
        parse(s)  # a clear error for an unknown site name
    for value, name in ((batch_size, "batch_size"), (shard_tokens, "shard_tokens"), (n_blocks, "n_blocks"), (context, "context")):
        positive_int(value, name)
    if tokens is None:
        from ..data import token_blocks

        tokens = token_blocks(model.tokenizer, n_blocks, context)
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [blocks, context]; got shape {tuple(tokens.shape)}")
    options = dict(shard_tokens=shard_tokens, batch_size=batch_size, dtype=dtype, drop_first=drop_first, progress=progress)
    rank, world = rank_world()
    if world > 1:
        stores = _harvest_ranks(model, sites, dirs, tokens, rank, world, **options)
    else:
        stores = _harvest(model, sites, dirs, tokens, stop_after_shards=_stop_after_shards, **options)
    return stores if several else stores[0]


def _harvest(model: Model, sites: list[str], dirs: list[Path], tokens: torch.Tensor, *, shard_tokens: int, batch_size: int,
             dtype: torch.dtype, drop_first: bool, progress: bool,
             stop_after_shards: int | None = None) -> "list[ActivationStore]":
    """One process's harvest of each site into its directory (validated arguments)."""
    common = {"format": FORMAT, "model": model.name, "fingerprint": model.fingerprint, "context": int(tokens.shape[1]),
              "dtype": str(dtype).replace("torch.", ""), "tokens_hash": _tokens_hash(tokens),
              "blocks": int(tokens.shape[0]), "shard_tokens": shard_tokens, "drop_first": drop_first}
    writers = [_StoreWriter(d, {**common, "site": s}) for s, d in zip(sites, dirs)]
    bos = model.tokenizer.bos_token_id
    start_block = min(w.blocks_done for w in writers)
    bar = tqdm(total=len(tokens), initial=start_block, desc=f"harvest {', '.join(sites)}", disable=not progress)

    # shards end at batch boundaries (a shard takes whole batches, so ~shard_tokens rows): each manifest's
    # blocks_done is then exact, and a resumed harvest starts at the first block some store lacks
    for b0 in range(start_block, len(tokens), batch_size):
        chunk = tokens[b0:b0 + batch_size]
        todo = [w for w in writers if w.blocks_done < b0 + len(chunk)]  # after a crash a store may be ahead
        acts, ids, mask = _site_forward(model, chunk, [w.site for w in todo])
        keep = mask.bool().to(acts[0].device)
        if bos is not None:
            keep &= ids.to(keep.device) != bos
        if drop_first:
            keep[:, 0] = False  # blocks are unpadded: column 0 is each block's first token
        for w, a in zip(todo, acts):
            if a.dim() != 3:
                raise ValueError(f"{w.site} has shape {tuple(a.shape)}; the store holds [batch_size, pos, d] sites "
                                 "(residual, attn.out, mlp.pre/post/out)")
            first = max(0, w.blocks_done - b0)  # the blocks this store already holds
            w.add(a[first:][keep[first:]].to(dtype).cpu(), b0 + len(chunk), shard_tokens)
        bar.update(len(chunk))
        if stop_after_shards is not None and max(w.written for w in writers) >= stop_after_shards:
            bar.close()
            return [ActivationStore(w.directory, allow_incomplete=True) for w in writers]
    bar.close()
    return [w.finish(len(tokens)) for w in writers]


def _tokens_hash(tokens: torch.Tensor) -> str:
    """Short blake2b of the token ids [blocks, context]: a resumed harvest must see the same tokens."""
    return hashlib.blake2b(tokens.to(torch.int64).numpy().tobytes(), digest_size=8).hexdigest()


class _StoreWriter:
    """One store being harvested: its manifest (new, or resumed if it matches ``want``) and the
    rows waiting for the next shard."""

    def __init__(self, directory: Path, want: dict):
        self.directory, self.site = directory, want["site"]
        directory.mkdir(parents=True, exist_ok=True)
        self.manifest = {**want, "d": None, "shards": [], "blocks_done": 0, "n_tokens": 0, "complete": False}
        if (directory / MANIFEST).exists():
            old = json.loads((directory / MANIFEST).read_text())
            differ = [k for k in want if old.get(k) != want[k]]
            if differ:
                raise StoreError(f"{directory} holds a store with different {', '.join(differ)} "
                                 f"({', '.join(f'{k}={old.get(k)!r}' for k in differ)}); use another directory")
            self.manifest = old
        self.pending: list[torch.Tensor] = []
        self.rows = self.written = 0

    @property
    def blocks_done(self) -> int:
        return self.manifest["blocks"] if self.manifest["complete"] else self.manifest["blocks_done"]

    def add(self, rows: torch.Tensor, blocks_done: int, shard_tokens: int) -> None:
        """Rows [n, d] of the batches up to ``blocks_done``; a shard is written once enough wait."""
        self.manifest["d"] = int(rows.shape[1])
        self.pending.append(rows)
        self.rows += int(rows.shape[0])
        if self.rows >= shard_tokens:
            _append_shard(self.directory, self.manifest, torch.cat(self.pending), blocks_done)
            self.pending, self.rows = [], 0
            self.written += 1

    def finish(self, blocks: int) -> "ActivationStore":
        if not self.manifest["complete"]:
            if self.rows:
                _append_shard(self.directory, self.manifest, torch.cat(self.pending), blocks)
            self.manifest.update(blocks_done=blocks, complete=True)
            _save_manifest(self.directory, self.manifest)
        return ActivationStore(self.directory)


@torch.no_grad()
def _site_forward(model: Model, chunk: torch.Tensor, sites: list[str]) -> tuple[list[torch.Tensor], torch.Tensor,
                                                                              torch.Tensor]:
    """([activations at each site], token ids, mask) of a batch, running the model only as far
    as the sites need."""

    acts = model.forward_until(chunk, sites)
    ids, mask = model.tokenize(chunk)
    return acts, ids, mask


def _harvest_ranks(model: Model, sites: list[str], dirs: list[Path], tokens: torch.Tensor, rank: int, world: int,
                   **options) -> "list[ActivationStore]":
    import torch.distributed as dist

    mine = share(len(tokens))
    subs = _harvest(model, sites, [d / f"rank_{rank:03d}" for d in dirs], tokens[mine.start:mine.stop], **options)
    dist.barrier()
    if rank == 0:
        for d, sub in zip(dirs, subs):
            parts = [ActivationStore(d / f"rank_{r:03d}") for r in range(world)]
            m = dict(sub.manifest)
            m.update(blocks=int(tokens.shape[0]), ranks=world, blocks_done=int(tokens.shape[0]),
                     tokens_hash=_tokens_hash(tokens),
                     shards=[{"file": f"rank_{r:03d}/{s['file']}", "rows": s["rows"]}
                             for r, st in enumerate(parts) for s in st.manifest["shards"]],
                     n_tokens=sum(len(st) for st in parts), complete=True)
            _save_manifest(d, m)
    dist.barrier()
    return [ActivationStore(d) for d in dirs]


def _append_shard(directory: Path, manifest: dict, rows: torch.Tensor, blocks_done: int) -> None:
    """Write one shard (whole batches of blocks), then list it."""
    from safetensors.torch import save_file

    name = f"shard_{len(manifest['shards']):05d}.safetensors"
    write_atomic(directory / name, lambda p: save_file({"acts": rows.contiguous()}, str(p)))
    manifest["shards"].append({"file": name, "rows": int(rows.shape[0])})
    manifest["n_tokens"] += int(rows.shape[0])
    manifest["blocks_done"] = blocks_done
    _save_manifest(directory, manifest)


class ActivationStore:
    """A harvested store (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, allow_incomplete: bool = False):
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.exists():
            raise StoreError(f"{self.directory} holds no {MANIFEST}: harvest into it first")
        try:
            self.manifest = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{path} is not valid JSON ({e})") from e
        if not self.manifest.get("complete") and not allow_incomplete:
            raise StoreError(f"{self.directory}: the harvest stopped after {self.manifest.get('blocks_done')} of "
                             f"{self.manifest.get('blocks')} blocks; run harvest again to resume it")
        root = self.directory.resolve()
        for entry in self.manifest.get("shards", []):  # a manifest names files inside its store, nothing else
            file = entry.get("file") if isinstance(entry, dict) else None
            if not isinstance(file, str) or not (root / file).resolve().is_relative_to(root):
                raise StoreError(f"{path} lists shard {file!r} outside the store {self.directory}; "
                                 "shards are files inside it (shard_NNNNN.safetensors or rank_NNN/...)")
        missing = [s["file"] for s in self.manifest["shards"] if not (self.directory / s["file"]).exists()]
        if missing:
            raise StoreError(f"{self.directory}: listed shard(s) missing: {', '.join(missing[:3])}")

    def __len__(self) -> int:
        return int(self.manifest["n_tokens"])

    @property
    def d(self) -> int:
        return int(self.manifest["d"])

    @property
    def site(self) -> str:
        return self.manifest["site"]

    def shard(self, i: int) -> torch.Tensor:
        from safetensors.torch import load_file

        entry = self.manifest["shards"][i]
        try:
            t = load_file(str(self.directory / entry["file"]))["acts"]
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file
            raise StoreError(f"{self.directory / entry['file']} cannot be read ({e})") from e
        if t.shape != (entry["rows"], self.d):
            raise StoreError(f"{entry['file']} holds {tuple(t.shape)}; the manifest says ({entry['rows']}, {self.d})")
        return t

    def tensor(self) -> torch.Tensor:
        """Every row, in harvest order: [tokens, d]."""
        return torch.cat([self.shard(i) for i in range(len(self.manifest["shards"]))])

    def batches(self, size: int, *, shuffle: bool = True, seed: int = 0, buffer_shards: int = 2,
                drop_last: bool = False) -> Iterator[torch.Tensor]:
        """Batches [size, d]: shards in a random order, rows shuffled across ``buffer_shards`` shards
        at a time (``shuffle=False``: harvest order)."""
        g = torch.Generator().manual_seed(seed)
        n = len(self.manifest["shards"])
        order = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
        carry = torch.empty(0, self.d)
        for start in range(0, n, buffer_shards):
            buf = torch.cat([carry] + [self.shard(i).float() for i in order[start:start + buffer_shards]])
            if shuffle:
                buf = buf[torch.randperm(len(buf), generator=g)]
            full = len(buf) // size * size
            for b in range(0, full, size):
                yield buf[b:b + size]
            carry = buf[full:]
        if len(carry) and not drop_last:
            yield carry

    def __repr__(self) -> str:
        m = self.manifest
        return (f"ActivationStore({str(self.directory)!r}: {m['model']} {m['site']}, {len(self)} tokens × {m['d']}, "
                f"{len(m['shards'])} shards, {m['dtype']})")
