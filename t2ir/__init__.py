"""t2ir: compile PyTorch models to NNEF for the tract inference engine, through a small SSA IR."""

from t2ir.api import ExportResult, _ensure_registered, export, lift
from t2ir.errors import CheckIOError, ExportError, T2IRError, UnsupportedOpsError
from t2ir.ir import Graph, Loc, Node, Value
from t2ir.ops.registry import register_nnef_op, register_op
from t2ir.options import ExportOptions
from t2ir.parser import IRParseError, parse_ir
from t2ir.types import DType, TensorType
from t2ir.verify import verify

__version__ = "0.1.0"

_ensure_registered()

__all__ = [
    "export", "lift", "ExportResult", "ExportOptions", "register_op", "register_nnef_op", "parse_ir",
    "verify", "Graph", "Node", "Value", "Loc", "DType", "TensorType", "T2IRError", "ExportError",
    "UnsupportedOpsError", "CheckIOError", "IRParseError", "__version__",
]
