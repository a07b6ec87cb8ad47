"""The hook lifecycle: one context holds a model's lock and every hook a run places, and removes them all.

Threads: hooks and the attention switch live on the shared HF modules, so every context that
installs them holds the module's re-entrant lock (``model_lock``) from install to removal. Calls on
one model from several threads then run one forward at a time and give the results of sequential
calls; different models run in parallel.

Order decides results where several hooks sit on one module (edits before records, forward order):
a ``HookSet`` registers in the order it is asked, and ``prepend=True`` puts a hook first.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import AbstractContextManager, ExitStack
from typing import Any, Callable

import torch
from torch import nn

_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(module: nn.Module) -> threading.RLock:
    """The re-entrant lock of an HF module (one per module, shared by every ``Model`` wrapping it):
    held by whatever installs hooks on it or switches its attention."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


def first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """A module's first input (positional, or HF's ``hidden_states`` keyword)."""
    return args[0] if args else kwargs["hidden_states"]


def with_first_input(args: tuple, kwargs: dict, x: torch.Tensor) -> tuple[tuple, dict]:
    """``(args, kwargs)`` with the first input replaced by ``x`` (what a pre-hook returns)."""
    if args:
        return (x, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": x}


def output_of(out: Any) -> torch.Tensor:
    """A module's tensor output (the first element of a tuple output)."""
    return out[0] if isinstance(out, tuple) else out


def with_output(out: Any, x: torch.Tensor) -> Any:
    """``out`` with its tensor replaced by ``x`` (what a forward hook returns)."""
    return (x, *out[1:]) if isinstance(out, tuple) else x


class HookSet(AbstractContextManager):
    """Every hook of one run on one HF model. Entering takes the model's lock; leaving — normally or
    on an exception — closes the contexts entered through it (the attention switch), removes every
    hook and releases the lock.

    ``after`` registers a forward hook, ``before`` a forward pre-hook (with keyword arguments);
    ``rows(block)`` gives the block's input shape [batch, pos, d] in the current forward, kept by one
    pre-hook per block (sites that see rows flattened read it)."""

    def __init__(self, hf: nn.Module):
        self.hf = hf
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._stack = ExitStack()
        self._shapes: dict[nn.Module, dict[str, torch.Size]] = {}
        self._lock = model_lock(hf)

    def __enter__(self) -> "HookSet":
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._stack.close()
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self._lock.release()

    def module(self, path: str) -> nn.Module:
        return self.hf.get_submodule(path)

    def after(self, module: nn.Module, hook: Callable, *, with_kwargs: bool = False, prepend: bool = False) -> None:
        self._handles.append(module.register_forward_hook(hook, with_kwargs=with_kwargs, prepend=prepend))

    def before(self, module: nn.Module, hook: Callable, *, with_kwargs: bool = True, prepend: bool = False) -> None:
        self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=with_kwargs, prepend=prepend))

    def enter(self, context: AbstractContextManager) -> Any:
        """Enter ``context`` until the hooks are removed (it closes first)."""
        return self._stack.enter_context(context)

    def rows(self, block: nn.Module) -> dict[str, torch.Size]:
        """``{"x": shape}``: ``block``'s input shape in this forward (one pre-hook per block, first on it)."""
        if block not in self._shapes:
            shape = self._shapes[block] = {}

            def keep(_m, args, kwargs):
                shape["x"] = first_input(args, kwargs).shape

            self.before(block, keep, prepend=True)
        return self._shapes[block]
