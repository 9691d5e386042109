"""Pass infrastructure: a pass mutates a model in place and says whether it changed anything.

Modelled on onnx-ir's pass infrastructure: ``call(model) -> PassResult``, optional ``requires``
and ``ensures`` checks that turn violated assumptions into named errors, and a
:class:`PassManager` that reruns its passes until none changes the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx

log = logging.getLogger(__name__)


class PassError(RuntimeError):
    """A pass's precondition or postcondition does not hold (an internal error)."""


@dataclass
class PassResult:
    model: onnx.ModelProto
    modified: bool


class Pass:
    """One graph rewrite. Subclasses implement :meth:`call`; the docstring lists its rules."""

    def requires(self, model: onnx.ModelProto) -> None:  # noqa: B027 - optional hook
        """Raise PassError when the model is not in the state this pass expects."""

    def ensures(self, model: onnx.ModelProto) -> None:  # noqa: B027 - optional hook
        """Raise PassError when the pass did not leave the model as promised."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        raise NotImplementedError

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        self.requires(model)
        result = self.call(model)
        self.ensures(result.model)
        log.debug("%s: modified=%s", type(self).__name__, result.modified)
        return result


class PassManager:
    """Run passes in order, repeating the sequence until nothing changes (at most ``steps``)."""

    def __init__(self, passes: list[Pass], steps: int = 4) -> None:
        self.passes = passes
        self.steps = steps

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        any_change = False
        for _ in range(self.steps):
            changed = False
            for p in self.passes:
                result = p(model)
                model = result.model
                changed |= result.modified
            any_change |= changed
            if not changed:
                return PassResult(model, any_change)
        raise PassError(f"passes still changing the model after {self.steps} rounds")
