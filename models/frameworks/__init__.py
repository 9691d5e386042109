"""Zoo models from frameworks other than PyTorch, each built by one script in its own virtualenv.

See the "Other frameworks" section of ``models/README.md``. The scripts import only the
framework, its exporter, ``onnx``, ``onnxruntime`` and ``numpy`` (never ``spa`` or ``torch``).
"""
