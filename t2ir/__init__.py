"""t2ir: compile PyTorch models to NNEF for the tract inference engine, through a small SSA IR.

Importing t2ir loads the IR core only (no torch), so `t2ir.parse_ir`, `t2ir.load_ir`, `t2ir.diff`,
`t2ir dump` and `t2ir diff` start fast; `t2ir.export` and the other torch-facing names load on
first use.
"""

from t2ir.errors import CheckIOError, ExportError, T2IRError, TranslationError, UnsupportedOpsError
from t2ir.ir import Graph, Loc, Node, Value
from t2ir.ops.registry import register_module, register_nnef_op, register_op
from t2ir.options import ExportOptions, LLMExportOptions
from t2ir.parser import IRParseError, parse_ir
from t2ir.types import DType, TensorType
from t2ir.verify import verify

__version__ = "0.1.0"

# name -> module that defines it, imported on first access (these pull in torch)
_LAZY = {
    "export": "t2ir.api", "lift": "t2ir.api", "ExportResult": "t2ir.api",
    "register_pass": "t2ir.passes.pipeline", "unregister_pass": "t2ir.passes.pipeline",
    # torch-free tools (kept lazy so `import t2ir` stays the IR core only)
    "diff": "t2ir.tools.irdiff", "load_ir": "t2ir.tools.open_ir",
    "bisect": "t2ir.tools.bisect",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 't2ir' has no attribute {name!r}")


__all__ = [
    "export", "lift", "ExportResult", "ExportOptions", "LLMExportOptions", "register_op", "register_nnef_op",
    "register_module", "register_pass", "unregister_pass", "parse_ir", "load_ir", "diff", "bisect", "verify", "Graph", "Node", "Value", "Loc", "DType",
    "TensorType", "T2IRError", "ExportError", "UnsupportedOpsError", "CheckIOError", "TranslationError",
    "IRParseError", "__version__",
]
