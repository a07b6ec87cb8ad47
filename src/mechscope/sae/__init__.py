"""Sparse dictionary learning: activation stores (and, to come, SAEs and transcoders)."""

from .store import ActivationStore, StoreError, harvest

__all__ = ["ActivationStore", "StoreError", "harvest"]
