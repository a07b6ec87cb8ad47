"""`mechscope demo`: study the embedded SmolLM2 as a specimen with the analyses that exist so far.

Predicts next tokens, scans every layer and head by ablation for a factual recall, traces the
answer with the logit lens and direct logit attribution, attributes it to input tokens (IG and
Shapley values), shows the attention of the layer holding the most important head, and steers a
generation; then finds the IOI circuit with EAP-IG (a second specimen) and reads and writes
sentiment (a third: probes at every layer with their control task, a control vector and its
behaviour-vs-perplexity sweep) — those two only with ``full``. Everything is stored as
specimens in the archive (re-running replaces the findings; the history keeps the old ones) and
written as self-contained HTML reports.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import names
from ..archive import open as open_archive
from ..attribution import token_ig, token_perturbation
from ..concepts.geometry import weight_tying
from ..components.heads import AttentionPatterns, detect_heads, head_circuits
from ..lenses.logit import direct_logit_attribution, logit_lens
from ..models.load import DEFAULT_MODEL, load
from ..circuits import eap_ig, minimal_circuit
from ..circuits.paths import path_patching
from ..components.patching import ablation_scan
from ..report import write_report
from ..results import NextTokens
from ..concepts.steering import SteeredGeneration
from ..tasks import make_task
from ..models.sites import block_site

PROMPTS = ["The capital of France is", "The Eiffel Tower is located in the city of", "1, 2, 3, 4,"]
STEER_PROMPT = "I think that my neighbour is"


def ioi_circuit(model, arch, progress: bool = True, pairs: int = 32):
    """The IOI circuit: EAP-IG scores every edge on ``pairs`` prompt pairs, the smallest greedy
    circuit with faithfulness 0.8 on half of them is kept, and path patching (on an eighth) asks
    which heads the top name mover's query reads."""
    t = time.perf_counter()
    ioi = make_task("ioi", model, n=pairs).solved_by(model)
    scores = eap_ig(model, ioi, steps=3, progress=progress)
    print(f"\n{scores.summary()}")
    circuit = minimal_circuit(model, ioi.subset(range(len(ioi) // 2)), scores, target=0.8, progress=progress)
    total = circuit.extra["total_edges"]
    print(f"{circuit.summary()}\n  {len(circuit.edges)} of {total} edges ({len(circuit.edges) / total:.1%})  "
          f"[{time.perf_counter() - t:.1f}s]")
    mover = next(s for s, r, _ in sorted(circuit.edges, key=lambda e: -e[2]) if r == "logits" and names.parse(s).kind == "head")
    paths = path_patching(model, ioi.subset(range(max(1, len(ioi) // 8))), f"{mover}.q", progress=progress)
    print(paths.summary())
    findings = [
        (circuit, f"EAP-IG (3 steps, {len(ioi)} pairs) ranks every edge; the smallest circuit grown from the logits "
                  f"that keeps 80% of the logit difference (corrupted ablation, {len(ioi) // 2} pairs) has {len(circuit.edges)} "
                  f"of {total} edges."),
        (scores, "The score of every edge: the estimated drop in logit(IO) − logit(S) when it alone is cut."),
        (paths, f"Which heads tell the strongest name mover ({mover}) where to look: path patching into its query."),
    ]
    return arch.record(f"{model.name}: IOI circuit", findings, model=model, task="ioi",
                       dataset="ioi v1 (Wang et al. templates, ABC corruption)",
                       description="Indirect object identification: the circuit found by EAP-IG with its "
                                   "faithfulness curve, and the heads that drive the name mover's query.",
                       tags=["circuit", "ioi"])


SENTIMENT_PROMPTS = ["I went to the market this morning and", "Yesterday my friend told me that the new restaurant",
                     "The weather today is", "My opinion of the book is that it", "Tell me about your day.",
                     "The movie I saw last night", "When I got home from work,", "The news this week"]


def sentiment_concept(model, arch, progress: bool = True):
    """Sentiment, read and written: logistic probes at every layer (adjectives never seen in
    training, with Hewitt & Liang's control task), a mean-difference control vector from 20
    contrastive pairs at a middle layer, and generation steered by it — positive-word rate of the
    continuations against perplexity of neutral text."""
    from ..concepts.datasets import NEGATIVE_WORDS, POSITIVE_WORDS
    from ..concepts.probes import probe_sweep
    from ..concepts.steering import NEUTRAL, control_vector, sentiment_pairs, steering_sweep, word_score

    sweep = probe_sweep(model, "sentiment", progress=progress)
    print("\n" + sweep.summary())
    site = block_site(model.cfg.n_layers // 3, "resid_post")
    cv = control_vector(model, sentiment_pairs(), site)
    steer = steering_sweep(model, cv, SENTIMENT_PROMPTS, [-1.0, 0.0, 0.5, 1.0],
                           score=lambda texts: word_score(texts, POSITIVE_WORDS, NEGATIVE_WORDS),
                           score_name="(positive − negative) words per word", neutral=NEUTRAL, max_new_tokens=24,
                           progress=progress)
    print(steer.summary())
    findings = [
        (sweep, "Sentiment is linearly readable at the adjective from the first layer on, for adjectives the probe "
                "never saw; the control task (random labels per adjective) stays far lower."),
        (cv, f"Mean difference of 20 contrastive pairs at {site}."),
        (steer, "Adding the vector makes continuations more positive; subtracting it removes positive words; "
                "perplexity of neutral text measures the cost."),
    ]
    return arch.record(f"{model.name}: sentiment", findings, model=model, task="sentiment",
                       dataset="mechscope sentiment prompts",
                       description="Reading and writing a concept: probes, a control vector, steering.",
                       tags=["concept", "probe", "steering"])


def _say(section: str, seconds: float, *lines: str, width: int = 100) -> None:
    """One section of the digest: its name and time, then a few lines clipped to ``width``."""
    print(f"{section} [{seconds:.1f}s]")
    for line in lines:
        line = " ".join(line.split())
        print(f"  {line if len(line) <= width else line[:width - 1] + '…'}")


def _line(result, n: int = 1, skip: int = 0) -> list[str]:
    """The first ``n`` non-empty lines of a result's summary, after ``skip`` of them."""
    return [line for line in result.summary().splitlines() if line.strip()][skip:skip + n]


def run_demo(model_name: str = DEFAULT_MODEL, out: str | Path = "mechscope-demo", progress: bool = True,
             archive: str | None = None, full: bool = False) -> Path:
    """Study ``model_name`` and store it as a specimen, printing a short digest per section and
    writing ``out/report.html``. ``full`` adds the IOI circuit (EAP-IG, minimal circuit, path
    patching: ~4 min on 2 cores) and the sentiment concept (probes, control vector, steering sweep:
    ~1 min), each a specimen of its own with its own report; their full summaries are printed."""
    out = Path(out)
    t0 = t = time.perf_counter()

    def lap() -> float:
        nonlocal t
        now = time.perf_counter()
        seconds, t = now - t, now
        return seconds

    model = load(model_name)
    _say("model", lap(), f"{model!r}", f"fingerprint {model.fingerprint}, {len(model.sites)} sites")

    findings = []
    preds = NextTokens.of(model.run(PROMPTS), PROMPTS, k=5)
    findings.append((preds, "What the model predicts on the demo prompts."))
    _say("predictions", lap(), *_line(preds, 3))

    target = preds.tokens[0][0]
    scans = {components: ablation_scan(model, PROMPTS[0], target, components=components, progress=progress)
             for components in ("layers", "heads")}
    name, drop = scans["heads"].top(1)[0]
    findings.append((scans["layers"], "Zero-ablating whole layers: which attention and MLP layers the recall needs."))
    findings.append((scans["heads"], f"Zero-ablating single heads: {name} alone costs {drop:+.2f} in log p."))
    _say("ablation (batched)", lap(), *(f"{kind}: {_line(scan, 1, 1)[0]}" for kind, scan in scans.items()))

    lens = logit_lens(model, PROMPTS[0], target)
    findings.append((lens, "Where the answer appears in the residual stream (each layer decoded by the final norm)."))
    runner_up = preds.tokens[0][2] if preds.tokens[0][1].strip() in ("", "the") else preds.tokens[0][1]
    dla = direct_logit_attribution(model, PROMPTS[0], target, foil=runner_up)
    findings.append((dla, f"Which components write {target!r} rather than {runner_up!r} directly."))
    _say("logit lens, DLA", lap(), *_line(lens), *_line(dla, 1, 1))
    ig = token_ig(model, PROMPTS[0], target, baseline="pad", hold=[0], steps=64, method="riemann_trapezoid")
    shap = token_perturbation(model, PROMPTS[0], target, method="shap", hold=[0])
    findings.append((ig, "Integrated gradients in the converging setting: pad baseline, first token held, "
                         "64-point trapezoid. Without holding the first token the path is too rough to converge."))
    findings.append((shap, "Exact Shapley values over the tokens (absent tokens become the pad token)."))
    _say("input attribution", lap(), *_line(ig, 2), *_line(shap))

    heads = detect_heads(model, progress=progress)
    findings.append((heads, "Induction heads found by prefix matching on repeated random tokens, with ablation "
                            "evidence against random heads of the same layers."))
    circuits = head_circuits(model)
    findings.append((circuits, "From the weights alone: copying scores and Q/K/V composition between heads (the "
                               "previous-token → induction K-composition shows up here)."))
    tying = weight_tying(model, tokens=(" king", " Paris", " red"))
    findings.append((tying, "Tied embeddings make the direct path a symmetric form that favours repeating the input "
                            "token; the embedding's nearest neighbours are the token's variants and its category."))
    _say("heads and weights", lap(), *_line(heads, 2), *_line(circuits), *_line(tying))

    layer = int(name[1:name.index("H")])
    patterns = AttentionPatterns.of(model.run(PROMPTS[0], cache=block_site(layer, "attn.pattern")), layer)
    findings.append((patterns, f"Layer {layer} holds the most important head ({name}); hover a token to see it attend."))
    site = block_site(max(1, model.cfg.n_layers // 3), "resid_pre")
    steer = SteeredGeneration.compare(model, STEER_PROMPT, site, "I love you", "I hate you", coef=2.0)
    findings.append((steer, "An ActAdd-style vector from one contrast pair."))
    _say("attention, steering", lap(), *_line(steer, 3))

    arch = open_archive(archive)
    spec = arch.record(
        f"{model.name}: demo", findings, model=model, task="factual-recall", dataset="mechscope demo prompts",
        description="What `mechscope demo` finds on the embedded model: predictions, the components a factual "
                    "recall needs, attention, and a steering vector.", tags=["demo"])
    report, _ = write_report(spec, out / "report.html")
    where = f" --archive {archive}" if archive else ""
    _say("stored", lap(), f"specimen {spec.name!r} ({spec.uid[:8]}, version {spec.version}) in {arch!r}",
         f"report: {report}")
    if full:
        print("\nIOI circuit (--full)")
        write_report(ioi_circuit(model, arch, progress), out / "ioi-circuit.html")
        _say("IOI circuit", lap(), f"report: {out / 'ioi-circuit.html'}")
        print("\nsentiment (--full)")
        write_report(sentiment_concept(model, arch, progress), out / "sentiment.html")
        _say("sentiment", lap(), f"report: {out / 'sentiment.html'}")
    more = "" if full else "; `mechscope demo --full` adds the IOI circuit and the sentiment concept"
    print(f"\nTotal {time.perf_counter() - t0:.1f}s. Browse the archive: mechscope serve{where}{more}")
    return report
