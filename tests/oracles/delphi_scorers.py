"""Run delphi's own detection, fuzzing, intruder and simulation scorers (eai-delphi 0.1.3, in .venv-delphi) on records mechscope
wrote, answering every prompt from the answers mechscope's run recorded — the oracle of
tests/test_explain_delphi.py. Not part of mechscope; run by the test as a subprocess:

    .venv-delphi/bin/python tests/oracles/delphi_scorers.py IN.json OUT.json

IN: {"units": [{"test": [{"tokens", "acts", "quantile"}], "negatives": [{"tokens", "acts"}], "explanation"}],
     "n_shown": int, "intruder_shown": int, "answers": {json.dumps(messages): answer text}}
OUT: per unit and scorer: the prompts delphi sent that had no recorded answer, its per-example outputs in
its order (activating, distance, prediction), and its metrics (compute_confusion +
compute_classification_metrics, as get_agg_metrics computes them) per unit and pooled; for the intruder
scorer, per prompt: the intruder's index, the quantile, the prediction, whether it was right; for the simulation
scorer (when IN has "simulation": {"tokenizer": DIR, "logprobs": {messages: steps}}), per unit and mode its
groups: distance (0: all windows, q+1: quantile q), correlation, and per window the true and predicted
activations and their correlation."""

import asyncio
import json
import sys
import types
from dataclasses import dataclass

# delphi imports vllm (its offline client) when any scorer is imported; its full dependency set pulls vllm, a
# CUDA torch and an older transformers. Only these names are read at import time.
vllm = types.ModuleType("vllm")
vllm.LLM = vllm.SamplingParams = object
for name, attrs in {"vllm.distributed": {}, "vllm.distributed.parallel_state": {
        "destroy_distributed_environment": None, "destroy_model_parallel": None}, "vllm.inputs": {"TokensPrompt": object}}.items():
    mod = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(mod, k, v)
    sys.modules[name] = mod
sys.modules["vllm"] = vllm

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from delphi.clients.client import Client, Response  # noqa: E402
from delphi.latents import ActivatingExample, LatentRecord, NonActivatingExample  # noqa: E402
from delphi.latents.latents import Latent  # noqa: E402
from delphi.log.result_analysis import compute_classification_metrics, compute_confusion  # noqa: E402
from delphi.latents.samplers import normalize_activations  # noqa: E402
from delphi.scorers import DetectionScorer, FuzzingScorer, IntruderScorer  # noqa: E402
from delphi.scorers.simulator.simulation.oai_simulator import RefactoredOpenAISimulator  # noqa: E402


class Replay(Client):
    def __init__(self, answers):
        super().__init__("replay")
        self.answers, self.missing = answers, []

    async def generate(self, prompt, **kwargs):
        key = json.dumps(prompt, ensure_ascii=False)
        if "prompt_logprobs" in kwargs:
            return self.prompt_logprobs(prompt, key)
        if key not in self.answers:
            self.missing.append(prompt)
            return Response(text="")
        return Response(text=self.answers[key])


@dataclass
class Logprob:  # vLLM's shape of one prompt log-probability
    logprob: float
    decoded_token: str


class ChatTokens:
    """What delphi's simulator reads of ``client.tokenizer``: the chat template as ids, and ``encode``, whose
    element [1] it takes for the tab — it assumes a tokenizer that begins with a BOS (Llama's); this one
    gives a placeholder first."""

    def __init__(self, path):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path)

    def apply_chat_template(self, messages, add_generation_prompt=True):
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def encode(self, text):
        return [-1] + self.tok(text, add_special_tokens=False)["input_ids"]


class WindowTokens:
    """``batch_decode`` of a record's token ids, which here index the windows' token strings."""

    def __init__(self):
        self.strings = []

    def ids(self, tokens):
        self.strings += tokens
        return torch.arange(len(self.strings) - len(tokens), len(self.strings))

    def batch_decode(self, ids):
        return [self.strings[i] for i in ids.tolist()]


class SimulationReplay(Replay):
    """Answers delphi's simulator: JSON-mode prompts from the recorded answers; log-probability prompts with
    vLLM-shaped prompt log-probabilities — the recorded steps after the last tabs of the prompt, and at every
    other position a decoy (certain "9") that would show in the predictions if delphi read it."""

    def __init__(self, answers, logprobs, tokenizer_dir):
        super().__init__(answers)
        self.logprobs, self.tokenizer = logprobs, ChatTokens(tokenizer_dir)

    def prompt_logprobs(self, prompt, key):
        if key not in self.logprobs:
            self.missing.append(prompt)
            return Response(text="", prompt_logprobs=[])
        ids = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True)
        tab = self.tokenizer.encode("\t")[1]
        after_tab = [p for p in range(1, len(ids)) if ids[p - 1] == tab]
        steps = self.logprobs[key]
        table = [{0: Logprob(0.0, "9")} for _ in ids]
        for p, step in zip(after_tab[len(after_tab) - len(steps):], steps):
            table[p] = {j: Logprob(lp, text) for text, lp, j in step}
        return Response(text="", prompt_logprobs=table)


def windows_record(unit, i, words):
    """A unit's record whose examples carry token ids into ``words`` (a ``WindowTokens``) and, for its test
    windows, delphi's 0–10 ``normalized_activations`` — what the simulator reads."""
    test = [ActivatingExample(tokens=words.ids(c["tokens"]), activations=torch.tensor(c["acts"]),
                              str_tokens=c["tokens"], quantile=c["quantile"]) for c in unit["test"]]
    normalize_activations(test, unit["max_act"])
    neg = [NonActivatingExample(tokens=words.ids(c["tokens"]), activations=torch.zeros(len(c["tokens"])),
                                str_tokens=c["tokens"], distance=-1.0) for c in unit["negatives"]]
    r = LatentRecord(latent=Latent(module_name="m", latent_index=i), examples=test, not_active=neg, test=test)
    r.explanation = unit["explanation"]
    return r


def simulation(data):
    """delphi's simulator scorer, both modes, over every unit."""
    out = {}
    for mode in ("logprobs", "json"):
        client = SimulationReplay(data["answers"], data["simulation"]["logprobs"], data["simulation"]["tokenizer"])
        per_unit = []
        for i, unit in enumerate(data["units"]):
            words = WindowTokens()
            r = windows_record(unit, i, words)
            scorer = RefactoredOpenAISimulator(client, words, all_at_once=mode == "logprobs")
            res = asyncio.run(scorer(r))
            fix = lambda v: None if v == "nan" else float(v)  # noqa: E731
            per_unit.append([{"distance": g.distance, "correlation": fix(g.ev_correlation_score),
                              "windows": [[list(map(float, w.true_activations)),
                                           list(map(float, w.simulation.expected_activations)),
                                           fix(w.ev_correlation_score)] for w in g.scored_sequence_simulations]}
                             for g in res.score])
        out[mode] = {"missing": len(client.missing), "units": per_unit, "first_missing": client.missing[:1]}
    return out


def record(unit, i):
    test = [ActivatingExample(tokens=torch.zeros(len(c["tokens"]), dtype=torch.long),
                              activations=torch.tensor(c["acts"], dtype=torch.float32), str_tokens=c["tokens"],
                              quantile=c["quantile"]) for c in unit["test"]]
    neg = [NonActivatingExample(tokens=torch.zeros(len(c["tokens"]), dtype=torch.long),
                                activations=torch.zeros(len(c["tokens"])), str_tokens=c["tokens"], distance=-1.0)
           for c in unit["negatives"]]
    r = LatentRecord(latent=Latent(module_name="m", latent_index=i), examples=test, not_active=neg, test=test)
    r.explanation = unit["explanation"]
    return r


def frame(outputs):
    return pd.DataFrame([{"activating": o.activating, "prediction": o.prediction, "probability": o.probability}
                         for o in outputs])


def main(src, dst):
    data = json.load(open(src))
    out = {}
    for kind, cls in (("detection", DetectionScorer), ("fuzz", FuzzingScorer)):
        client = Replay(data["answers"])
        per_unit, every = [], []
        for i, unit in enumerate(data["units"]):
            scorer = cls(client, n_examples_shown=data["n_shown"], log_prob=False)  # one per unit: its own shuffle
            res = asyncio.run(scorer(record(unit, i)))
            every += res.score
            m = compute_classification_metrics(compute_confusion(frame(res.score)))
            per_unit.append({"outputs": [[o.activating, o.distance, o.prediction] for o in res.score],
                             "metrics": {k: float(v) for k, v in m.items()}})
        pooled = compute_classification_metrics(compute_confusion(frame(every)))
        out[kind] = {"missing": len(client.missing), "units": per_unit,
                     "pooled": {k: float(v) for k, v in pooled.items()},
                     "first_missing": client.missing[:1]}
    client = Replay(data["answers"])
    per_unit = []
    for i, unit in enumerate(data["units"]):  # one scorer per unit: its own Random(42)
        scorer = IntruderScorer(client, n_examples_shown=data["intruder_shown"], type="default", seed=42)
        res = asyncio.run(scorer(record(unit, i)))
        per_unit.append([[r.sample.intruder_index if r.sample else None, r.sample.chosen_quantile if r.sample else None,
                          r.prediction if r.sample else None, r.correct] for r in res.score])
    out["intruder"] = {"missing": len(client.missing), "units": per_unit, "first_missing": client.missing[:1]}
    if data.get("simulation"):
        out["simulation"] = simulation(data)
    json.dump(out, open(dst, "w"))


if __name__ == "__main__":
    main(*sys.argv[1:])
