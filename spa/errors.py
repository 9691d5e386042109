"""User-facing errors.

Every error a user can cause derives from :class:`SpaError`; the CLI prints its message on one
line and exits with its ``exit_code``. Internal bugs are *not* SpaErrors: they keep their
traceback so they can be reported.
"""

from __future__ import annotations


class SpaError(Exception):
    """Base class of every error caused by input the user gave us."""

    exit_code = 1
    #: The CLI prints ``spa: <prefix>: <message>``.
    prefix = "error"


class ModelLoadError(SpaError):
    """The model file is missing, unreadable, or not a valid ONNX model."""


class UnsupportedModelError(SpaError):
    """The model is valid ONNX but outside what SPA handles (e.g. opset < 11)."""


class PlanError(SpaError):
    """A plan file is malformed or does not match the model it is applied to."""


class OutputError(SpaError):
    """The output cannot be written where the user asked."""


class RewriteError(SpaError):
    """The rewritten model would not be valid; nothing was written."""


class InvalidArgumentError(SpaError):
    """An option value is out of range or inconsistent with another option."""


class ModelMismatchError(SpaError):
    """Two models that should be a pruned pair do not share inputs and outputs."""


class VerificationError(SpaError):
    """The pruned model does not match the masked original."""

    exit_code = 3


class ConfigError(SpaError):
    """A configuration file (``spa.toml``, ``[tool.spa]`` in ``pyproject.toml``) is invalid."""


class GateError(SpaError):
    """A CI gate (``--max-drift``, ``--min-speedup``, ...) failed; nothing was written."""

    exit_code = 4
    prefix = "gate failed"


class TargetError(SpaError):
    """A pruning target (``--target-latency``, ``--target-speedup``) cannot be met."""


class InputSynthesisError(SpaError):
    """onnxruntime failed on SPA's synthetic inputs; real ones are needed (``--inputs DATA.npz``)."""
