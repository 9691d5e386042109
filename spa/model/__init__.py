"""Stage 1, load: the ONNX model and what can be asked of it.

Reading and writing files (:mod:`.io`), the graph index every later stage queries (:mod:`.graph`),
shapes and the typical input sizes (:mod:`.shapes`, :mod:`.sizes`), valid synthetic inputs
(:mod:`.inputs`), onnxruntime sessions (:mod:`.runtime`), parameter and MAC counts (:mod:`.metrics`),
quantized-tensor facts (:mod:`.quant`) and the ONNX-to-torch converter gradient criteria run on
(:mod:`.onnx_torch`). Imports nothing from later stages.
"""
