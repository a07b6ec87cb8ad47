"""Results: small dataclasses every analysis returns (docs/architecture.md, "Results").

A result summarises itself in text (``summary``), draws itself (``figure`` with matplotlib,
``html`` for reports), serialises to a directory (``save``: ``result.json`` with the tensors in
``tensors.safetensors`` beside it; ``load`` reads it back), and carries its ``provenance``.
Subclasses are dataclasses whose fields are JSON values or tensors; they register themselves by
class name so ``load`` can rebuild any of them. A saved result is read back through a schema
derived from its dataclass's type hints (``result_schema``): every field's type is checked
(strictly: no string for a number, no extra or missing field), so a tampered or foreign file is
refused with the path of the bad value instead of breaking whatever draws it later.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import tempfile
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pydantic
import torch

RESULT_TYPES: dict[str, type["Result"]] = {}
FORMAT_VERSION = 1
# Modules that define result types; imported on first lookup so that a fresh process (the web
# server, an importer) can rebuild any saved result without the caller importing them first.
BUILTIN_RESULT_MODULES = ("mechscope.components", "mechscope.lenses", "mechscope.circuits", "mechscope.tracing",
                          "mechscope.attribution", "mechscope.concepts", "mechscope.toy", "mechscope.tasks",
                          "mechscope.circuits.scrubbing", "mechscope.verify", "mechscope.sae", "mechscope.vision",
                          "mechscope.compile.siit", "mechscope.explain")


def result_types() -> dict[str, type["Result"]]:
    """Every known result type by class name (the built-in ones are always included)."""
    import importlib

    for module in BUILTIN_RESULT_MODULES:
        importlib.import_module(module)
    return RESULT_TYPES


def _version() -> str:
    from . import __version__

    return __version__


@dataclass
class Provenance:
    """Where a result came from: model, data, parameters, software version, time."""

    model: str
    fingerprint: str
    dataset: str | None = None
    dataset_hash: str | None = None
    seed: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    version: str = field(default_factory=_version)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @classmethod
    def of(cls, model: Any, *, prompts: Any = None, dataset: str | None = None, seed: int | None = None,
           **params: Any) -> "Provenance":
        """Provenance for an analysis of ``model`` on ``prompts`` (hashed) with ``params``."""
        digest = None
        if prompts is not None:
            digest = hashlib.blake2b(json.dumps(prompts, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()
        return cls(model=model.name, fingerprint=model.fingerprint, dataset=dataset, dataset_hash=digest,
                   seed=seed, params=params)


class ResultFormatError(ValueError):
    """A saved result that cannot be read back (missing file, wrong version, unknown type)."""


@dataclass
class Result:
    """Base class of every analysis result."""

    provenance: Provenance
    title: ClassVar[str] = "result"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        RESULT_TYPES[cls.__name__] = cls

    # -- to be specialised ------------------------------------------------------------------------
    def check_consistency(self) -> None:
        """Raise ``ResultFormatError`` where fields that each have the right type disagree in a way that
        would make drawing the result allocate without bound (a read-back result; types override it)."""

    def summary(self) -> str:
        return f"{type(self).__name__} on {self.provenance.model}"

    def figure(self):
        """A matplotlib Figure of the result."""
        raise NotImplementedError(f"{type(self).__name__} has no figure")

    def hold(self, name: str, value: Any) -> "Result":
        """Keep a live object with this result (the model a trainer trained): ``held(name)`` gives it
        back in this process; it is never saved, so a result read from a file or the archive has none."""
        self.__dict__[f"_held_{name}"] = value
        return self

    def held(self, name: str) -> Any:
        """The object ``hold`` kept under ``name``; a clear error for a result that was saved and read back."""
        try:
            return self.__dict__[f"_held_{name}"]
        except KeyError:
            raise AttributeError(f"this {type(self).__name__} holds no {name}: a live object stays with the result "
                                 "in the process that made it and is not saved (train again to get it)") from None

    def evidence(self) -> dict[str, Any]:
        """The numbers that back the result's claim (kept searchable by the archive)."""
        return {}

    # -- shared -----------------------------------------------------------------------------------
    def __str__(self) -> str:
        return self.summary()

    def html(self, png: bytes | str | None = None, *, draw: bool = True) -> str:
        """An HTML fragment (autoescaped, no script): title, summary and the figure — ``png`` if
        given (its bytes, inlined, or the URL the server serves it from), else drawn now unless
        ``draw=False`` (pages show stored figures, never draw)."""
        return self._render("results/base.html", png=png, draw=draw)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """How a notebook shows the result: its page fragment with any viewer working (``report.notebook``);
        plain text: the summary."""
        from .report.notebook import notebook_html

        return {"text/html": notebook_html(self), "text/plain": self.summary()}

    def _render(self, template: str, png: bytes | None = None, draw: bool = False, **context: Any) -> str:
        from .report.render import render

        if png is None and draw:
            png = self.png_bytes()
        return render(template, result=self, png=png, **context)

    def png_bytes(self) -> bytes | None:
        """The figure as PNG bytes (None for results without a figure)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        try:
            fig = self.figure()
        except NotImplementedError:
            return None
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        return buf.getvalue()

    def to_dict(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(JSON-able dict, tensors): tensor fields become ``{"__tensor__": name}`` references."""
        data: dict[str, Any] = {"type": type(self).__name__, "format": FORMAT_VERSION}
        tensors: dict[str, torch.Tensor] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                tensors[f.name] = value.detach().cpu().contiguous()
                data[f.name] = {"__tensor__": f.name}
            elif isinstance(value, Provenance):
                data[f.name] = dataclasses.asdict(value)
            else:
                data[f.name] = value
        return data, tensors

    @classmethod
    def from_dict(cls, data: dict[str, Any], tensors: dict[str, torch.Tensor], check: bool = True) -> "Result":
        """Rebuild a result; ``check`` validates ``data`` against its type's schema first (skip it
        only for data this mechscope wrote and checked itself, e.g. an archive's rows)."""
        kind = data.get("type")
        if data.get("format") != FORMAT_VERSION:
            raise ResultFormatError(f"result format {data.get('format')!r} is not {FORMAT_VERSION}")
        types = result_types()
        if kind not in types:
            raise ResultFormatError(f"unknown result type {kind!r}; known: {', '.join(sorted(types))}")
        rcls = types[kind]
        if check:
            check_result_data(rcls, data)
        kwargs = {}
        for f in dataclasses.fields(rcls):
            if f.name not in data and (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING):
                continue  # a field added since it was written: its default
            value = data[f.name]
            if isinstance(value, dict) and "__tensor__" in value:
                if value["__tensor__"] not in tensors:
                    raise ResultFormatError(f"{kind}: tensor {value['__tensor__']!r} is missing")
                value = tensors[value["__tensor__"]]
            elif f.name == "provenance":
                value = Provenance(**value)
            kwargs[f.name] = value
        result = rcls(**kwargs)
        if check:
            result.check_consistency()
        return result

    def to_json(self) -> str:
        """The result as one standard JSON document (``jsontext``: non-finite floats explicit): its fields,
        and its tensors inlined under ``__tensors__`` (dtype, shape, values); ``from_json`` reads it back
        (``save`` keeps tensors in binary instead)."""
        from . import jsontext

        data, tensors = self.to_dict()
        if tensors:
            data["__tensors__"] = {name: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                                          "values": t.flatten().tolist()} for name, t in tensors.items()}
        return jsontext.dumps(data, default=str)

    @classmethod
    def from_json(cls, text: str) -> "Result":
        """Read ``to_json``'s document back, checked like a saved result; on a subclass, only that type."""
        from . import jsontext

        try:
            data = jsontext.loads(text)
        except json.JSONDecodeError as err:
            raise ResultFormatError(f"not a result JSON document: {err}") from None
        if not isinstance(data, dict):
            raise ResultFormatError(f"not a result JSON document: a {type(data).__name__}, expected an object")
        if cls is not Result and data.get("type") != cls.__name__:
            raise ResultFormatError(f"a {data.get('type')!r} JSON document, expected {cls.__name__!r}")
        packed = data.pop("__tensors__", {})
        if not isinstance(packed, dict):
            raise ResultFormatError("__tensors__: expected an object {name: {dtype, shape, values}}")
        tensors = {name: _unpack_tensor(name, t) for name, t in packed.items()}
        return Result.from_dict(data, tensors)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``result.json`` (+ ``tensors.safetensors``) into ``directory``, atomically."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        data, tensors = self.to_dict()
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
        (tmp / "result.json").write_text(json.dumps(data, indent=1, default=str))
        if tensors:
            save_file(tensors, tmp / "tensors.safetensors")
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            os.replace(directory, old)
            os.replace(tmp, directory)
            import shutil

            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
        return directory


JSON_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")


def _unpack_tensor(name: str, packed: Any) -> torch.Tensor:
    """A tensor from ``to_json``'s ``{dtype, shape, values}``; a clear error naming it otherwise."""
    if not (isinstance(packed, dict) and packed.get("dtype") in JSON_DTYPES and isinstance(packed.get("shape"), list)
            and all(isinstance(n, int) and n >= 0 for n in packed["shape"]) and isinstance(packed.get("values"), list)):
        raise ResultFormatError(f"__tensors__.{name}: expected {{dtype: one of {', '.join(JSON_DTYPES)}, shape: "
                                f"[sizes], values: [numbers]}}")
    try:
        flat = torch.tensor(packed["values"], dtype=getattr(torch, packed["dtype"]))
        return flat.reshape(packed["shape"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise ResultFormatError(f"__tensors__.{name}: {err}") from None


class TensorRef(pydantic.BaseModel):
    """How a tensor field appears in ``result.json``: the name of its entry in the tensors file."""

    model_config = pydantic.ConfigDict(strict=True, extra="forbid")
    ref: str = pydantic.Field(alias="__tensor__")


INT64 = Annotated[int, pydantic.Field(ge=-(2**63), le=2**63 - 1)]  # what a database column holds


def _json_type(hint: Any) -> Any:
    """The type a field takes in JSON: tensors become ``TensorRef``, dataclasses their own
    schema, integers 64-bit."""
    if hint is torch.Tensor:
        return TensorRef
    if hint is int:
        return INT64
    if dataclasses.is_dataclass(hint):
        return dataclass_schema(hint)
    args = typing.get_args(hint)
    if args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.Union[tuple(_json_type(a) for a in args)]
    return hint


@functools.cache
def dataclass_schema(cls: type, exclude: tuple[str, ...] = (),
                     override: tuple[tuple[str, Any], ...] = ()) -> type[pydantic.BaseModel]:
    """A strict pydantic model of ``cls``'s JSON form, derived from the dataclass's type hints
    (``exclude``: fields that are not part of it; ``override``: (field, type) pairs where the JSON
    form differs). A ``Result`` also carries its ``type`` and ``format``."""
    hints = typing.get_type_hints(cls)
    replaced = dict(override)
    fields: dict[str, Any] = {}
    if issubclass(cls, Result):
        fields = {"type": (Literal[cls.__name__], ...), "format": (Literal[FORMAT_VERSION], ...)}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        hint = replaced.get(f.name) or _json_type(hints[f.name])
        if f.name.startswith("model_") or hasattr(pydantic.BaseModel, f.name):  # a name pydantic reserves
            fields[f"field_{f.name}"] = (hint, pydantic.Field(alias=f.name))
        else:
            fields[f.name] = (hint, ...)
    config = pydantic.ConfigDict(strict=True, extra="forbid", protected_namespaces=())
    return pydantic.create_model(f"{cls.__name__}JSON", __config__=config, **fields)


def validation_message(err: pydantic.ValidationError, what: str) -> str:
    """'what.loc: message, got value (and n more)' for the first error of ``err``."""
    first = err.errors()[0]
    where = ".".join(str(x) for x in first["loc"])
    given = repr(first.get("input"))
    given = given if len(given) <= 60 else given[:57] + "..."
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{what}{'.' + where if where else ''}: {first['msg'][0].lower() + first['msg'][1:]}, got {given}{more}"


def result_schema(cls: type["Result"]) -> dict[str, Any]:
    """The JSON Schema of ``cls``'s ``result.json``, derived from the dataclass's type hints."""
    return dataclass_schema(cls).model_json_schema(by_alias=True)


def check_result_data(cls: type["Result"], data: dict[str, Any]) -> None:
    """Raise ``ResultFormatError`` naming the first bad value unless ``data`` has exactly the
    fields of ``cls`` with values of their declared types (strict: ``"1"`` is not a number)."""
    try:
        text = json.dumps(data, allow_nan=True)
    except (TypeError, ValueError, RecursionError) as err:
        raise ResultFormatError(f"{cls.__name__}: data is not JSON ({err})") from None
    try:
        dataclass_schema(cls).model_validate_json(text)
    except pydantic.ValidationError as err:
        raise ResultFormatError(validation_message(err, cls.__name__)) from None


def load_result(directory: str | os.PathLike) -> Result:
    """Read a result written by ``Result.save``."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = directory / "result.json"
    if not meta.exists():
        raise ResultFormatError(f"{directory} holds no result.json")
    try:
        data = json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise ResultFormatError(f"{meta} is not valid JSON: {err}") from None
    tensor_file = directory / "tensors.safetensors"
    tensors = load_file(tensor_file) if tensor_file.exists() else {}
    return Result.from_dict(data, tensors)


@dataclass
class NextTokens(Result):
    """Top-k next-token predictions after each prompt. probs: [batch, k]."""

    prompts: list[str]
    tokens: list[list[str]]
    probs: torch.Tensor
    title: ClassVar[str] = "Next-token predictions"

    @classmethod
    def of(cls, run: Any, prompts: list[str], k: int = 5) -> "NextTokens":
        top = run.top(k)
        return cls(
            provenance=Provenance.of(run.model, prompts=prompts, k=k),
            prompts=list(prompts),
            tokens=[[t for t, _ in row] for row in top],
            probs=torch.tensor([[p for _, p in row] for row in top]),
        )

    def summary(self) -> str:
        lines = []
        for prompt, toks, probs in zip(self.prompts, self.tokens, self.probs.tolist()):
            preds = "  ".join(f"{t!r} {p:.2f}" for t, p in zip(toks, probs))
            lines.append(f"{prompt!r} -> {preds}")
        return "\n".join(lines)

    def figure(self):
        import matplotlib.pyplot as plt

        n = len(self.prompts)
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.4), squeeze=False)
        for ax, prompt, toks, probs in zip(axes[0], self.prompts, self.tokens, self.probs.tolist()):
            ax.barh(range(len(toks))[::-1], probs, color="#4c72b0")
            ax.set_yticks(range(len(toks))[::-1], [repr(t) for t in toks])
            ax.set_xlim(0, 1)
            ax.set_title(prompt if len(prompt) < 30 else prompt[:27] + "...", fontsize=9)
            ax.set_xlabel("probability")
        fig.tight_layout()
        return fig
