"""Transcoder sets as circuit-tracer publishes them: one transcoder per layer, or one cross-layer
transcoder (CLT) whose features read one layer and write every later one.

A set is a folder with ``config.yaml``::

    model_name: google/gemma-2-2b
    model_kind: transcoder_set            # or cross_layer_transcoder
    feature_input_hook: mlp.hook_in       # per block: what each layer's features read
    feature_output_hook: hook_mlp_out     # ... and write
    transcoders:                          # per layer; absent: layer_{L}.safetensors beside the config
      - hf://org/repo/layer_0.safetensors
      - ...

Per-layer files hold ``W_enc`` [features, d_in] (Gemma Scope's ``.npz`` and Gemma Scope 2's ``w_enc``:
[d_in, features]; Gemma Scope 2's skip is ``affine_skip_connection`` [d_in, d_out], applied as x·A),
``W_dec`` [features, d_out], ``b_enc``, ``b_dec``, optionally ``W_skip`` [d_out, d_in] (applied as
x W_skipᵀ) and ``activation_function.threshold`` (JumpReLU: pre·[pre > θ]). A CLT folder holds
``W_enc_{i}.safetensors`` (``W_enc_i`` [features, d_model], ``b_enc_i``, ``b_dec_i``, ``threshold_i``) and
``W_dec_{i}.safetensors`` (``W_dec_i`` [features, n_layers − i, d_model]): layer j's output is
Σ_{i ≤ j} f_i · W_dec_i[:, j − i] + b_dec_j.

``hf://org/repo/path?revision=r`` entries are read from the local Hugging Face cache (``hf_cache=``,
else ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``); nothing is
downloaded — a missing file is refused with the path that was looked for.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qs, urlparse

import torch
from torch import nn

from ..models.interventions import Intervention, Replace
from .checkpoints import PROGRESS, checkpoint_path, is_run, read_progress
from .config import SAEConfig, SAEError
from .dictionary import SparseCoder
from .features import splice as splice_one
from .trainer import load_checkpoint
from .formats.common import check_against_model, check_weights, fold_norm_gain, hook_site, read_safetensors

SET_CONFIG = "config.yaml"


def hf_cache_dir(hf_cache: str | os.PathLike | None = None) -> Path:
    """The Hugging Face hub cache folder: ``hf_cache``, $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub."""
    if hf_cache is not None:
        return Path(hf_cache)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def resolve_hf_uri(uri: str, hf_cache: str | os.PathLike | None = None) -> Path:
    """The local file of ``hf://org/repo/path[?revision=r]`` in the Hugging Face cache (the snapshot
    ``refs/<revision>`` points at; a revision that is a commit hash names the snapshot itself)."""
    parsed = urlparse(uri)
    parts = parsed.path.lstrip("/").split("/", 1)
    if parsed.scheme != "hf" or not parsed.netloc or len(parts) != 2 or not parts[1]:
        raise SAEError(f"{uri!r} is not a Hugging Face file URI (hf://org/repo/path/to/file)")
    repo, file = f"{parsed.netloc}/{parts[0]}", parts[1]
    revision = (parse_qs(parsed.query).get("revision") or ["main"])[0]
    cache = hf_cache_dir(hf_cache).resolve()
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    ref = repo_dir / "refs" / revision
    commit = ref.read_text().strip() if _inside(ref, repo_dir / "refs") and ref.is_file() else revision
    path = repo_dir / "snapshots" / commit / file
    if not _inside(path, repo_dir / "snapshots"):  # built from a file's contents: contained in its snapshot folder
        raise SAEError(f"{uri!r} leads outside the Hugging Face cache's snapshots of {repo} ({path.resolve()}); "
                       "a revision is a branch, tag or commit and a file a path inside the repository")
    if not path.is_file():
        raise SAEError(f"{uri} is not in the local Hugging Face cache: looked for {path}. mechscope downloads "
                       f"nothing at run time; put the file there (huggingface-cli download {repo} {file}) or "
                       "give hf_cache=")
    return path


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, with ``..`` and links resolved, lies under ``folder``."""
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _layer_site(hook: str, layer: int) -> tuple[str, bool]:
    """(site, read without the norm's gain) of a circuit-tracer per-block hook at ``layer``."""
    return hook_site(f"blocks.{layer}.{hook}")  # a TransformerLens hook name, read as a site by hook_site


def _read_layer(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".npz":  # Gemma Scope transcoders: W_enc [d_in, features]
        import zipfile

        import numpy as np

        try:
            with np.load(file, allow_pickle=False) as data:
                w = {k: torch.from_numpy(np.asarray(data[k], dtype=np.float32)) for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise SAEError(f"{file} cannot be read ({err})") from None
        if "W_enc" in w:
            w["W_enc"] = w["W_enc"].T
        return w
    w = {k: v.float() for k, v in read_safetensors(file).items()}
    if "activation_function.threshold" in w:
        w["threshold"] = w.pop("activation_function.threshold")
    if "w_enc" in w:  # Gemma Scope 2: w_enc [d_in, features], w_dec, affine_skip_connection [d_in, d_out] (x·A)
        w["W_enc"], w["W_dec"] = w.pop("w_enc").T, w.pop("w_dec")
        if "affine_skip_connection" in w:
            w["W_skip"] = w.pop("affine_skip_connection").T
    return w


def _oriented(t: torch.Tensor, rows: int, name: str, file: Path) -> torch.Tensor:
    """``t`` as [rows, ·]: circuit-tracer's files changed orientation between releases, so a matrix
    with ``rows`` columns (and not rows) is read transposed."""
    if t.dim() == 2 and t.shape[0] == rows:
        return t
    if t.dim() == 2 and t.shape[1] == rows:
        return t.T
    raise SAEError(f"{file}: {name} is {tuple(t.shape)}; neither dimension is the {rows} features of b_enc")


def _layer_coder(file: Path, layer: int, cfg: dict[str, Any], model: Any) -> SparseCoder:
    w = _read_layer(file)
    check_weights(w, {"W_enc": "[features, d_in] or [d_in, features]", "W_dec": "[features, d_out] or [d_out, features]",
                      "b_enc": "[features]", "b_dec": "[d_out]"}, file)
    width, d_out = w["b_enc"].shape[0], w["b_dec"].shape[0]
    W_enc, W_dec = _oriented(w["W_enc"], width, "W_enc", file), _oriented(w["W_dec"], width, "W_dec", file)
    d_in = W_enc.shape[1]
    if W_dec.shape[1] != d_out:
        raise SAEError(f"{file}: W_dec is {tuple(w['W_dec'].shape)}; b_dec says d_out = {d_out}")
    skip = "W_skip" in w
    if skip and tuple(w["W_skip"].shape) != (d_out, d_in):
        raise SAEError(f"{file}: W_skip is {tuple(w['W_skip'].shape)}; want [d_out, d_in] = [{d_out}, {d_in}]")
    threshold = w.get("threshold")
    if threshold is not None:
        threshold = threshold.reshape(-1)
        if threshold.shape != (width,) or (threshold < 0).any():
            raise SAEError(f"{file}: the JumpReLU threshold must be [{width}] and ≥ 0")
    site, without_gain = _layer_site(cfg["feature_input_hook"], layer)
    target, _ = _layer_site(cfg["feature_output_hook"], layer)
    b_enc, b_dec = w["b_enc"], w["b_dec"]
    W_skip = w["W_skip"].T if skip else None  # mechscope: x W_skip with W_skip [d_in, d_out]
    if without_gain:
        W_enc, b_enc, W_dec, b_dec, W_skip = fold_norm_gain(model, site, file, cfg["feature_input_hook"], True,
                                                             W_enc, b_enc, W_dec, b_dec, W_skip)
    weights = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    if skip:
        weights["W_skip"] = W_skip
    if threshold is not None:
        weights["log_threshold"] = threshold.log()
    config = SAEConfig("jumprelu" if threshold is not None else "relu", int(d_in), int(width), d_out=int(d_out),
                       skip=skip, site=site, target_site=target, model=cfg.get("model_name"))
    return SparseCoder(config, weights=weights).eval()


@dataclass
class TranscoderSet:
    """One transcoder per layer (``coders[l]`` reads layer l's input site and writes its output site)."""

    coders: list[SparseCoder]
    input_hook: str
    output_hook: str
    model: str | None = None

    def __len__(self) -> int:
        return len(self.coders)

    def __getitem__(self, layer: int) -> SparseCoder:
        return self.coders[layer]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """A notebook's view: one row per layer (its dictionary's kind and width)."""
        from ..display import fields_html

        title = f"{len(self)} transcoders {self.input_hook} → {self.output_hook}" + (f" of {self.model}" if self.model else "")
        rows = [(f"layer {i}", f"{c.cfg.arch} {c.cfg.d_in} → {c.cfg.width}" + (" + skip" if c.cfg.skip else ""))
                for i, c in enumerate(self.coders)]
        return {"text/html": fields_html(title, rows), "text/plain": title}

    def to(self, device: str | torch.device) -> "TranscoderSet":
        for coder in self.coders:
            coder.to(device)
        return self

    def splice(self, *, error: bool = False, layers: Sequence[int] | None = None,
               positions: Sequence[int] | None = None) -> list[Intervention]:
        """Interventions that replace each (chosen) layer's MLP output by its transcoder's (the
        replacement model); ``error=True`` adds each layer's reconstruction error back."""
        chosen = range(len(self.coders)) if layers is None else layers
        return [iv for layer in chosen for iv in splice_one(self.coders[layer], error=error, positions=positions)]


class CrossLayerTranscoder(nn.Module):
    """Features read at layer i and write to every layer j ≥ i (see the module docstring).

    ``W_enc`` [L, F, d_in], ``b_enc`` [L, F], ``threshold`` [L, F] (JumpReLU) or None (ReLU),
    ``W_dec[i]`` [F, L − i, d_out], ``b_dec`` [L, d_out]; ``sites[l]`` / ``targets[l]`` are layer l's
    input and output sites."""

    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: Sequence[torch.Tensor], b_dec: torch.Tensor,
                 threshold: torch.Tensor | None, sites: list[str], targets: list[str], model: str | None = None):
        super().__init__()
        self.n_layers, self.width, self.d_in = W_enc.shape
        self.d_out = b_dec.shape[1]
        shapes = [tuple(w.shape) for w in W_dec]
        want = [(self.width, self.n_layers - i, self.d_out) for i in range(self.n_layers)]
        if shapes != want or b_enc.shape != (self.n_layers, self.width) or len(sites) != self.n_layers:
            raise SAEError(f"cross-layer transcoder shapes disagree: W_dec {shapes} (want {want}), b_enc "
                           f"{tuple(b_enc.shape)}, {len(sites)} sites for {self.n_layers} layers")
        self.W_enc = nn.Parameter(W_enc.clone())
        self.b_enc = nn.Parameter(b_enc.clone())
        self.W_dec = nn.ParameterList([nn.Parameter(w.clone()) for w in W_dec])
        self.b_dec = nn.Parameter(b_dec.clone())
        self.threshold = nn.Parameter(threshold.clone()) if threshold is not None else None
        self.sites, self.targets, self.model = list(sites), list(targets), model

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """A notebook's view: one row per layer (the site it reads, the sites its features write)."""
        from ..display import fields_html

        kind = "JumpReLU" if self.threshold is not None else "ReLU"
        title = (f"{kind} cross-layer transcoder: {self.n_layers} layers × {self.width:,} features, "
                 f"{self.d_in} → {self.d_out}" + (f" of {self.model}" if self.model else ""))
        rows = [(f"layer {i}", f"reads {self.sites[i]}; writes {self.targets[i]}"
                 + (f" … {self.targets[-1]}" if i < self.n_layers - 1 else ""))
                for i in range(self.n_layers)]
        return {"text/html": fields_html(title, rows), "text/plain": title}

    def encode_layer(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Features [..., F] of layer ``layer`` from its input x [..., d_in]."""
        if x.shape[-1] != self.d_in:
            raise SAEError(f"input must be [..., {self.d_in}]; got {tuple(x.shape)}")
        pre = torch.nn.functional.linear(x.to(self.W_enc.dtype), self.W_enc[layer], self.b_enc[layer])
        return pre * (pre > self.threshold[layer]) if self.threshold is not None else torch.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features [L, ..., F] from each layer's input x [L, ..., d_in]."""
        return torch.stack([self.encode_layer(x[layer], layer) for layer in range(self.n_layers)])

    def decode_layer(self, f: Sequence[torch.Tensor], layer: int) -> torch.Tensor:
        """Layer ``layer``'s output [..., d_out] from the features of layers 0..layer (``f[i]`` [..., F])."""
        out = self.b_dec[layer].to(f[0].dtype)
        for i in range(layer + 1):
            out = out + f[i] @ self.W_dec[i][:, layer - i]
        return out

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Every layer's output [L, ..., d_out] from features [L, ..., F]."""
        return torch.stack([self.decode_layer(f, layer) for layer in range(self.n_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def layer_coder(self, layer: int) -> SparseCoder:
        """Layer ``layer``'s features as a ``SparseCoder`` (reading its input site, decoding only what
        they write to their own layer): for dashboards and anything else that reads one layer."""
        threshold = self.threshold[layer].detach() if self.threshold is not None else None
        weights = {"W_enc": self.W_enc[layer].detach(), "b_enc": self.b_enc[layer].detach(),
                   "W_dec": self.W_dec[layer][:, 0].detach(), "b_dec": self.b_dec[layer].detach()}
        if threshold is not None:
            weights["log_threshold"] = threshold.clamp(min=1e-30).log()
        cfg = SAEConfig("jumprelu" if threshold is not None else "relu", self.d_in, self.width, d_out=self.d_out,
                        site=self.sites[layer], target_site=self.targets[layer], model=self.model)
        return SparseCoder(cfg, weights=weights).eval()

    def splice(self, *, error: bool = False, positions: Sequence[int] | None = None,
               ablate: Sequence[tuple[int, int]] = ()) -> list[Intervention]:
        """Interventions that run the model through the CLT: each layer's input is encoded when the
        forward reaches it, each layer's output replaced by what the features so far write there.
        ``ablate``: (layer, feature) pairs set to 0; ``error=True`` keeps each output's error term."""
        feats: dict[int, torch.Tensor] = {}
        dropped: dict[int, list[int]] = {}
        for layer, feature in ablate:
            if not (0 <= layer < self.n_layers and 0 <= feature < self.width):
                raise SAEError(f"({layer}, {feature}) is not a feature: layers 0..{self.n_layers - 1}, "
                               f"features 0..{self.width - 1}")
            dropped.setdefault(layer, []).append(feature)

        def capture(layer: int):
            def fn(x: torch.Tensor) -> torch.Tensor:
                feats[layer] = self.encode_layer(x.to(self.W_enc.device), layer)
                return x
            return fn

        def replace(layer: int):
            def fn(y: torch.Tensor) -> torch.Tensor:
                f = [feats[i] for i in range(layer + 1)]
                kept = [t.clone() if i in dropped else t for i, t in enumerate(f)]
                for i, features in dropped.items():
                    if i <= layer:
                        kept[i][..., features] = 0.0
                new = self.decode_layer(kept, layer)
                if error:
                    new = new + (y.to(new) - self.decode_layer(f, layer))
                return new.to(y.device, y.dtype)
            return fn

        out: list[Intervention] = []
        for layer in range(self.n_layers):
            out.append(Replace(self.sites[layer], fn=capture(layer), positions=positions))
        for layer in range(self.n_layers):
            out.append(Replace(self.targets[layer], fn=replace(layer), positions=positions))
        return out


def _read_clt(folder: Path, cfg: dict[str, Any]) -> CrossLayerTranscoder:
    enc_files = sorted(folder.glob("W_enc_*.safetensors"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    n = len(enc_files)
    if n == 0 or [p.name for p in enc_files] != [f"W_enc_{i}.safetensors" for i in range(n)]:
        raise SAEError(f"{folder}: a cross-layer transcoder needs W_enc_0.safetensors … W_enc_(L−1).safetensors; "
                       f"found {[p.name for p in enc_files]}")
    enc, dec = [], []
    for i in range(n):
        w = read_safetensors(folder / f"W_enc_{i}.safetensors")
        check_weights(w, {f"W_enc_{i}": "[features, d_model]", f"b_enc_{i}": "[features]", f"b_dec_{i}": "[d_model]"},
                      folder / f"W_enc_{i}.safetensors")
        if f"W_skip_{i}" in w or "W_skip" in w:
            raise SAEError(f"{folder}: cross-layer transcoders with skip connections are not supported")
        enc.append(w)
        file = folder / f"W_dec_{i}.safetensors"
        if not file.is_file():
            raise SAEError(f"{folder}: W_dec_{i}.safetensors is missing")
        d = read_safetensors(file)
        check_weights(d, {f"W_dec_{i}": "[features, later layers, d_model]"}, file)
        dec.append(d[f"W_dec_{i}"].float())
    jump = "threshold_0" in enc[0]
    threshold = torch.stack([e[f"threshold_{i}"].float().reshape(-1) for i, e in enumerate(enc)]) if jump else None
    if threshold is not None and (threshold < 0).any():
        raise SAEError(f"{folder}: JumpReLU thresholds must be ≥ 0")
    sites = [_layer_site(cfg["feature_input_hook"], i) for i in range(n)]
    if any(without_gain for _, without_gain in sites):
        raise SAEError(f"{folder}: a cross-layer transcoder on {cfg['feature_input_hook']} (the norm's output "
                       "without its gain) is not supported")
    try:
        return CrossLayerTranscoder(torch.stack([e[f"W_enc_{i}"].float() for i, e in enumerate(enc)]),
                                    torch.stack([e[f"b_enc_{i}"].float() for i, e in enumerate(enc)]), dec,
                                    torch.stack([e[f"b_dec_{i}"].float() for i, e in enumerate(enc)]), threshold,
                                    [s for s, _ in sites], [_layer_site(cfg["feature_output_hook"], i)[0] for i in range(n)],
                                    cfg.get("model_name"))
    except RuntimeError as err:  # stack of unequal shapes
        raise SAEError(f"{folder}: the layers' files disagree in shape ({err})") from None


def load_transcoder_set(path: str | os.PathLike, device: str | torch.device = "cpu", *, model: Any = None,
                        hf_cache: str | os.PathLike | None = None,
                        other_model: bool = False) -> TranscoderSet | CrossLayerTranscoder:
    """A circuit-tracer transcoder set (a folder with ``config.yaml``, or the file itself): a
    ``TranscoderSet`` of per-layer ``SparseCoder``s or a ``CrossLayerTranscoder``. ``model``: checked
    against (name, sites, widths) and needed for sets on ``ln2.hook_normalized``."""
    import yaml

    path = Path(path)
    file = path if path.is_file() else path / SET_CONFIG
    if not file.is_file():
        raise SAEError(f"{path} holds no {SET_CONFIG}: not a circuit-tracer transcoder set")
    try:
        cfg = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise SAEError(f"{file} cannot be read as YAML ({err})") from None
    if not isinstance(cfg, dict) or not {"feature_input_hook", "feature_output_hook"} <= set(cfg):
        raise SAEError(f"{file} must name feature_input_hook and feature_output_hook")
    for key in ("feature_input_hook", "feature_output_hook", "model_name", "model_kind"):
        if key in cfg and not isinstance(cfg[key], str):
            raise SAEError(f"{file}: {key} is {cfg[key]!r}; it is a string (e.g. feature_input_hook: hook_resid_mid)")
    folder = file.parent
    kind = cfg.get("model_kind", "transcoder_set")
    if kind == "cross_layer_transcoder":
        clt = _read_clt(folder, cfg)
        if model is not None:
            for layer in range(clt.n_layers):  # the same checks as a per-layer coder's
                probe = SparseCoder(SAEConfig("relu", clt.d_in, 1, d_out=clt.d_out, site=clt.sites[layer],
                                              target_site=clt.targets[layer], model=clt.model))
                check_against_model(probe, model, folder, other_model=other_model)
        return clt.to(device).eval()
    if kind != "transcoder_set":
        raise SAEError(f"{file}: model_kind {kind!r}; known: transcoder_set, cross_layer_transcoder")
    entries = cfg.get("transcoders")
    if entries is not None and (not isinstance(entries, list) or not all(isinstance(e, str) for e in entries)):
        raise SAEError(f"{file}: transcoders is {str(entries)[:80]}; it is a list of file paths or hf:// URIs, one "
                       "per layer")
    if entries is None:
        files = sorted(folder.glob("layer_*.safetensors"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
        entries = [str(p) for p in files]
    if not entries:
        raise SAEError(f"{file} lists no transcoders and {folder} holds no layer_*.safetensors")
    coders = []
    for layer, entry in enumerate(entries):
        local = resolve_hf_uri(entry, hf_cache) if str(entry).startswith("hf://") else Path(entry)
        local = local if local.is_absolute() else folder / local
        if not local.is_file():
            raise SAEError(f"{file}: layer {layer}'s transcoder {entry} is not a file (looked for {local})")
        coder = _layer_coder(local, layer, cfg, model)
        if model is not None:
            check_against_model(coder, model, local, other_model=other_model)
        coders.append(coder.to(device))
    return TranscoderSet(coders, cfg["feature_input_hook"], cfg["feature_output_hook"], cfg.get("model_name"))


def checkpoint_transcoders(directory: str | os.PathLike) -> "TranscoderSet":
    """The transcoders of a run in progress (or interrupted), as of its last complete checkpoint:
    a ``TranscoderSet`` to look at — graphs, cards, evaluation — while training goes on."""
    directory = Path(directory)
    state = read_progress(directory)
    if state is None:
        raise SAEError(f"{directory} holds no training run ({PROGRESS} is missing)")
    step, spec = int(state["step"]), state["spec"]
    by_layer = {}
    for layer in spec["layers"]:
        ck = load_checkpoint(checkpoint_path(directory, layer, step))
        coder = SparseCoder(SAEConfig.from_dict(ck["config"]))
        coder.load_state_dict(ck["state"])
        by_layer[layer] = coder.eval()
    coders = [by_layer.get(layer) for layer in range(max(by_layer) + 1)]
    return TranscoderSet(coders, "mlp.in", "mlp.out", spec["model"])


def load_transcoders(path: str | os.PathLike, model: Any = None, device: str | torch.device = "cpu",
                     **options: Any) -> TranscoderSet | CrossLayerTranscoder:
    """The transcoders in a folder: a circuit-tracer set (``config.yaml``), or one sub-folder per
    layer in any format ``load_dictionary`` reads, each a transcoder writing ``blocks.L.mlp.out``
    (layers without one are left out of the set as None), or a ``train_transcoders`` run still in
    progress (as of its last checkpoint, with a warning)."""
    from .formats import load_dictionary

    path = Path(path)
    if (path / SET_CONFIG).is_file() or path.is_file():
        return load_transcoder_set(path, device, model=model, **options)
    if not path.is_dir():
        raise SAEError(f"{path} is not a folder of transcoders")
    if is_run(path) and not any((sub / "config.json").is_file() for sub in path.iterdir()):
        import warnings

        warnings.warn(f"{path} holds a training run still in progress: its transcoders as of the last checkpoint")
        return checkpoint_transcoders(path).to(device)
    by_layer: dict[int, SparseCoder] = {}
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        coder = load_dictionary(sub, device, model=model, **options)
        target = coder.cfg.target_site or ""
        m = re.fullmatch(r"blocks\.(\d+)\.mlp\.out", target)
        if not coder.cfg.transcoder or m is None:
            raise SAEError(f"{sub} is a dictionary of {coder.cfg.site} → {target or coder.cfg.site}, not a transcoder "
                           "that writes blocks.L.mlp.out")
        layer = int(m.group(1))
        if layer in by_layer:
            raise SAEError(f"{path} holds two transcoders for layer {layer}")
        by_layer[layer] = coder
    if not by_layer:
        raise SAEError(f"{path} holds no config.yaml and no dictionary folders")
    n = (model.cfg.n_layers if model is not None else max(by_layer) + 1)
    coders = [by_layer.get(layer) for layer in range(n)]
    return TranscoderSet(coders, "mlp.in", "mlp.out", getattr(model, "name", None))


__all__ = ["CrossLayerTranscoder", "TranscoderSet", "checkpoint_transcoders", "hf_cache_dir", "load_transcoder_set", "load_transcoders",
           "resolve_hf_uri"]
