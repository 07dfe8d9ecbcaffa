"""Compatibility: the int8 load option is now the `torch-int8` backend of scripts/encoder_backend.py.

Importing this module registers the `encoder_backend` and `encoder_int8` factories; it is kept so
that entry points and code that name scripts.encoder_int8 keep working.
"""

from scripts.encoder_backend import LEGACY_ENABLED_SETTING as ENABLED_SETTING
from scripts.encoder_backend import LEGACY_FACTORY as FACTORY
from scripts.encoder_backend import EncoderBackendError as EncoderInt8Error
from scripts.encoder_backend import make_encoder_int8, quantize_linear_int8

__all__ = ["ENABLED_SETTING", "FACTORY", "EncoderInt8Error", "make_encoder_int8", "quantize_linear_int8"]
