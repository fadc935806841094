"""The pipeline: models to containers and back.

Importing it registers the ONNX layer's skeleton reader with the format, which a 4.0 container
needs to name its tensors (:func:`onnxdc.format.container.register_skeleton_reader`): the format
itself knows no ONNX.
"""

from onnxdc.format.container import register_skeleton_reader
from onnxdc.onnx_io.tensors import skeleton_tensors

register_skeleton_reader(skeleton_tensors)
