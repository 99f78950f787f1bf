"""Codec errors. Both are ValueErrors so callers can route any bad message to
the dead-letter topic with one `except ValueError`."""

from __future__ import annotations

__all__ = ["DecodeError", "EncodeError"]


class DecodeError(ValueError):
    """The bytes are not a message this codec can decode; the text says why."""


class EncodeError(ValueError):
    """A message object holds a value its Avro schema cannot carry."""
