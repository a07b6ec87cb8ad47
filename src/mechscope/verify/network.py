"""A network as verification sees it: a graph of affine maps, activations and sums on flat vectors.

``as_network(module, input_shape)`` traces a PyTorch module with ``torch.fx`` (so ``nn.Sequential``
stacks and modules with residual additions ``x + self.block(x)`` both work) into nodes, each
reading earlier ones:

- ``Affine`` z = W x + b: Linear keeps its weights; every other linear op on one tensor (Conv1d/2d,
  Flatten, reshape, BatchNorm in eval mode, AvgPool, adding or scaling by a constant, ...) becomes
  the exact matrix of the map, evaluated on the basis — meant for the small inputs verification
  handles;
- ``Activation`` ReLU, LeakyReLU, Sigmoid, Tanh;
- ``Sum`` Σ cᵢ xᵢ of several nodes (residual additions, differences).

Consecutive affine maps are composed. ``onnx_io.load_onnx`` builds the same graph from ONNX.
All arithmetic is float64.
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx
from torch import nn

from ..models.fingerprint import fingerprint_of

SUPPORTED = ("Linear, Conv1d/Conv2d, Flatten/Unflatten, reshape/view, BatchNorm (eval), AvgPool, Dropout (eval), "
             "Identity, ReLU, LeakyReLU, Sigmoid, Tanh, and +, −, × or ÷ by constants or between branches")
_ACT_MODULES = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
_ACT_FUNCTIONS = {torch.relu: "relu", nn.functional.relu: "relu", torch.sigmoid: "sigmoid", torch.tanh: "tanh",
                  nn.functional.leaky_relu: "leaky_relu", nn.functional.sigmoid: "sigmoid", nn.functional.tanh: "tanh",
                  "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
_LINEAR_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Flatten, nn.Unflatten, nn.BatchNorm1d, nn.BatchNorm2d,
                   nn.AvgPool1d, nn.AvgPool2d, nn.Dropout, nn.Identity)
_LINEAR_FUNCTIONS = {torch.flatten, torch.reshape, operator.neg, operator.getitem, torch.neg, nn.functional.linear,
                     nn.functional.conv2d, nn.functional.avg_pool2d, "view", "reshape", "flatten", "neg", "unsqueeze",
                     "squeeze"}
_SUM_FUNCTIONS = {operator.add: 1.0, torch.add: 1.0, operator.sub: -1.0, torch.sub: -1.0}
_SCALE_FUNCTIONS = {operator.mul, torch.mul, operator.truediv, torch.div, operator.add, torch.add, operator.sub,
                    torch.sub}


@dataclass
class Affine:
    """z = W x + b; W: [out, in], b: [out] (float64)."""

    W: torch.Tensor
    b: torch.Tensor


@dataclass
class Activation:
    kind: str  # relu | leaky_relu | sigmoid | tanh
    slope: float = 0.0  # negative slope of leaky_relu

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "relu":
            return z.clamp(min=0)
        if self.kind == "leaky_relu":
            return torch.where(z >= 0, z, self.slope * z)
        return torch.sigmoid(z) if self.kind == "sigmoid" else torch.tanh(z)


@dataclass
class Sum:
    """Σᵢ coef[i] · input i (all inputs of one size)."""

    coef: tuple[float, ...]


@dataclass
class Node:
    op: Affine | Activation | Sum | None  # None: the input
    inputs: tuple[int, ...] = ()
    size: int = 0


@dataclass
class Network:
    """Nodes in topological order; node 0 is the input, the last node the output. Call it on flat
    inputs x [batch, in] to run it."""

    nodes: list[Node]
    input_shape: tuple[int, ...]
    name: str = "network"
    consumers: dict[int, list[int]] = field(init=False, repr=False)

    def __post_init__(self):
        self.consumers = {i: [] for i in range(len(self.nodes))}
        for i, node in enumerate(self.nodes):
            for j in node.inputs:
                self.consumers[j].append(i)

    @property
    def n_inputs(self) -> int:
        return self.nodes[0].size

    @property
    def n_outputs(self) -> int:
        return self.nodes[-1].size

    @property
    def activations(self) -> list[int]:
        """Indices of the activation nodes, in order."""
        return [i for i, n in enumerate(self.nodes) if isinstance(n.op, Activation)]

    def values(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every node's value on flat inputs x [batch, in]."""
        vals: list[torch.Tensor] = [x.double()]
        for node in self.nodes[1:]:
            op = node.op
            if isinstance(op, Affine):
                vals.append(vals[node.inputs[0]] @ op.W.T + op.b)
            elif isinstance(op, Activation):
                vals.append(op(vals[node.inputs[0]]))
            else:
                vals.append(sum(c * vals[j] for c, j in zip(op.coef, node.inputs)))
        return vals

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.n_inputs:
            raise ValueError(f"input of {x.shape[-1]} values; the network takes {self.n_inputs} "
                             f"(input shape {self.input_shape}, flattened)")
        return self.values(x)[-1]

    def prefix(self, node: int) -> "Network":
        """The sub-network computing node ``node`` (e.g. a hidden neuron's pre-activation) as its output."""
        if not 0 < node < len(self.nodes):
            raise ValueError(f"node {node} out of range: the network has nodes 1..{len(self.nodes) - 1}")
        return Network(self.nodes[: node + 1], self.input_shape, f"{self.name}[:{node}]")

    def fingerprint(self) -> str:
        """``fingerprint_of`` the graph and its weights: equal for equal networks, however they were loaded."""
        graph = [f"{type(n.op).__name__}{n.inputs}{n.size}" + ("" if isinstance(n.op, Affine) or n.op is None else repr(n.op))
                 for n in self.nodes]
        weights = {f"{i}.{k}": getattr(n.op, k) for i, n in enumerate(self.nodes) if isinstance(n.op, Affine) for k in "Wb"}
        return fingerprint_of(weights, {"input_shape": list(self.input_shape), "graph": graph})

    def describe(self) -> str:
        names = {Affine: "affine", Activation: "act", Sum: "sum"}
        parts = []
        for i, n in enumerate(self.nodes[1:], 1):
            kind = names[type(n.op)] if not isinstance(n.op, Activation) else n.op.kind
            parts.append(f"{i}:{kind}({','.join(map(str, n.inputs))})→{n.size}")
        return f"{self.name}: input {self.input_shape} → " + " ".join(parts)


class UnsupportedLayer(ValueError):
    """A module or operation verification cannot read."""


def affine_of(fn, shape: tuple[int, ...]) -> Affine:
    """The exact affine map x ↦ fn(x) for x of ``shape`` (no batch), evaluated on the basis."""
    n = math.prod(shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    with torch.no_grad():
        zero = fn(torch.zeros(1, *shape, dtype=torch.float64))
        basis = fn(eye)
        if basis.shape != (n, *zero.shape[1:]):  # the op assumes batch 1 (x.view(1, -1), ...): one at a time
            basis = torch.cat([fn(e[None]) for e in eye])
    W = (basis - zero).reshape(n, -1).T
    return Affine(W.contiguous(), zero.reshape(-1).clone())


class NetworkBuilder:
    """Appends nodes; ``finish`` composes each affine map into the affine map that alone reads it."""

    def __init__(self, n_in: int):
        self.nodes = [Node(None, (), n_in)]

    def add(self, op, inputs: tuple[int, ...]) -> int:
        size = op.W.shape[0] if isinstance(op, Affine) else self.nodes[inputs[0]].size
        self.nodes.append(Node(op, inputs, size))
        return len(self.nodes) - 1

    def finish(self, out: int, shape: tuple[int, ...], name: str) -> Network:
        nodes = self.nodes[: out + 1]
        if out == 0 or any(out in n.inputs for n in nodes):  # the output must be a node of its own
            n = nodes[out].size
            nodes.append(Node(Affine(torch.eye(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)), (out,), n))
        readers = [0] * len(nodes)
        for n in nodes:
            for j in n.inputs:
                readers[j] += 1
        dead = set()
        for j, node in enumerate(nodes):
            while isinstance(node.op, Affine):
                i = node.inputs[0]
                prev = nodes[i].op
                if i == 0 or not isinstance(prev, Affine) or readers[i] != 1:
                    break
                node = nodes[j] = Node(Affine(node.op.W @ prev.W, node.op.W @ prev.b + node.op.b), nodes[i].inputs,
                                       node.size)
                dead.add(i)
        keep = [i for i in range(len(nodes)) if i not in dead and (readers[i] or i == len(nodes) - 1 or i == 0)]
        new = {old: k for k, old in enumerate(keep)}
        return Network([Node(nodes[i].op, tuple(new[j] for j in nodes[i].inputs), nodes[i].size) for i in keep],
                       shape, name)


def _tensor_args(node: torch.fx.Node) -> list[torch.fx.Node]:
    return [a for a in node.args if isinstance(a, torch.fx.Node)] + \
           [a for a in node.kwargs.values() if isinstance(a, torch.fx.Node)]


def as_network(module: nn.Module, input_shape: tuple[int, ...] | int, name: str | None = None) -> Network:
    """Trace ``module`` (see the module docstring) on inputs of ``input_shape`` (without batch)."""
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    module = copy.deepcopy(module).double().eval()  # the caller's module is left as it is
    try:
        graph = torch.fx.symbolic_trace(module)
    except Exception as e:  # noqa: BLE001 — data-dependent control flow and the like
        raise UnsupportedLayer(f"cannot trace {type(module).__name__} with torch.fx ({e}); supported: {SUPPORTED}") from e
    modules = dict(graph.named_modules())
    sample: dict[torch.fx.Node, object] = {}  # each fx node's value on a zero input (shapes and constants)
    index: dict[torch.fx.Node, int] = {}  # fx node -> our node (tensor nodes that depend on the input)
    b = NetworkBuilder(math.prod(shape))

    def value(a):
        return torch.fx.node.map_arg(a, lambda n: sample[n])

    for fx in graph.graph.nodes:
        if fx.op == "placeholder":
            if index:
                raise UnsupportedLayer(f"{type(module).__name__} takes several inputs; verification needs one tensor")
            index[fx] = 0
            sample[fx] = torch.zeros(1, *shape, dtype=torch.float64)
            continue
        if fx.op == "output":
            out = fx.args[0]
            if not isinstance(out, torch.fx.Node) or out not in index:
                raise UnsupportedLayer("the module must return one tensor computed from its input")
            return b.finish(index[out], shape, name or type(module).__name__)
        if fx.op == "get_attr":
            target = graph
            for part in fx.target.split("."):
                target = getattr(target, part)
            sample[fx] = target.detach().double() if isinstance(target, torch.Tensor) else target
            continue
        args, kwargs = value(fx.args), value(fx.kwargs)
        try:
            with torch.no_grad():
                if fx.op == "call_module":
                    sample[fx] = modules[fx.target](*args, **kwargs)
                elif fx.op == "call_function":
                    sample[fx] = fx.target(*args, **kwargs)
                else:
                    sample[fx] = getattr(args[0], fx.target)(*args[1:], **kwargs)
        except RuntimeError as e:
            raise ValueError(f"{type(module).__name__} fails on inputs of shape {shape} (at '{fx.name}': {e}); "
                             "is the input shape right?") from e
        live = [a for a in _tensor_args(fx) if a in index]
        if not live or not isinstance(sample[fx], torch.Tensor):
            continue  # a constant, or a shape read off the input (x.size(0))
        what = modules[fx.target] if fx.op == "call_module" else fx.target
        label = type(what).__name__ if fx.op == "call_module" else getattr(what, "__name__", str(what))
        kind = (_ACT_MODULES.get(type(what)) if fx.op == "call_module" else _ACT_FUNCTIONS.get(what))
        if kind is not None and len(live) == 1:
            slope = float(getattr(what, "negative_slope", kwargs.get("negative_slope", args[1] if len(args) > 1
                                                                     and kind == "leaky_relu" else 0.01)))
            index[fx] = b.add(Activation(kind, slope if kind == "leaky_relu" else 0.0), (index[live[0]],))
        elif len(live) == 2 and what in _SUM_FUNCTIONS and fx.args[0] in index and fx.args[1] in index:
            if sample[fx.args[0]].shape != sample[fx.args[1]].shape:
                raise UnsupportedLayer(f"{label} of tensors of shapes {tuple(sample[fx.args[0]].shape)} and "
                                       f"{tuple(sample[fx.args[1]].shape)}: broadcasting between branches is not supported")
            alpha = float(kwargs.get("alpha", 1.0))
            index[fx] = b.add(Sum((1.0, _SUM_FUNCTIONS[what] * alpha)), (index[fx.args[0]], index[fx.args[1]]))
        elif len(live) == 1 and (isinstance(what, _LINEAR_MODULES) or what in _LINEAR_FUNCTIONS
                                 or what in _SCALE_FUNCTIONS):
            src = live[0]
            if what in (operator.truediv, torch.div) and fx.args[0] is not src:
                raise UnsupportedLayer(f"division by the input at '{fx.name}' is not linear; supported: {SUPPORTED}")
            in_shape = tuple(sample[src].shape[1:])
            if isinstance(what, nn.Linear) and len(in_shape) == 1:
                aff = Affine(what.weight.detach().double(), what.bias.detach().double() if what.bias is not None
                             else torch.zeros(what.out_features, dtype=torch.float64))
            else:
                aff = affine_of(lambda x, fx=fx, src=src: _call(fx, modules, src, x, sample), in_shape)
            index[fx] = b.add(aff, (index[src],))
        else:
            raise UnsupportedLayer(f"cannot verify through {label} (in {type(module).__name__}, at '{fx.name}'); "
                                   f"supported: {SUPPORTED}")
    raise UnsupportedLayer("the traced graph has no output")


def _call(fx: torch.fx.Node, modules: dict, src: torch.fx.Node, x: torch.Tensor, sample: dict) -> torch.Tensor:
    """Run one fx node with ``x`` in place of its input ``src`` (other arguments at their constant values)."""
    sub = lambda a: x if a is src else sample[a]  # noqa: E731
    args, kwargs = torch.fx.node.map_arg(fx.args, sub), torch.fx.node.map_arg(fx.kwargs, sub)
    if fx.op == "call_module":
        return modules[fx.target](*args, **kwargs)
    if fx.op == "call_function":
        return fx.target(*args, **kwargs)
    return getattr(args[0], fx.target)(*args[1:], **kwargs)
