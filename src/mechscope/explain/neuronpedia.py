"""Explanations as Neuronpedia exports them: ``explanations/batch-N.jsonl.gz``, one gzipped JSON line per
explanation in the shape of Neuronpedia's ``Explanation`` rows (``modelId``, ``layer`` — the source id —,
``index``, ``description``, ``typeName``, ``explanationModelName``, ...) with its scores as
``ExplanationScore`` objects: detection as ``eleuther_recall`` and fuzzing as ``eleuther_fuzz`` (the names
Neuronpedia gives delphi's two scorers), ``value`` the balanced accuracy, ``jsonDetails`` the per-context
verdicts (delphi's ``ClassifierOutput`` fields, the context as shown in ``text``; ``distance`` the activation quantile counted from 1, −1 for
a non-activating context; ``prediction`` 1, 0 or −1 where the answer was malformed)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..files import write_atomic
from .result import Explanations

SCORE_NAMES = {"detection": "eleuther_recall", "fuzz": "eleuther_fuzz"}
EXPLANATION_TYPE = "eleuther_acts_top20"  # Neuronpedia's name for delphi's default explainer


def _id(*parts: str) -> str:
    return "ms" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:23]


def explanation_rows(result: Explanations, model_id: str, source_id: str, *, author: str = "mechscope",
                     explanation_type: str = EXPLANATION_TYPE) -> list[dict[str, Any]]:
    """One Neuronpedia ``Explanation`` row (with its ``scores``) per explained unit of ``result``."""
    when = result.provenance.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    explainer = result.explainer.split(":", 1)[-1]
    scorer = result.scorer.split(":", 1)[-1]
    rows = []
    for u in result.units:
        if u["explanation"] is None:
            continue
        eid = _id(model_id, source_id, str(u["unit"]), u["explanation"], explainer)
        scores = []
        for kind, name in SCORE_NAMES.items():
            s = u["scores"].get(kind)
            if s is None:
                continue
            details = [{"text": p["text"], "distance": p["quantile"] + 1 if p["activating"] else -1,
                        "activating": p["activating"], "prediction": -1 if p["prediction"] is None else int(p["prediction"]),
                        "probability": p["probability"],
                        "correct": None if p["prediction"] is None else p["prediction"] == p["activating"]}
                       for p in s["predictions"]]
            scores.append({"id": _id(eid, name), "initiatedByUserId": author, "value": s["metrics"]["balanced_accuracy"],
                           "explanationId": eid, "explanationScoreTypeName": name,
                           "explanationScoreModelName": scorer, "jsonDetails": json.dumps(details),
                           "createdAt": when})
        rows.append({"id": eid, "modelId": model_id, "layer": source_id, "index": str(u["unit"]),
                     "description": u["explanation"], "authorId": author, "triggeredByUserId": None,
                     "notes": f"mechscope: explained by {result.explainer}, scored by {result.scorer}",
                     "scoreV1": 0.0, "scoreV2": None, "typeName": explanation_type,
                     "explanationModelName": explainer, "createdAt": when, "updatedAt": when, "scores": scores})
    return rows


def write_explanations(result: Explanations, folder: str | os.PathLike, model_id: str, source_id: str, *,
                       batch_size: int = 1024, **kw: Any) -> list[Path]:
    """``folder/explanations/batch-N.jsonl.gz`` (``batch_size`` explanations each, N from 0); each file written
    whole or not at all."""
    rows = explanation_rows(result, model_id, source_id, **kw)
    out = []
    for n, start in enumerate(range(0, len(rows), batch_size)):
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[start:start + batch_size]).encode()
        path = Path(folder) / "explanations" / f"batch-{n}.jsonl.gz"
        out.append(write_atomic(path, lambda tmp, data=data: tmp.write_bytes(gzip.compress(data, mtime=0))))
    return out
