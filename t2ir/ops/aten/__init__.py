"""Built-in translations of aten ops; importing this package registers them."""

from t2ir.ops.aten import attention, elementwise, factories, linalg, nn, shape  # noqa: F401
