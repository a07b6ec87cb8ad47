"""ONNX networks for verification: ``load_onnx`` reads a feed-forward ONNX graph into a ``Network``,
``save_onnx`` writes one (Gemm, activations, Add).

Read: Gemm, MatMul, Conv, BatchNormalization, Add / Sub / Mul / Div with constants (Add / Sub of
two branches become sums), Neg, Relu, LeakyRelu, Sigmoid, Tanh, and the shape-only Reshape,
Flatten, Squeeze, Unsqueeze, Identity, Dropout, Transpose (batch first); Constant nodes and
initialisers are constants. The batch dimension must be 1 (or symbolic).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .network import Activation, Affine, Network, Sum, UnsupportedLayer, affine_of, NetworkBuilder

SUPPORTED_OPS = ("Gemm, MatMul, Conv, BatchNormalization, Add, Sub, Mul, Div, Neg, Relu, LeakyRelu, Sigmoid, Tanh, "
                 "Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout, Transpose, Constant")
_ACTS = {"Relu": "relu", "LeakyRelu": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
_SHAPE_ONLY = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise ImportError("reading and writing ONNX needs the onnx package: pip install 'mechscope[verify]'") from e
    return onnx, numpy_helper


def _attrs(node) -> dict:
    onnx, _ = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _reshape(shape: tuple[int, ...], node, consts: dict, attrs: dict) -> tuple[int, ...]:
    """The output shape of a shape-only op (the flat order never changes)."""
    op = node.op_type
    if op in ("Identity", "Dropout"):
        return shape
    if op == "Flatten":
        axis = attrs.get("axis", 1) % (len(shape) or 1)
        return (math.prod(shape[:axis]), math.prod(shape[axis:]))
    if op == "Reshape":
        target = [int(v) for v in consts[node.input[1]]]
        target = [shape[i] if v == 0 and not attrs.get("allowzero", 0) else v for i, v in enumerate(target)]
        return tuple(np.zeros(shape).reshape(target).shape)
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1:
        axes = [int(v) for v in consts[node.input[1]]]
    if op == "Squeeze":
        axes = [a % len(shape) for a in axes] if axes is not None else [i for i, d in enumerate(shape) if d == 1]
        return tuple(d for i, d in enumerate(shape) if i not in axes)
    out = list(shape)  # Unsqueeze
    for a in sorted(a % (len(shape) + len(axes)) for a in axes):
        out.insert(a, 1)
    return tuple(out)


def _linear_fn(node, attrs: dict, consts: dict, live: str):
    """The op as a torch function of its one live input (constants fixed)."""
    op = node.op_type
    c = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in consts.items() if k in node.input}
    if op == "Gemm":
        if live != node.input[0]:
            raise UnsupportedLayer(f"Gemm '{node.name}' with a constant first operand is not supported")
        B = c[node.input[1]].T if attrs.get("transB", 0) else c[node.input[1]]
        C = c[node.input[2]] if len(node.input) > 2 and node.input[2] else torch.zeros(())
        alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
        return lambda x: alpha * ((x.transpose(-1, -2) if attrs.get("transA", 0) else x) @ B) + beta * C
    if op == "MatMul":
        return (lambda x: x @ c[node.input[1]]) if live == node.input[0] else (lambda x: c[node.input[0]] @ x)
    if op == "Conv":
        W = c[node.input[1]]
        bias = c[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        dims = W.dim() - 2
        pads = attrs.get("pads", [0] * 2 * dims)
        if pads[:dims] != pads[dims:]:
            raise UnsupportedLayer(f"Conv '{node.name}' has asymmetric padding {pads}")
        conv = torch.nn.functional.conv2d if dims == 2 else torch.nn.functional.conv1d
        return lambda x: conv(x, W, bias, stride=attrs.get("strides", 1), padding=pads[:dims],
                              dilation=attrs.get("dilations", 1), groups=attrs.get("group", 1))
    if op == "BatchNormalization":
        scale, shift, mean, var = (c[n] for n in node.input[1:5])
        k = scale / torch.sqrt(var + attrs.get("epsilon", 1e-5))
        view = lambda t, x: t.reshape(1, -1, *([1] * (x.dim() - 2)))  # noqa: E731
        return lambda x: (x - view(mean, x)) * view(k, x) + view(shift, x)
    if op == "Transpose":
        perm = attrs.get("perm")
        if perm is None or perm[0] != 0:
            raise UnsupportedLayer(f"Transpose '{node.name}' must keep the batch dimension first (perm {perm})")
        return lambda x: x.permute(*perm)
    if op == "Neg":
        return lambda x: -x
    if op in ("Add", "Sub", "Mul", "Div"):
        other = c[node.input[1] if live == node.input[0] else node.input[0]]
        first = live == node.input[0]
        if op == "Div" and not first:
            raise UnsupportedLayer(f"Div '{node.name}' divides by the input: not linear")
        return {"Add": lambda x: x + other, "Mul": lambda x: x * other, "Div": lambda x: x / other,
                "Sub": (lambda x: x - other) if first else (lambda x: other - x)}[op]
    raise UnsupportedLayer(f"ONNX op {op} (node '{node.name}') is not supported; supported: {SUPPORTED_OPS}")


def load_onnx(path: str | Path) -> Network:
    """The network in an ONNX file (see the module docstring)."""
    onnx, numpy_helper = _onnx()
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf errors
        raise ValueError(f"{path} is not a readable ONNX file ({e})") from e
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t).astype(np.float64) if numpy_helper.to_array(t).dtype.kind == "f"
              else numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise UnsupportedLayer(f"{path}: the network must take one input tensor; it takes {[i.name for i in inputs]}")
    dims = [d.dim_value if d.dim_value > 0 else 1 for d in inputs[0].type.tensor_type.shape.dim]
    if dims and dims[0] != 1:
        raise UnsupportedLayer(f"{path}: input batch dimension {dims[0]}; verification reads batch 1")
    shape = tuple(dims)
    b = NetworkBuilder(math.prod(shape))
    live = {inputs[0].name: (0, shape)}  # tensor name -> (our node, ONNX shape with batch)
    for node in graph.node:
        attrs = _attrs(node)
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(attrs["value"]) if "value" in attrs else \
                np.asarray(attrs.get("value_float", attrs.get("value_floats")))
            continue
        ins = [i for i in node.input if i in live]
        if not ins:  # a constant expression: fold the few ops that appear (shape arithmetic)
            if node.op_type in ("Identity", "Cast"):
                consts[node.output[0]] = consts[node.input[0]]
                continue
            raise UnsupportedLayer(f"ONNX op {node.op_type} (node '{node.name}') on constants only is not supported")
        src, in_shape = live[ins[0]]
        if node.op_type in _ACTS:
            slope = float(attrs.get("alpha", 0.01)) if node.op_type == "LeakyRelu" else 0.0
            live[node.output[0]] = (b.add(Activation(_ACTS[node.op_type], slope), (src,)), in_shape)
        elif node.op_type in _SHAPE_ONLY:
            live[node.output[0]] = (src, _reshape(in_shape, node, consts, attrs))
        elif len(ins) == 2 and node.op_type in ("Add", "Sub"):
            (a, sa), (c, sc) = live[node.input[0]], live[node.input[1]]
            if sa != sc:
                raise UnsupportedLayer(f"{node.op_type} '{node.name}' of branches of shapes {sa} and {sc}")
            coef = (1.0, 1.0 if node.op_type == "Add" else -1.0)
            live[node.output[0]] = (b.add(Sum(coef), (a, c)), sa)
        elif len(ins) == 1:
            fn = _linear_fn(node, attrs, consts, ins[0])
            aff = affine_of(fn, in_shape[1:])
            with torch.no_grad():
                out_shape = tuple(fn(torch.zeros(in_shape, dtype=torch.float64)).shape)
            live[node.output[0]] = (b.add(aff, (src,)), out_shape)
        else:
            raise UnsupportedLayer(f"ONNX op {node.op_type} (node '{node.name}') on two branches is not supported")
    out = graph.output[0].name
    if out not in live:
        raise UnsupportedLayer(f"{path}: the output {out!r} does not depend on the input")
    return b.finish(live[out][0], shape[1:] if len(shape) > 1 else shape, Path(path).stem)


def save_onnx(net: Network, path: str | Path) -> Path:
    """Write ``net`` as ONNX (opset 13): input "input" [1, in], output "output" [1, out]."""
    onnx, numpy_helper = _onnx()
    helper = onnx.helper
    nodes, inits = [], []

    def const(name: str, value: torch.Tensor) -> str:
        inits.append(numpy_helper.from_array(value.float().numpy(), name))
        return name

    names = ["input"]
    for i, node in enumerate(net.nodes[1:], 1):
        out = "output" if i == len(net.nodes) - 1 else f"n{i}"
        op = node.op
        if isinstance(op, Affine):
            nodes.append(helper.make_node("Gemm", [names[node.inputs[0]], const(f"W{i}", op.W), const(f"b{i}", op.b)],
                                          [out], transB=1))
        elif isinstance(op, Activation):
            kind = {v: k for k, v in _ACTS.items()}[op.kind]
            extra = {"alpha": op.slope} if op.kind == "leaky_relu" else {}
            nodes.append(helper.make_node(kind, [names[node.inputs[0]]], [out], **extra))
        else:
            terms = []
            for k, (c, j) in enumerate(zip(op.coef, node.inputs)):
                if c == 1.0:
                    terms.append(names[j])
                else:
                    nodes.append(helper.make_node("Mul", [names[j], const(f"c{i}_{k}", torch.tensor(c))], [f"n{i}_{k}"]))
                    terms.append(f"n{i}_{k}")
            acc = terms[0]
            for k, t in enumerate(terms[1:]):
                nxt = out if k == len(terms) - 2 else f"n{i}_s{k}"
                nodes.append(helper.make_node("Add", [acc, t], [nxt]))
                acc = nxt
        names.append(out)
    graph = helper.make_graph(nodes, net.name, [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, net.n_inputs])],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, net.n_outputs])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="mechscope",
                              ir_version=8)  # readable by onnxruntime releases of the last years
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path
