"""The JSON encoder, :func:`tracer.encoding.encode_json`, under the name it had first."""

from tracer.encoding import MAX_DEPTH, encode_json

__all__ = ["MAX_DEPTH", "encode_json"]
