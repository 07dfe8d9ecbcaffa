"""scripts.lib.packages: whether an optional package is there, without importing it."""

from __future__ import annotations

import sys

from scripts.lib.packages import module_available


def test_installed_modules_and_their_submodules_are_available():
    assert module_available("json") and module_available("importlib.util")


def test_a_missing_module_or_a_missing_parent_is_not_available():
    assert not module_available("no_such_package_here")
    assert not module_available("no_such_package_here.onnxruntime")


def test_a_module_hidden_from_imports_is_not_available(monkeypatch):
    """How the tests hide an extra (sys.modules[name] = None): an import would fail, so it is not available."""
    monkeypatch.setitem(sys.modules, "json", None)
    assert not module_available("json")
