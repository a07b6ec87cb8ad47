"""The one run engine that language and image models share.

A run is planned (``Engine._plan``) into one ``SiteAction`` per concrete site — what to cache,
what to keep for gradients, which interventions to apply with the data bound to each — and
executed by ``models.hooks``: ``HookState.process`` applies interventions through
``interventions.Selection`` and records caches and gradient leaves; ``hooked`` places the hooks.
A model class supplies only what differs: how names resolve to sites (``_sites``) and how an
intervention's source (prompts, images, a run) becomes a run (``_source_run``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch

from .interventions import Ablate, Intervention, InterventionError, Replace, as_interventions, site_mean
from .hooks import HookState, SiteAction
from .sites import Site


class Engine:
    """Planning, binding and gradients for ``Model`` and ``vision.ImageModel``."""

    def _sites(self, names: str | Iterable[str] | None) -> list[Site]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _source_run(self, iv: Intervention, sites: list[Site]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_intervention(self, iv: Intervention) -> None:
        """Refuse what this kind of model cannot apply (before anything runs)."""
        if not isinstance(iv, Intervention):
            raise TypeError(f"not an intervention: {iv!r} (use ms.Ablate, ms.Patch, ms.Add, ms.ProjectOut, ms.Replace, ms.Route)")

    def _plan(self, cache, interventions: Sequence[Intervention], grads) -> dict[str, SiteAction]:
        actions: dict[str, SiteAction] = {}

        def action(site: Site) -> SiteAction:
            return actions.setdefault(site.name, SiteAction(site))

        for site in self._sites(cache):
            action(site).cache = True
        for site in self._sites(grads):
            action(site).grad = True
        for iv in as_interventions(interventions):
            self._check_intervention(iv)
            sites = self._sites(iv.site)
            source = self._source_run(iv, sites)
            for site in sites:
                action(site).interventions.append((iv, self._bind(iv, site, source)))
        return actions

    @staticmethod
    def _bind(iv: Intervention, site: Site, source: Any) -> Any:
        """Per-site data for ``iv``: a reference mean, or (source tensor, source mask). An image
        site that selects channels reads its module's whole output from the source."""
        if source is None:
            return None
        if isinstance(source, torch.Tensor):
            return source, None
        if source.cache.positions is not None:
            raise InterventionError(
                f"{type(iv).__name__} at {site.name}: the source run cached only positions "
                f"{source.cache.positions}; run it without cache_positions"
            )
        tensor = source.cache[whole(site)]
        if isinstance(iv, Ablate) and iv.how == "mean":
            return site_mean(tensor, source.mask, site, iv.over)
        return tensor, source.mask

    @staticmethod
    def _gradients(run: Any, state: HookState, metric: Callable[[Any], torch.Tensor]) -> None:
        """Differentiate ``metric(run)`` (summed if not a scalar) at the sites kept for gradients;
        fills ``run.grads`` and ``run.metric`` and detaches what the run returns."""
        from .run import Cache

        value = metric(run)
        if value.dim():
            value = value.sum()
        names = list(state.grad_at)
        got = torch.autograd.grad(value, [state.grad_at[n] for n in names], allow_unused=True) if names else []
        grads = {}
        for n, g in zip(names, got):
            g = (g if g is not None else torch.zeros_like(state.grad_at[n])).detach()
            channels = state.actions[n].site.channels
            grads[n] = g[:, list(channels)] if channels is not None else g
        run.grads = Cache(grads, what="kept for gradients")
        run.metric = value.detach()
        run.logits = run.logits.detach()

    def forward_until(self, inputs: Any, site: str | list[str]) -> torch.Tensor | list[torch.Tensor]:
        """The value of ``site`` (or of each of several sites, as a list) for ``inputs``, running the
        model only until the last of them is computed (the later layers are skipped); gradients flow
        when they are enabled and the inputs need them."""
        sites = [site] if isinstance(site, str) else list(site)
        got: dict[str, torch.Tensor] = {}

        def take(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
            def fn(x: torch.Tensor) -> torch.Tensor:
                got[name] = x
                if len(got) == len(set(sites)):
                    raise _Enough
                return x
            return fn

        try:
            self.run(inputs, interventions=[Replace(s, fn=take(s)) for s in sites])
        except _Enough:
            pass
        missing = [s for s in sites if s not in got]
        if missing:
            raise ValueError(f"{missing[0]} was not computed by a forward of {self.name}")
        return got[site] if isinstance(site, str) else [got[s] for s in sites]


class _Enough(Exception):
    """Raised inside a forward once the wanted sites are computed: the later layers are skipped."""


def whole(site: Site) -> str:
    """The name under which a site's whole tensor is cached: itself, or for an image site that
    selects channels (``_blocks.4:17``) its module's (``_blocks.4``)."""
    return site.name.partition(":")[0] if site.channels is not None else site.name
