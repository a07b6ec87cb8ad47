"""Oracle: circuit-tracer's attribution graph of a saved model and per-layer transcoders.

Run with circuit-tracer's own environment (it pins transformers 4.57.3): ``python
circuit_tracer_graph.py DIR`` where DIR holds ``model/`` (an HF model and tokenizer),
``transcoders.safetensors`` (``{l}.W_enc`` [F, d], ``{l}.W_dec`` [F, d], ``{l}.b_enc``, ``{l}.b_dec``,
optional ``{l}.W_skip`` [d, d]) and ``prompt.json`` ({"ids": [...], "batch_size": n}); writes
``circuit_tracer.safetensors`` (adjacency, active and selected features, logit tokens and
probabilities) and ``circuit_tracer.json`` (its scores, the seconds ``attribute`` took and the
process's peak RSS above what it held before the call).
"""

import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from circuit_tracer import attribute
from circuit_tracer.graph import compute_graph_scores, prune_graph
from circuit_tracer.replacement_model.replacement_model_nnsight import NNSightReplacementModel
from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder, TranscoderSet

folder = Path(sys.argv[1])
# a model saved by transformers 5 as transformers 4.57 (circuit-tracer's pin) reads it: the tokenizer's
# class by its old name, and rope_theta at the top level rather than in v5's rope_parameters
tok_cfg = folder / "model" / "tokenizer_config.json"
tok_cfg.write_text(json.dumps({**json.loads(tok_cfg.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"}))
model_cfg = folder / "model" / "config.json"
conf = json.loads(model_cfg.read_text())
if "rope_theta" not in conf and "rope_theta" in conf.get("rope_parameters", {}):
    model_cfg.write_text(json.dumps({**conf, "rope_theta": conf["rope_parameters"]["rope_theta"]}))
w = load_file(folder / "transcoders.safetensors")
spec = json.loads((folder / "prompt.json").read_text())
layers = sorted({int(k.split(".")[0]) for k in w})
coders = {}
for layer in layers:
    W_enc = w[f"{layer}.W_enc"]
    skip = f"{layer}.W_skip" in w
    tc = SingleLayerTranscoder(W_enc.shape[1], W_enc.shape[0], torch.nn.ReLU(), layer, skip_connection=skip,
                               device=torch.device("cpu"), dtype=torch.float32)
    with torch.no_grad():
        tc.W_enc.copy_(W_enc)
        tc.W_dec.copy_(w[f"{layer}.W_dec"])
        tc.b_enc.copy_(w[f"{layer}.b_enc"])
        tc.b_dec.copy_(w[f"{layer}.b_dec"])
        if skip:
            tc.W_skip.copy_(w[f"{layer}.W_skip"])
    coders[layer] = tc
tset = TranscoderSet(coders, feature_input_hook="mlp.hook_in", feature_output_hook="mlp.hook_out", scan="mechscope-test")
model = NNSightReplacementModel.from_pretrained_and_transcoders(str(folder / "model"), tset, device="cpu",
                                                                 dtype=torch.float32)
torch.set_num_threads(spec.get("threads", torch.get_num_threads()))
def status_kb(field):
    return next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith(field + ":"))


Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark: measure the attribution alone
base_kb = status_kb("VmRSS")
start = time.perf_counter()
graph = attribute(torch.tensor(spec["ids"]), model, batch_size=spec.get("batch_size", 16),
                  max_feature_nodes=spec.get("max_feature_nodes"))
seconds = time.perf_counter() - start
peak_kb = status_kb("VmHWM") - base_kb
replacement, completeness = compute_graph_scores(graph)
pruned = prune_graph(graph, node_threshold=0.8, edge_threshold=0.98)
save_file({"adjacency": graph.adjacency_matrix.float().contiguous(),
           "active_features": graph.active_features.long().contiguous(),
           "selected_features": graph.selected_features.long().contiguous(),
           "activation_values": graph.activation_values.float().contiguous(),
           "logit_tokens": torch.tensor([t.vocab_idx for t in graph.logit_targets]),
           "logit_probabilities": graph.logit_probabilities.float().contiguous(),
           "node_mask": pruned.node_mask.contiguous(), "edge_mask": pruned.edge_mask.contiguous()},
          str(folder / "circuit_tracer.safetensors"))
(folder / "circuit_tracer.json").write_text(json.dumps({"replacement": replacement, "completeness": completeness,
                                                       "seconds": seconds, "peak_rss_mb": peak_kb / 1024}))
