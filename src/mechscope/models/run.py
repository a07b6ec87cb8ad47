"""Run: what one forward pass returned — logits, tokens, padding mask, cache, gradients."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Sequence

import torch

from .sites import SiteError

if TYPE_CHECKING:
    from .model import Model



class TokenProb(NamedTuple):
    """A next token and its probability: a plain (token, probability) tuple that shows the probability to 3
    places (``(' Paris', 0.773)``) and keeps it whole."""

    token: str
    prob: float

    def __repr__(self) -> str:
        return f"({self.token!r}, {self.prob:.3f})" if self.prob >= 5e-4 else f"({self.token!r}, {self.prob:.1e})"

class Cache(Mapping):
    """Site name -> tensor, for the sites a run was asked to keep (nothing else is kept).

    ``positions`` is set when only some positions were cached (their order along the pos dim).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], positions: Sequence[int] | None = None, what: str = "cached"):
        self._tensors = tensors
        self.positions = list(positions) if positions is not None else None
        self._what = what

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            have = ", ".join(self._tensors) or "nothing"
            ask = "cache" if self._what == "cached" else "grads"
            raise SiteError(
                f"{name!r} was not {self._what} in this run (have: {have}); ask for it with {ask}=[{name!r}]"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self._tensors.items())
        return f"Cache({inner})"

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors.values())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """A notebook's view: each kept site's shape and dtype (never the values)."""
        from ..display import fields_html

        rows = [(k, f"{tuple(v.shape)} {str(v.dtype).replace('torch.', '')}") for k, v in self._tensors.items()]
        return {"text/html": fields_html(f"{len(self)} site(s) {self._what}, {self.nbytes():,} bytes", rows),
                "text/plain": repr(self)}


@dataclass(eq=False)
class Run:
    """The result of ``Model.run``.

    tokens, mask: [batch, pos] (left-padded; ``mask`` is 1 on real tokens);
    logits: [batch, pos, vocab]; cache/grads: site -> tensor in the site's layout;
    metric: the value of ``metric(run)`` when gradients were asked for.
    """

    model: "Model" = field(repr=False)
    tokens: torch.Tensor
    mask: torch.Tensor
    logits: torch.Tensor
    cache: Cache
    grads: Cache
    metric: torch.Tensor | None = None

    @property
    def str_tokens(self) -> list[list[str]]:
        """Each row's real tokens as strings (padding removed)."""
        tok = self.model.tokenizer
        return [
            [tok.decode([int(t)]) for t, m in zip(row, mrow) if m]
            for row, mrow in zip(self.tokens.tolist(), self.mask.tolist())
        ]

    def last_logits(self) -> torch.Tensor:
        """Logits at each row's last real token: [batch, vocab] (rows are left-padded)."""
        return self.logits[:, -1]

    def top(self, k: int = 5) -> list[list[TokenProb]]:
        """Top-k next tokens after each row, as (token, probability) pairs (full precision; shown to 3 places)."""
        probs = self.last_logits().float().softmax(-1)
        values, ids = probs.topk(k, dim=-1)
        tok = self.model.tokenizer
        return [
            [TokenProb(tok.decode([int(i)]), float(p)) for p, i in zip(prow, irow)]
            for prow, irow in zip(values.tolist(), ids.tolist())
        ]

    def token_loss(self) -> torch.Tensor:
        """Next-token loss −log p(token_{t+1}) at each position t: [batch, pos − 1], NaN where
        position t or t+1 is padding."""
        logp = self.logits[:, :-1].float().log_softmax(-1)
        loss = -logp.gather(-1, self.tokens[:, 1:, None].to(logp.device))[..., 0]
        real = (self.mask[:, :-1] * self.mask[:, 1:]).bool().to(loss.device)
        return torch.where(real, loss, torch.full_like(loss, float("nan")))

    def __repr__(self) -> str:
        def names(c: Cache) -> str:
            keys = list(c)
            return f"[{', '.join(keys)}]" if len(keys) <= 4 else f"[{keys[0]}, ... {len(keys)} sites]"

        return (f"Run(batch={self.tokens.shape[0]}, pos={self.tokens.shape[1]}, "
                f"cache={names(self.cache)}, grads={names(self.grads)})")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """A notebook's view: each row's text and top next tokens, and what was kept (shapes, not values)."""
        from ..display import fields_html

        rows = [(f"row {i}", "".join(toks) + "  →  " + ", ".join(repr(t) for t in top))
                for i, (toks, top) in enumerate(zip(self.str_tokens, self.top(3)))]
        rows += [(f"cache {k}", tuple(v.shape)) for k, v in self.cache.items()]
        rows += [(f"grad {k}", tuple(v.shape)) for k, v in self.grads.items()]
        if self.metric is not None:
            rows.append(("metric", f"{float(self.metric.float().sum()):.6g}"))
        return {"text/html": fields_html(f"Run of {self.model.name}: {self.tokens.shape[0]} × {self.tokens.shape[1]} "
                                         "tokens", rows), "text/plain": repr(self)}
