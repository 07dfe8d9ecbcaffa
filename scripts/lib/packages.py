"""Whether an optional package is there, asked without importing it.

The extras of pyproject.toml (onnx, optimum, ray, serve, ...) bring packages that some rows of a
benchmark or some options of a CLI need: the project checks for them first, to skip or to fail with
the extra that brings them, rather than to fail on an import halfway through.
"""

from __future__ import annotations

import importlib.util


def module_available(name: str) -> bool:
    """Whether `name` (dotted or not) can be imported; a missing parent package means no.

    Nothing is imported but, for a dotted name, its parent packages (find_spec needs them to look inside).
    """
    try:
        return importlib.util.find_spec(name) is not None
    # find_spec raises for a dotted name whose parent is missing, and for a loaded module without a __spec__.
    except (ModuleNotFoundError, ValueError):
        return False
