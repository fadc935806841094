"""The container format: header, container reader and writer, and each encoding's validator and
decoder (registered with :mod:`onnxdc.format.registry` when this package is imported). It knows
coders and nothing of how values were chosen: no ONNX, no k-means.
"""

from onnxdc.format import planes as _planes  # noqa: F401  (registers "planes")
from onnxdc.format import shared as _shared  # noqa: F401  (registers "shared")
