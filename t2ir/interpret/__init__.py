"""The reference interpreter: runs an IR graph node by node with PyTorch (see `engine`), with
PyTorch implementations of t2ir's own and the NNEF-level ops (see `ops`).

    from t2ir.interpret import Interpreter, evaluate, reference_op
"""

from t2ir.interpret.engine import (InterpretError, Interpreter, WeightLoader, as_numpy, as_tensor, bind_symbols, evaluate,
                                   source_weights)
from t2ir.interpret.ops import Call, reference_op

__all__ = ["Interpreter", "InterpretError", "evaluate", "reference_op", "Call", "source_weights",
           "bind_symbols", "as_tensor", "as_numpy", "WeightLoader"]
