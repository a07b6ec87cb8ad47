"""Circuits: the Circuit result (nodes, edges, scores, evidence). Discovery methods build on it."""

from .circuit import Circuit

__all__ = ["Circuit"]
