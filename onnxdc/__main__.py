"""``python -m onnxdc``: the same command line as the ``onnxdc`` script."""

from onnxdc.cli import main

if __name__ == "__main__":
    main(prog_name="onnxdc")
