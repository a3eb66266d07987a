"""Edge deployment: a trained model's recurrent form exported and run outside PyTorch.

* :mod:`workbench.export.onnx_export` (torch): ``export_checkpoint`` writes an export directory,
  one ONNX graph for ``Model.step`` with the state as explicit inputs and outputs;
* :mod:`workbench.export.runtime` (numpy + onnxruntime, no torch): ``OnnxStepper``, ``generate``,
  ``bits_per_char``;
* :mod:`workbench.export.manifest` (no torch): the manifest, its checks, ``ExportError``;
* :mod:`workbench.export.bench`: ``workbench bench edge`` (``make bench-edge``).

This package imports nothing heavy at import time, so the runtime path stays torch-free.
"""

from workbench.export.manifest import ExportError, checkpoint_vocabulary, read_manifest

__all__ = ["ExportError", "checkpoint_vocabulary", "read_manifest"]
