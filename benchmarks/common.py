"""Shared by the benchmarks: timing, the machine line, and writing sections of RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine(threads: int, device: str) -> str:
    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else ""
    return (f"{platform.system()} {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{threads} torch thread(s), device {device}{gpu}")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, device: str, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each fn, measured round-robin so drift hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section between this benchmark's markers in RESULTS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nWritten by the scripts in this folder; each section says how it was measured.\n"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM, ...)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> int:
    """Reset the peak-RSS mark (VmHWM) and return the current RSS in kB; peak growth after this
    is ``status_kb("VmHWM") - returned``."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_kb("VmRSS")


def transformer_lens_model(model):
    """A HookedTransformer holding ``model``'s weights (a llama or gemma mechscope Model), unprocessed —
    as SAELens loads models (``from_pretrained_no_processing``). Built from TransformerLens's own
    config fields and weight converters, since its ``from_pretrained`` accepts only hub names."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import _get_rope_theta
    from transformer_lens.pretrained.weight_conversions.gemma import convert_gemma_weights
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    c = model.hf.config
    gemma = c.model_type == "gemma"
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size, d_head=model.cfg.d_head, n_heads=c.num_attention_heads, d_mlp=c.intermediate_size,
        n_layers=c.num_hidden_layers, n_ctx=c.max_position_embeddings, eps=c.rms_norm_eps, d_vocab=c.vocab_size,
        act_fn="gelu_pytorch_tanh" if gemma else c.hidden_act, normalization_type="RMS",
        positional_embedding_type="rotary", rotary_dim=model.cfg.d_head, rotary_base=_get_rope_theta(c),
        rotary_adjacent_pairs=False, final_rms=True, gated_mlp=True,
        n_key_value_heads=c.num_key_value_heads, original_architecture=type(model.hf).__name__,
        use_attn_scale=True, dtype=torch.float32, device="cpu")
    tl = HookedTransformer(cfg)
    state = (convert_gemma_weights if gemma else convert_llama_weights)(model.hf, cfg)
    tl.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                   fold_value_biases=False, refactor_factored_attn_matrices=False)
    return tl.eval()
