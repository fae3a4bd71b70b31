"""Source paths as they appear in what t2ir writes: from the top package down, never absolute.

A traced node remembers the Python line it came from. Written as an absolute path it would carry
the user's home folder (and so their name) into every export, and make two exports of the same
model on two machines differ. `portable_source_path` keeps the part a reader needs — the path
from the outermost package, the same on every machine:

    /home/alice/.venv/lib/python3.11/site-packages/transformers/models/llama/modeling_llama.py
        -> transformers/models/llama/modeling_llama.py
    /home/alice/work/t2ir/frontend/causal_lm.py          -> t2ir/frontend/causal_lm.py
    /home/alice/scripts/train.py (in no package)          -> train.py
"""

from __future__ import annotations

import os


def portable_source_path(path: str) -> str:
    """`path` from its outermost package folder (one holding `__init__.py`) down.

    A file in no package keeps its name only; names that are not files ("<string>", "") are
    returned as they are.
    """
    if not os.path.isabs(path):
        if not os.path.isfile(path):
            return path
        path = os.path.abspath(path)
    folder, parts = os.path.split(path)
    parts = [parts]
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        folder, name = os.path.split(folder)
        parts.insert(0, name)
    return "/".join(parts)
