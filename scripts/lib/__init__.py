"""Helpers the other rooms share: atomic writes, pipeline loading (and later scoring, reports, preflight checks)."""
