"""Oracle, run in .venv-tracr (tracr-pypi 1.0.0, jax): compile tracr's own library programs and
run them on given inputs. Usage: python tracr_programs.py DIR, with DIR/request.json =
{"programs": {name: {"vocab": [...], "max_len": n, "inputs": [[...], ...]}}}; writes
DIR/tracr.json = {name: {"outputs": [...], "layers", "heads", "mlp_hidden", "d_model", "seconds"}}."""

import json
import sys
import time
from pathlib import Path

from tracr.compiler import compiling, lib
from tracr.rasp import rasp

MAKERS = {
    "length": lambda: lib.make_length(),
    "reverse": lambda: lib.make_reverse(rasp.tokens),
    "histogram": lambda: lib.make_hist(),
    "sort": lambda: lib.make_sort_unique(rasp.tokens, rasp.tokens),
    "frac_prevs": lambda: lib.make_frac_prevs(rasp.tokens == "x"),
}

folder = Path(sys.argv[1])
request = json.loads((folder / "request.json").read_text())
out = {}
for name, spec in request["programs"].items():
    t0 = time.perf_counter()
    model = compiling.compile_rasp_to_model(MAKERS[name](), vocab=set(spec["vocab"]), max_seq_len=spec["max_len"],
                                            compiler_bos="BOS")
    seconds = time.perf_counter() - t0
    outputs = []
    for xs in spec["inputs"]:
        decoded = model.apply(["BOS"] + list(xs)).decoded[1:]
        outputs.append([float(v) if isinstance(v, float) else v for v in decoded])
    cfg = model.model_config
    out[name] = {"outputs": outputs, "layers": cfg.num_layers, "heads": cfg.num_heads, "mlp_hidden": cfg.mlp_hidden_size,
                 "d_model": len(model.residual_labels), "seconds": seconds}
(folder / "tracr.json").write_text(json.dumps(out))
