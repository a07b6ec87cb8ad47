"""The component graph of a model: who writes to the residual stream and who reads from it.

Senders (nodes that write): ``embed``, every attention head ``a{l}.h{h}``, every MLP ``m{l}`` — in a
mixture of experts every expert ``m{l}.e{e}`` (and Qwen2-MoE's gated shared expert ``m{l}.shared``)
instead, while the MoE block stays one receiver ``m{l}``.
Receivers (inputs that read): each head's query ``a{l}.h{h}.q``, each key/value head's key and
value (``a{l}.h{h}.k`` / ``.v``; with grouped-query attention the shared ``a{l}.kv{g}.k`` /
``.v``), each MLP's input ``m{l}`` and the ``logits``. An edge sender → receiver exists when the
sender writes before the receiver reads: the receiver's input is the sum of its senders' outputs
(plus constant biases), so an edge can be cut or patched on its own. Names are written and read by
``mechscope.names`` (so ``L3H2`` works wherever ``a3.h2`` does).

Edge masks are float tensors [senders, receivers]: 1 keeps an edge, 0 ablates it; entries that are
not edges (``Graph.allowed`` false) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from .. import names
from ..models.model import Model



class UnknownComponent(KeyError, ValueError):
    """A sender or receiver name this graph does not have (a ``KeyError`` for lookups, a ``ValueError``
    for arguments), printed as its message rather than a quoted key."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

@dataclass(frozen=True)
class Graph:
    """Senders, receivers and which edges exist, for a model of this shape.

    ``sender_start[l]``: index of the first sender of layer l (senders before it write earlier);
    ``attn_receivers[l]``: receiver indices of layer l's queries, keys, values (in that order).
    ``n_experts`` > 0: each MLP is a mixture of experts whose experts send separately.
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    has_mlp: bool
    parallel: bool
    n_experts: int = 0
    shared_expert: bool = False

    @classmethod
    def of(cls, model: Model) -> "Graph":
        c = model.cfg
        return cls(c.n_layers, c.n_heads, c.n_kv_heads, c.d_mlp > 0 or model.n_experts > 0, c.parallel_blocks,
                   model.n_experts, model.adapter.shared_expert is not None)

    @property
    def shape(self) -> list:
        """The fields that rebuild this graph: ``Graph(*g.shape)`` (what saved results store)."""
        moe = [self.n_experts, self.shared_expert] if self.n_experts else []
        return [self.n_layers, self.n_heads, self.n_kv_heads, self.has_mlp, self.parallel, *moe]

    def mlp_senders(self, layer: int) -> list[str]:
        """What layer ``layer``'s MLP sends as: ``m{l}``, or each expert (and a shared expert)."""
        if not self.has_mlp:
            return []
        if not self.n_experts:
            return [names.mlp(layer).node]
        return [names.expert(layer, e).node for e in range(self.n_experts)] + (
            [names.shared_expert(layer).node] if self.shared_expert else [])

    # ------------------------------------------------------------------------------------------
    @cached_property
    def senders(self) -> list[str]:
        out = ["embed"]
        for l in range(self.n_layers):
            out += [names.head(l, h).node for h in range(self.n_heads)]
            out += self.mlp_senders(l)
        return out

    @cached_property
    def sender_start(self) -> list[int]:
        per = self.n_heads + len(self.mlp_senders(0)) if self.n_layers else 0
        return [1 + l * per for l in range(self.n_layers)]

    def kv(self, layer: int, group: int, input: str | None = None) -> names.Component:
        """The component reading key/value group ``group``: the head itself without grouped-query attention."""
        return names.head(layer, group, input) if self.n_kv_heads == self.n_heads else names.kv_head(layer, group, input)

    def kv_name(self, layer: int, group: int) -> str:
        return self.kv(layer, group).node

    @cached_property
    def receivers(self) -> list[str]:
        out = []
        for l in range(self.n_layers):
            out += [names.head(l, h, "q").node for h in range(self.n_heads)]
            out += [self.kv(l, g, "k").node for g in range(self.n_kv_heads)]
            out += [self.kv(l, g, "v").node for g in range(self.n_kv_heads)]
            if self.has_mlp:
                out.append(names.mlp(l).node)
        return out + ["logits"]

    @cached_property
    def attn_receivers(self) -> list[range]:
        per = self.n_heads + 2 * self.n_kv_heads + int(self.has_mlp)
        return [range(l * per, l * per + self.n_heads + 2 * self.n_kv_heads) for l in range(self.n_layers)]

    def mlp_receiver(self, layer: int) -> int:
        return self.attn_receivers[layer].stop

    def upstream(self, receiver: int) -> int:
        """How many senders (a prefix of ``senders``) write before ``receiver`` reads."""
        if receiver == len(self.receivers) - 1:
            return len(self.senders)
        for l, rng in enumerate(self.attn_receivers):
            if receiver in rng:
                return self.sender_start[l]
            if self.has_mlp and receiver == self.mlp_receiver(l):
                return self.sender_start[l] + (0 if self.parallel else self.n_heads)
        raise IndexError(receiver)

    @cached_property
    def allowed(self) -> torch.Tensor:
        """[senders, receivers] bool: which edges exist."""
        mask = torch.zeros(len(self.senders), len(self.receivers), dtype=torch.bool)
        for r in range(len(self.receivers)):
            mask[: self.upstream(r), r] = True
        return mask

    @property
    def n_edges(self) -> int:
        return int(self.allowed.sum())

    def edge_index(self, sender: str, receiver: str) -> tuple[int, int]:
        """(sender index, receiver index) of an edge; a clear error for unknown names or non-edges."""
        r_of = self._receiver_index
        i = self.sender_index(sender)
        if receiver not in r_of:
            c = _component(receiver)
            receiver = c.node if c is not None else receiver
        if receiver not in r_of:
            raise UnknownComponent(f"unknown receiver {receiver!r}; e.g. {self.receivers[0]!r}, "
                           f"{self.receivers[self.n_heads]!r}, 'logits'")
        j = r_of[receiver]
        if not self.allowed[i, j]:
            raise KeyError(f"{sender} → {receiver} is not an edge: {sender} writes after {receiver} reads")
        return i, j

    @cached_property
    def _sender_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.senders)}

    @cached_property
    def _receiver_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.receivers)}

    def receivers_of(self, name: str) -> list[int]:
        """Receiver indices a name stands for: an input (``a3.h2.q``, ``a3.kv1.k``, ``m3``,
        ``logits``) or a head (``a3.h2``: its query, key and value — with grouped-query attention
        the key and value its group shares)."""
        c = _component(name)
        if c is not None and c.node in self._receiver_index:
            return [self._receiver_index[c.node]]
        if c is not None and c.kind == "head" and c.owner.node in self._sender_index:
            group = c.index // (self.n_heads // self.n_kv_heads)
            if c.input is None:  # the whole head: its query, and the key and value it reads
                return [self._receiver_index[names.head(c.layer, c.index, "q").node],
                        self._receiver_index[self.kv(c.layer, group, "k").node],
                        self._receiver_index[self.kv(c.layer, group, "v").node]]
            if c.input in ("k", "v"):  # a head's key/value under grouped-query attention
                return [self._receiver_index[self.kv(c.layer, group, c.input).node]]
        raise UnknownComponent(f"unknown receiver {name!r}; give a head (a{{l}}.h{{h}}), one of its inputs "
                       f"(a{{l}}.h{{h}}.q/.k/.v), an MLP (m{{l}}) or 'logits' "
                       f"(layers 0..{self.n_layers - 1}, heads 0..{self.n_heads - 1})")

    @cached_property
    def _readers(self) -> list[list[int]]:
        out = []
        group = self.n_heads // self.n_kv_heads
        for name in self.receivers:
            c = _component(self.node_of(name)) if name != "logits" else None
            if c is None:
                out.append([])
            elif c.kind == "kv":  # a shared key/value input serves every head of its group
                out.append([self._sender_index[names.head(c.layer, h).node]
                            for h in range(c.index * group, (c.index + 1) * group)])
            elif c.kind == "mlp":  # an MLP's input serves it, or every expert of a mixture
                out.append([self._sender_index[s] for s in self.mlp_senders(c.layer)])
            else:
                out.append([self._sender_index[c.node]])
        return out

    def readers(self, receiver: int) -> list[int]:
        """The senders whose output reads receiver ``receiver``'s input (a head's q/k/v: the head; a
        grouped key/value: every head of its group; an MLP: it, or each of its experts; logits: none)."""
        return self._readers[receiver]

    def sender_index(self, name: str) -> int:
        if name in self._sender_index:  # the node spelling: no parsing on the hot path
            return self._sender_index[name]
        c = _component(name)
        name = c.node if c is not None else name
        if name not in self._sender_index:
            mlp = (f"experts m{{l}}.e{{e}} (e 0..{self.n_experts - 1})" + (" and m{l}.shared" if self.shared_expert else "")
                   if self.n_experts else "m{l}")
            raise UnknownComponent(f"unknown sender {name!r}; senders are embed, a{{l}}.h{{h}} and {mlp} "
                           f"(layers 0..{self.n_layers - 1}, heads 0..{self.n_heads - 1})")
        return self._sender_index[name]

    def mask_of(self, edges) -> torch.Tensor:
        """The [senders, receivers] mask keeping exactly ``edges`` ((sender, receiver, ...) items)."""
        mask = torch.zeros(len(self.senders), len(self.receivers))
        for e in edges:
            mask[self.edge_index(e[0], e[1])] = 1.0
        return mask

    def edges_of(self, mask: torch.Tensor, scores: torch.Tensor | None = None) -> list[list]:
        """[sender, receiver, score] for every kept edge of ``mask`` (score 0 without ``scores``)."""
        keep = (mask > 0) & self.allowed
        idx = keep.nonzero().tolist()
        return [[self.senders[i], self.receivers[j], float(scores[i, j]) if scores is not None else 0.0]
                for i, j in idx]

    def node_of(self, receiver: str) -> str:
        """The component a receiver belongs to (``a3.h2.q`` → ``a3.h2``; ``a3.kv1.k`` → ``a3.kv1``)."""
        if not receiver.endswith((".q", ".k", ".v")):
            return receiver
        c = _component(receiver)
        return c.owner.node if c is not None else receiver

    def prune(self, mask: torch.Tensor) -> torch.Tensor:
        """Drop edges into components whose output reaches the logits through no kept edge: they
        cannot change the output (every path out of them is ablated). Returns a new mask."""
        mask = ((mask > 0) & self.allowed).float()
        alive_receiver = torch.zeros(len(self.receivers), dtype=torch.bool)
        alive_receiver[-1] = True
        # walk receivers from the output back: a component is live when one of its kept out-edges
        # reaches a live receiver; its own input receivers are then live.
        for j in reversed(range(len(self.receivers) - 1)):
            alive_receiver[j] = any(bool((mask[s].bool() & alive_receiver).any()) for s in self.readers(j))
        return mask * alive_receiver[None, :].float()


def _component(name: str) -> names.Component | None:
    try:
        return names.parse(name)
    except names.ComponentNameError:
        return None
