"""Attention heads: their patterns as a result that draws itself (interactive in HTML)."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import ClassVar

import torch

from .results import Provenance, Result
from .run import Run


@dataclass
class AttentionPatterns(Result):
    """Every head's attention pattern of one layer on one prompt. pattern: [head, q_pos, k_pos]."""

    prompt: str
    tokens: list[str]
    layer: int
    pattern: torch.Tensor
    title: ClassVar[str] = "Attention patterns"

    @classmethod
    def of(cls, run: Run, layer: int, row: int = 0) -> "AttentionPatterns":
        """From a run that cached ``blocks.{layer}.attn.pattern`` (padding removed)."""
        pat = run.cache[f"blocks.{layer}.attn.pattern"][row]
        real = run.mask[row].bool().to(pat.device)
        pat = pat[:, real][:, :, real].float().cpu()
        tokens = run.str_tokens[row]
        return cls(provenance=Provenance.of(run.model, prompts=["".join(tokens)], layer=layer),
                   prompt="".join(tokens), tokens=tokens, layer=layer, pattern=pat)

    def strongest(self, head: int) -> list[tuple[str, str, float]]:
        """For each query token, (query, most-attended key, weight) of ``head``."""
        best = self.pattern[head].max(-1)
        return [(self.tokens[q], self.tokens[int(k)], float(w)) for q, (w, k) in enumerate(zip(*best))]

    def summary(self) -> str:
        n_heads = self.pattern.shape[0]
        prev = [float(self.pattern[h].diagonal(-1).mean()) if len(self.tokens) > 1 else 0.0 for h in range(n_heads)]
        first = [float(self.pattern[h, 1:, 0].mean()) if len(self.tokens) > 1 else 1.0 for h in range(n_heads)]
        top_prev = max(range(n_heads), key=prev.__getitem__)
        return (f"Layer {self.layer}, {n_heads} heads on {self.prompt!r}: head {top_prev} attends most to the previous "
                f"token (mean {prev[top_prev]:.2f}); mean attention to the first token {sum(first) / n_heads:.2f}.")

    def evidence(self) -> dict:
        return {"layer": self.layer, "n_tokens": len(self.tokens)}

    def figure(self):
        import matplotlib.pyplot as plt

        n = self.pattern.shape[0]
        cols = min(n, 5)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
        for h, ax in enumerate(axes.flat):
            ax.axis("off")
            if h < n:
                ax.imshow(self.pattern[h].numpy(), cmap="Blues", vmin=0, vmax=1)
                ax.set_title(f"L{self.layer}H{h}", fontsize=8)
        fig.tight_layout()
        return fig

    def html(self, png: bytes | None = None) -> str:
        """Hover a token to see where the selected head attends from it; click a head to switch."""
        data = json.dumps({"pattern": [[[round(float(v), 4) for v in row] for row in head] for head in self.pattern],
                           "tokens": self.tokens}).replace("</", "<\\/")
        buttons = "".join(f"<button type='button' class='head' data-head='{h}'>{h}</button>"
                          for h in range(self.pattern.shape[0]))
        toks = "".join(f"<span class='tok' data-i='{i}'>{html.escape(t)}</span>" for i, t in enumerate(self.tokens))
        return f"""<section class='result attention'><h2>{html.escape(self.title)}: layer {self.layer}</h2>
<pre>{html.escape(self.summary())}</pre>
<div class='heads'>head: {buttons} (showing head <b class='cur'>0</b>)</div>
<div class='tokens' style='line-height:2;font-family:monospace;white-space:pre-wrap'>{toks}</div>
<div class='attn-info'>Hover a token to see where the head attends from it.</div>
<script type='application/json' class='attn-data'>{data}</script>
<script>(function(){{
  var root = document.currentScript.parentElement;
  var d = JSON.parse(root.querySelector('.attn-data').textContent), head = 0;
  var toks = root.querySelectorAll('.tok'), info = root.querySelector('.attn-info');
  function show(i) {{
    var row = d.pattern[head][i], best = 0;
    toks.forEach(function(t, j) {{
      var w = j < row.length ? row[j] : 0; if (w > row[best]) best = j;
      t.style.background = 'rgba(220,60,40,' + w + ')'; t.style.outline = j == i ? '1px solid #333' : '';
    }});
    info.textContent = 'head ' + head + ': ' + JSON.stringify(d.tokens[i]) + ' attends most to '
      + JSON.stringify(d.tokens[best]) + ' (' + row[best].toFixed(2) + ')';
  }}
  toks.forEach(function(t) {{ t.addEventListener('mouseenter', function() {{ show(+t.dataset.i); }}); }});
  root.querySelectorAll('button.head').forEach(function(b) {{
    b.addEventListener('click', function() {{ head = +b.dataset.head; root.querySelector('.cur').textContent = head; }});
  }});
}})();</script></section>"""
