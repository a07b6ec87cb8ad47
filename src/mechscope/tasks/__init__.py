"""Behaviour tasks: clean/corrupted prompt pairs with a metric (IOI, greater-than, induction,
factual recall)."""

from .base import Task, TaskEval
from .catalog import TASKS, factual, greater_than, induction, ioi, make_task

__all__ = ["TASKS", "Task", "TaskEval", "factual", "greater_than", "induction", "ioi", "make_task"]
