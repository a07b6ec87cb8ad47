"""A layered SVG drawing of a component graph: rows by layer, edge width by |score|, hover for scores."""

from __future__ import annotations

from markupsafe import Markup

from .. import names
from .render import render


def node_rank(name: str) -> float:
    """Vertical order of a node: embed < a{l}.* < m{l} < a{l+1}.* < ... < logits (``names.rank``)."""
    return names.rank(name)


def _to_node(name: str) -> str:
    """Where an edge into a component's input is drawn: ``a3.h2.q`` → ``a3.h2``."""
    try:
        is_input = names.parse(name).input is not None
    except names.ComponentNameError:
        return name
    return name.rsplit(".", 1)[0] if is_input else name  # in the spelling the circuit uses


def graph_svg(nodes: list[str], edges: list[tuple[str, str, float]], width: int = 900) -> Markup:
    """An SVG with one row per rank; each edge carries its label (title and data-label). Edges
    into a head's query/key/value input (``a3.h2.q``) are drawn into the head."""
    ranks = sorted({node_rank(n) for n in nodes})
    row_of = {r: i for i, r in enumerate(ranks)}
    rows: dict[float, list[str]] = {}
    for n in nodes:
        rows.setdefault(node_rank(n), []).append(n)
    gap = 56
    height = gap * (len(ranks) + 1)
    pos = {}
    for rank, members in rows.items():
        for i, n in enumerate(members):
            pos[n] = (width * (i + 1) / (len(members) + 1), height - gap * (row_of[rank] + 1))
    top = max((abs(s) for _, _, s in edges), default=1.0) or 1.0
    drawn = []
    for src, dst, score in sorted(edges, key=lambda e: abs(e[2])):
        if src not in pos or _to_node(dst) not in pos:
            continue
        (x1, y1), (x2, y2) = pos[src], pos[_to_node(dst)]
        bulge = 28.0 if abs(x1 - x2) < 1 else 0.0  # vertical edges bow out around the nodes between
        ym = (y1 + y2) / 2
        drawn.append({"d": f"M{x1:.1f},{y1:.1f} C{x1 + bulge:.1f},{ym:.1f} {x2 + bulge:.1f},{ym:.1f} {x2:.1f},{y2:.1f}",
                      "label": f"{src} → {dst}: {score:+.3g}", "colour": "#2b6cb0" if score >= 0 else "#c53030",
                      "w": 0.6 + 7 * abs(score) / top, "abs": abs(score)})
    return render("graph.svg", width=width, height=height, edges=drawn,
                  nodes=[{"name": n, "x": x, "y": y} for n, (x, y) in pos.items()])


def graph_html(nodes: list[str], edges: list[tuple[str, str, float]], width: int = 900) -> Markup:
    """The SVG plus an info line that hovering an edge fills (by the page's static script)."""
    return render("graph.html", svg=graph_svg(nodes, edges, width))
