"""Built-in translations of aten ops; importing this package registers them."""

from t2ir.ops.aten import (  # noqa: F401
    activations, attention, elementwise, factories, indexing, linalg, nn, reduce, resize, rnn, scatter, shape,
)
