"""One explaining run: examples, explanations, scores and baselines for every unit, as an ``Explanations``.

``explain_features(sae, model, features)`` and ``explain_neurons(model, layer, neurons)`` build each unit's
examples (``examples.unit_examples``), have the explainer write an explanation from the training contexts
(``explainer.write_explanations``), and have the scorer judge it on the test contexts and negatives with
each of ``scorers`` (``scoring.score``; ``"simulation"`` predicts its activations token by token,
``simulation.simulate``, in ``simulation_mode``; ``"intruder"`` adds the intruder test of each unit,
``intruder.intruder_score``, with ``intruder_shown`` contexts per prompt). ``baselines`` are scored the same way on the same contexts:
``"top_tokens"`` — the unit's commonest firing tokens as a list ("the tokens 'X', 'Y', ..."), and
``"shuffled"`` — another explained unit's explanation; an explanation that says something about its unit
beats both.

Under torchrun the units are divided among the ranks (each rank loads its own chat model) and gathered on
every rank. Every chat request is answered from the reply cache when it was asked before (``cache``: the
SQLite file; default ``clients.default_cache()``), so a rerun — or a run resumed after an interruption,
with ``distributed.records`` for the examples — costs only what was not yet done.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, Sequence

from tqdm.auto import tqdm

from .. import distributed
from ..models.model import Model
from ..models.sites import parse
from ..results import Provenance
from .clients import CachedChat, ChatClient, default_cache, open_chat
from .examples import ExampleConfig, UnitExamples, Units, dictionary_units, neuron_units, unit_examples
from .explainer import write_explanations
from .result import Explanations, UnitExplanation
from .intruder import intruder_score
from .scoring import SCORERS, Negatives, score
from .simulation import MODES, Mode, simulate

BASELINES = ("top_tokens", "shuffled")


def top_tokens(ex: UnitExamples, k: int = 5) -> list[str]:
    """The ``k`` tokens a unit fires on most often over its train and test contexts (ties: first seen)."""
    seen = Counter(t for c in ex["train"] + ex["test"] for t, a in zip(c["tokens"], c["acts"]) if a > ex["line"])
    return [t for t, _ in seen.most_common(k)]


def top_tokens_label(tokens: Sequence[str]) -> str:
    """A top-tokens list worded as an explanation."""
    return "the tokens " + ", ".join(repr(t) for t in tokens)


def _client(spec: Any, model: Model, cache: str | os.PathLike | None, **kw: Any) -> ChatClient:
    if spec is None or (isinstance(spec, str) and spec == model.name):
        spec = model  # the explained model explains itself when it can chat (the embedded SmolLM2 is an instruct model)
    if isinstance(spec, CachedChat):
        return spec
    return open_chat(spec, cache=cache, **kw)


def explain_units(units: Units, model: Model, *, explainer: Any = None, scorer: Any = None,
                  scorers: Sequence[str] = SCORERS, baselines: Sequence[str] = BASELINES,
                  config: ExampleConfig = ExampleConfig(), examples: list[UnitExamples] | None = None,
                  blocks: Any = None, n_blocks: int = 256, length: int = 64,
                  corpora: Sequence[str] = ("shakespeare",),
                  n_shown: int = 1, negatives: Negatives = "random", log_prob: bool = True,
                  activations: bool = True, retries: int = 1, intruder_shown: int = 5,
                  simulation_mode: Mode | None = None,
                  cache: str | os.PathLike | None | bool = True,
                  endpoint_model: str | None = None, progress: bool = True) -> Explanations:
    """Explain and score ``units`` (see the module docstring). ``explainer`` / ``scorer``: a chat client, a
    loaded model, a name ``mechscope.load`` opens or an ``http(s)://`` endpoint (None: ``model`` itself;
    the scorer defaults to the explainer). ``blocks`` [n, length] token ids to find contexts in (default:
    ``n_blocks`` blocks of the named corpora). ``cache``: True for the shared reply cache, a path, or
    False/None for none."""
    bad = [s for s in scorers if s not in (*SCORERS, "simulation", "intruder")]
    if bad:
        raise ValueError(f"scorers {bad}; valid: {', '.join(SCORERS)}, simulation, intruder")
    if simulation_mode is not None and simulation_mode not in MODES:
        raise ValueError(f"simulation_mode={simulation_mode!r}; valid: {', '.join(MODES)}")
    if "intruder" in scorers and intruder_shown < 2:
        raise ValueError(f"intruder_shown={intruder_shown}: the intruder test shows at least 2 contexts")
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise ValueError(f"baselines {bad}; valid: {', '.join(BASELINES)}")
    if negatives not in ("random", "hard"):
        raise ValueError(f"negatives={negatives!r}; valid: 'random', 'hard'")
    cache_path = default_cache() if cache is True else (cache or None)
    explain_client = _client(explainer, model, cache_path, endpoint_model=endpoint_model)
    score_client = explain_client if scorer is None else _client(scorer, model, cache_path,
                                                                 endpoint_model=endpoint_model)
    if simulation_mode is None:  # a local model reads log-probabilities; an endpoint answers in JSON
        inner = getattr(score_client, "client", score_client)
        simulation_mode = "logprobs" if hasattr(inner, "prompt_logprobs") else "json"
    if examples is None:
        examples = unit_examples(units, model, config=config, blocks=blocks, n_blocks=n_blocks, length=length,
                                 corpora=corpora,
                                 progress=progress)
    mine = distributed.share(len(examples))
    rank, _ = distributed.rank_world()
    lines: list[UnitExplanation] = []
    todo = [examples[i] for i in mine]
    if negatives == "hard":
        todo = [{**ex, "skipped": "no look-alike context where it is silent (score with random negatives)"}
                if not ex["skipped"] and not ex["hard_negatives"] else ex for ex in todo]
    ready = [ex for ex in todo if not ex["skipped"]]
    written = dict(zip((ex["unit"] for ex in ready),
                       write_explanations(explain_client, ready, activations=activations, retries=retries + 1)))
    for ex in tqdm(todo, desc="scoring", disable=not progress or rank != 0):
        text, bad_answers = written.get(ex["unit"], (None, 0))
        line: UnitExplanation = {"unit": ex["unit"], "explanation": text, "skipped": ex["skipped"],
                                 "malformed": bad_answers, "max_act": ex["max_act"], "density": ex["density"],
                                 "top_tokens": top_tokens(ex) if not ex["skipped"] else [], "scores": {},
                                 "baselines": {}, "intruder": None, "simulation": {}}
        if "intruder" in scorers and not ex["skipped"]:  # the unit itself, whether or not it was explained
            line["intruder"] = intruder_score(score_client, ex, n_shown=intruder_shown, retries=retries)
        if text is not None and ex["test"] and ex[f"{negatives}_negatives"]:  # (n_test=0: explanations alone)
            kw = dict(n_shown=n_shown, negatives=negatives, log_prob=log_prob, retries=retries)
            line["scores"] = {s: score(s, score_client, text, ex, **kw) for s in scorers if s in SCORERS}
            if "simulation" in scorers:
                line["simulation"]["explanation"] = simulate(score_client, text, ex, mode=simulation_mode,
                                                              negatives=negatives)
            if "top_tokens" in baselines and line["top_tokens"]:
                label = top_tokens_label(line["top_tokens"])
                line["baselines"]["top_tokens"] = {s: score(s, score_client, label, ex, **kw)
                                                   for s in scorers if s in SCORERS}
                if "simulation" in scorers:
                    line["simulation"]["top_tokens"] = simulate(score_client, label, ex, mode=simulation_mode,
                                                                 negatives=negatives)
        lines.append(line)
    lines = distributed.gather_objects(lines)
    if "shuffled" in baselines:
        _score_shuffled(lines, examples, score_client, scorers, n_shown=n_shown, negatives=negatives,
                        log_prob=log_prob, retries=retries, progress=progress, simulation_mode=simulation_mode)
    usage = {"explainer": explain_client.usage.as_dict()}
    if score_client is not explain_client:
        usage["scorer"] = score_client.usage.as_dict()
    layer = parse(units.site).layer
    return Explanations(provenance=Provenance.of(model, dataset="+".join(corpora), site=units.site, kind=units.kind,
                                                 units=units.indices, config=config.__dict__),
                        kind=units.kind, site=units.site, layer=-1 if layer is None else layer, units=lines,
                        explainer=explain_client.name, scorer=score_client.name, scorers=list(scorers),
                        n_shown=n_shown, negatives=negatives, usage=usage)


def _score_shuffled(lines: list[UnitExplanation], examples: list[UnitExamples], client: ChatClient,
                    scorers: Sequence[str], *, progress: bool, simulation_mode: Mode, **kw: Any) -> None:
    """Each explained unit scored with the next explained unit's explanation (a derangement; needs two)."""
    done = [i for i, ln in enumerate(lines) if ln["explanation"] is not None]
    if len(done) < 2:
        return
    by_unit = {ex["unit"]: ex for ex in examples}
    mine = distributed.share(len(done))
    rank, _ = distributed.rank_world()
    got = []
    for k in tqdm(mine, desc="shuffled", disable=not progress or rank != 0):
        i, j = done[k], done[(k + 1) % len(done)]
        ex = by_unit[lines[i]["unit"]]
        other = lines[j]["explanation"]
        sim = simulate(client, other, ex, mode=simulation_mode, negatives=kw["negatives"]) \
            if "simulation" in scorers else None
        got.append((i, {s: score(s, client, other, ex, **kw) for s in scorers if s in SCORERS}, sim))
    for i, scores, sim in distributed.gather_objects(got):
        lines[i]["baselines"]["shuffled"] = scores
        if sim is not None:
            lines[i]["simulation"]["shuffled"] = sim


def explain_features(sae: Any, model: Model, features: Sequence[int], **kw: Any) -> Explanations:
    """Explain and score ``features`` of a dictionary (any ``SparseCoder`` mechscope opens; a transcoder
    set's layer: ``tset[layer]``; a CLT's: ``clt.layer_coder(layer)``). Keywords: ``explain_units``'s."""
    return explain_units(dictionary_units(sae, model, features), model, **kw)


def explain_neurons(model: Model, layer: int, neurons: Sequence[int], **kw: Any) -> Explanations:
    """Explain and score MLP ``neurons`` of ``layer``. Keywords: ``explain_units``'s."""
    return explain_units(neuron_units(model, layer, neurons), model, **kw)
