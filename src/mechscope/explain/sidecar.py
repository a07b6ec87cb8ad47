"""Explanations that travel with their dictionary: ``explanations.json`` beside its weights, keyed by the
dictionary's fingerprint (``models.fingerprint.fingerprint_of``), so explanations written for one set of
weights are never shown for another. Per feature: the explanation, who wrote and scored it, and each
scorer's balanced accuracy, AUC and malformed answers. A later run adds its features and replaces those
it explained again; the file is written whole or not at all."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..files import write_atomic
from ..components.neurons import CardExplanation
from .result import Explanations

SIDECAR = "explanations.json"


def dictionary_fingerprint(sae: Any) -> str:
    """The fingerprint a dictionary's sidecar is keyed by."""
    from ..models.fingerprint import fingerprint_of

    return fingerprint_of(sae, {})


def sidecar_entries(result: Explanations) -> dict[int, dict[str, Any]]:
    """{unit: {"explanation", "explainer", "scorer", "scores"}} of ``result``'s explained units, as the
    sidecar keeps them (per scorer its balanced accuracy, AUC, malformed answers and count; simulation: its
    correlation)."""
    entries: dict[int, dict[str, Any]] = {}
    for u in result.units:
        if u["explanation"] is None:
            continue
        entries[u["unit"]] = {
            "explanation": u["explanation"], "explainer": result.explainer, "scorer": result.scorer,
            "scores": {s: {"balanced_accuracy": sc["metrics"]["balanced_accuracy"], "auc": sc["metrics"]["auc"],
                           "malformed": sc["malformed"], "n": sc["metrics"]["n"]} for s, sc in u["scores"].items()}}
        sim = u.get("simulation", {}).get("explanation")
        if sim is not None:
            entries[u["unit"]]["scores"]["simulation"] = {"correlation": sim["correlation"], "mode": sim["mode"],
                                                          "malformed": sim["malformed"], "n": len(sim["windows"])}
    return entries


def write_sidecar(result: Explanations, folder: str | os.PathLike, fingerprint: str) -> Path:
    """Add ``result``'s explanations to ``folder``'s sidecar (a sidecar of other weights is replaced, with a
    warning)."""
    path = Path(folder) / SIDECAR
    features = read_sidecar(folder, fingerprint, quiet=True) if path.exists() else {}
    features.update(sidecar_entries(result))
    doc = {"fingerprint": fingerprint, "site": result.site, "kind": result.kind,
           "features": {str(k): v for k, v in sorted(features.items())}}
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False)))


def read_sidecar(folder: str | os.PathLike, fingerprint: str, *, quiet: bool = False) -> dict[int, dict[str, Any]]:
    """{feature: {"explanation", "explainer", "scorer", "scores"}} from ``folder``'s sidecar; {} where there is
    none, or (with a warning) where it was written for other weights or cannot be read."""
    path = Path(folder) / SIDECAR
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
        if doc.get("fingerprint") != fingerprint:
            if not quiet:
                warnings.warn(f"{path} explains other weights (fingerprint {doc.get('fingerprint')!r}, these are "
                              f"{fingerprint!r}): its explanations are not shown", stacklevel=2)
            return {}
        return {int(k): v for k, v in doc["features"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        warnings.warn(f"{path} cannot be read ({err}): its explanations are not shown", stacklevel=2)
        return {}


def card_explanations(source: Explanations | dict[int, dict[str, Any]]) -> dict[int, CardExplanation]:
    """Explanations as cards show them (``NeuronCards.with_explanations``), from a run's ``Explanations`` or a
    sidecar's entries (``read_sidecar``): per unit the text, who wrote it, and each scorer's headline number."""
    entries = sidecar_entries(source) if isinstance(source, Explanations) else source
    return {int(k): {"explanation": v["explanation"], "explainer": v.get("explainer", ""),
                     "scores": {s: sc.get("correlation") if s == "simulation" else sc.get("balanced_accuracy")
                                for s, sc in v.get("scores", {}).items()}} for k, v in entries.items()}
