"""Networks with known mechanisms: RASP programs compiled into Hugging Face transformers.

``rasp`` (the program language and its interpreter), ``compiler`` (program → weights of the
``mechscope_compiled`` architecture, ``models/compiled.py``), ``programs`` (examples), ``task``
(a compiled program as a behaviour task; inert true edges), ``proofs`` (its MLPs proved over
boxes), ``siit`` (trained stand-ins with the same circuit). Every mechscope analysis runs on a
compiled model unchanged (``CompiledProgram.model``).
"""

from .compiler import CompiledProgram, Layout, compile_program
from .programs import PROGRAMS
from .rasp import (Aggregate, Comparison, Full, Map, RASPError, Select, SelectorWidth, SequenceMap, SOp, evaluate,
                   indices, tokens)

__all__ = ["Aggregate", "Comparison", "CompiledProgram", "Full", "Layout", "Map", "PROGRAMS", "RASPError", "SOp",
           "Select", "SelectorWidth", "SequenceMap", "compile_program", "evaluate", "indices", "tokens"]
