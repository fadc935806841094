"""``python -m onnxdc``: the same program as the ``onnxdc`` command."""

from onnxdc.console import run

if __name__ == "__main__":
    run()
