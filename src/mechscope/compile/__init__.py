"""Networks with known mechanisms: RASP programs compiled into Hugging Face transformers.

``rasp`` (the program language and its interpreter), ``compiler`` (program → weights of the
``mechscope_compiled`` architecture, ``models/compiled.py``), ``programs`` (examples), ``task``
(a compiled program as a behaviour task; inert true edges), ``proofs`` (its MLPs proved over
boxes), ``siit`` (trained stand-ins with the same circuit). Every mechscope analysis runs on a
compiled model unchanged (``CompiledProgram.model``).
"""

from ..lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "CompiledProgram": ".compiler:CompiledProgram", "Layout": ".compiler:Layout", "compile_program": ".compiler:compile_program",
    "compile_example": ".compiler:compile_example", "mlp_transcoders": ".compiler:mlp_transcoders",
    "PROGRAMS": ".programs:PROGRAMS",
    **{name: f".rasp:{name}" for name in ("Aggregate", "Comparison", "Full", "Map", "RASPError", "Select",
                                          "SelectorWidth", "SequenceMap", "SOp", "evaluate", "indices", "tokens")},
})

__all__ = ["Aggregate", "Comparison", "CompiledProgram", "Full", "Layout", "Map", "PROGRAMS", "RASPError", "SOp",
           "Select", "SelectorWidth", "SequenceMap", "compile_example", "compile_program", "evaluate", "indices", "mlp_transcoders", "tokens"]
