"""What the gradient criteria (``taylor``, ``snip``, ``grasp``, ``crop``) share.

They need labelled data: inputs keyed by input name (``calib``) and one target per sample
(``labels``; on the command line both come from ``--calib DATA.npz``, which holds a ``labels``
or ``targets`` array). The loss is computed on the model's **first output**:

* ``cross-entropy`` (default): the output's last axis holds class scores (logits); ``labels``
  are integer class indices shaped like the output without its last axis; the loss is the mean
  over rows of ``-log softmax(scores)[label]``;
* ``mse``: ``labels`` are real-valued targets shaped like the output; the loss is the mean squared error.

Gradients come from the ONNX graph itself, run in torch by :mod:`spa.model.onnx_torch` (no need for
the framework the model came from). Every stored member of every prunable group, that is every
weight a unit owns (filters, biases, norm parameters and statistics, and the weight columns of
its readers), gets a per-weight saliency; a unit's score sums it over all its members with
:func:`~spa.criteria.base.aggregate_over_params`, exactly as ``l1`` sums ``|w|``. The data is run
in mini-batches (32 samples on a dynamic batch axis, else the model's fixed batch size); every
mini-batch loss is a mean over its samples, and "the gradient" ``g`` is the sample-weighted mean
of the mini-batch gradients, i.e. the gradient of the mean loss over all the data.

These criteria change no weights, so masked equivalence holds. They need torch
(``pip install 'spa[torch]'``); ``import spa`` does not import it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from spa.criteria.base import Criterion, aggregate_over_params

from spa.analysis.groups import Group
from spa.errors import InvalidArgumentError
from spa.model.graph import ModelContext
from spa.scoring.calib import batches

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

LOSSES = ("cross-entropy", "mse")
_TARGETS = "\0targets"  # key of the targets among the batched arrays (no input can be named so)

Arrays = dict[str, np.ndarray]


class GradientCriterion(Criterion):
    """Base class: labelled data in, per-weight gradients (and Hessian-gradient products) out.

    Refuses (InvalidArgumentError) an unknown ``--loss``, missing ``--calib`` data or labels, a
    label count that differs from the sample count, and non-integer labels for cross-entropy.
    Needs torch. Changes no weights.
    """

    #: True for criteria that cannot score without labelled data (``--calib`` with labels).
    needs_labels: ClassVar[bool] = True
    options = ("calib", "labels", "loss")

    def __init__(self, seed: int = 0, calib: Arrays | None = None, labels: np.ndarray | None = None,
                 loss: str = "cross-entropy", **_: object) -> None:
        super().__init__(seed)
        if loss not in LOSSES:
            raise InvalidArgumentError(f"--loss must be one of {', '.join(LOSSES)}, got '{loss}'")
        if calib is None:
            raise InvalidArgumentError(
                f"--criterion {self.name} needs labelled data: --calib DATA.npz with the inputs keyed by input "
                "name plus 'labels' (class indices) or 'targets'")
        if labels is None:
            raise InvalidArgumentError(
                f"--criterion {self.name} needs targets: the --calib data must also hold a 'labels' array "
                "(class indices, for --loss cross-entropy) or 'targets' (shaped like the output, for --loss mse)")
        targets = np.asarray(labels)
        n = {len(a) for a in calib.values()}
        if n != {len(targets)}:
            raise InvalidArgumentError(f"--calib: {len(targets)} targets for {sorted(n)} input samples; "
                                       "give one target per sample")
        if loss == "cross-entropy" and targets.dtype.kind not in "iu":
            raise InvalidArgumentError(f"--loss cross-entropy needs integer class indices as labels, got "
                                       f"{targets.dtype}; use --loss mse for real-valued targets")
        self.calib, self.targets, self.loss = calib, targets, loss
        self._scores: dict[int, np.ndarray] = {}

    # ---- the criterion interface -----------------------------------------------------------
    def prepare(self, groups: list[Group], ctx: ModelContext) -> None:
        """Score every group in ``groups`` (one pass over the data for all of them)."""
        if not groups:
            return
        self._scores.update(self.unit_scores(groups, ctx, GradientRun(self, groups, ctx)))

    def score(self, group: Group, ctx: ModelContext) -> np.ndarray:
        if group.id not in self._scores:
            self.prepare([group], ctx)
        return self._scores[group.id]

    def unit_scores(self, groups: list[Group], ctx: ModelContext, run: GradientRun) -> dict[int, np.ndarray]:
        """One score per unit for every group; subclasses define it."""
        raise NotImplementedError


def aggregate(group: Group, ctx: ModelContext, saliency: Arrays, absolute: bool = False) -> np.ndarray:
    """Per-unit sums of a per-weight ``saliency`` (keyed by tensor name) over the group's members.

    The same aggregation as the magnitude criteria: :func:`aggregate_over_params` over a view of
    ``ctx`` whose stored tensors read as their saliency. ``absolute`` sums ``|saliency|``.
    """
    reduce: Callable[[np.ndarray, tuple[int, ...]], np.ndarray] = (
        (lambda t, axes: np.abs(t).sum(axis=axes, dtype=np.float64)) if absolute
        else (lambda t, axes: t.sum(axis=axes, dtype=np.float64)))
    # _SaliencyView is a duck-typed ModelContext (everything but ``array`` is forwarded), not a subclass.
    return aggregate_over_params(group, _SaliencyView(ctx, saliency), reduce)  # type: ignore[arg-type]


class _SaliencyView:
    """A :class:`ModelContext` whose float stored tensors read as per-weight saliencies."""

    def __init__(self, ctx: ModelContext, saliency: Arrays) -> None:
        self._ctx, self._saliency = ctx, saliency

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def array(self, name: str) -> np.ndarray:
        return self._saliency[name] if name in self._saliency else self._ctx.array(name)


class GradientRun:
    """The model in torch (:mod:`spa.model.onnx_torch`), the labelled data in mini-batches, and the loss.

    ``names`` are the float stored members of the groups, :attr:`weights` their values. The
    variables ``θ`` of the loss are every float initializer of the model plus ``names`` (which
    may include Constant outputs and exporter views); :meth:`gradients` and
    :meth:`hessian_gradient` differentiate with respect to all of them and return arrays keyed
    by tensor name.
    """

    def __init__(self, criterion: GradientCriterion, groups: list[Group], ctx: ModelContext) -> None:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise InvalidArgumentError(f"--criterion {criterion.name} needs torch to compute gradients: "
                                       "pip install 'spa[torch]' (or torch==2.13.0)") from None
        from spa.model.onnx_torch import convert

        self.names = sorted({t for g in groups for t, _ in g.params(ctx) if ctx.array(t).dtype.kind == "f"})
        self.weights: Arrays = {n: np.asarray(ctx.array(n), dtype=np.float64) for n in self.names}
        self.module = convert(ctx.model)
        trained = {n for n, t in self.module.onnx_tensors().items() if t.is_floating_point()}
        self.variables = sorted(trained | set(self.names))
        self.output = self.module.output_names[0]
        self.loss, self.name = criterion.loss, criterion.name
        data = {**criterion.calib, _TARGETS: criterion.targets}
        self.batches = list(batches(ctx.model, data, "--calib"))
        self.samples = len(criterion.targets)

    def _loss(self, batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean loss on one mini-batch, and the tensors of :attr:`names` it was computed from."""
        import torch
        import torch.nn.functional as F

        feeds = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items() if k != _TARGETS}
        env = self.module.run(feeds, watch=self.variables)
        out, target = env[self.output], torch.from_numpy(np.ascontiguousarray(batch[_TARGETS]))
        if self.loss == "mse":
            if tuple(target.shape) != tuple(out.shape):
                raise InvalidArgumentError(f"--loss mse: targets have shape {list(target.shape)} per batch, the "
                                           f"first output '{self.output}' has {list(out.shape)}; they must match")
            return F.mse_loss(out, target.to(out.dtype)), {n: env[n] for n in self.variables}
        if out.dim() < 1 or tuple(target.shape) != tuple(out.shape[:-1]):
            raise InvalidArgumentError(
                f"--loss cross-entropy: labels have shape {list(target.shape)} per batch, the first output "
                f"'{self.output}' has {list(out.shape)}; give one class index per row of its last axis")
        classes = out.shape[-1]
        if int(target.min()) < 0 or int(target.max()) >= classes:
            raise InvalidArgumentError(f"--loss cross-entropy: labels must be class indices in [0, {classes}), "
                                       f"found {int(target.min())}..{int(target.max())}")
        loss = F.cross_entropy(out.reshape(-1, classes), target.reshape(-1).long())
        return loss, {n: env[n] for n in self.variables}

    def _grad(self, loss: torch.Tensor, tensors: dict[str, torch.Tensor], create_graph: bool = False
              ) -> dict[str, torch.Tensor]:
        import torch

        grads = torch.autograd.grad(loss, list(tensors.values()), create_graph=create_graph, allow_unused=True)
        return {n: torch.zeros_like(t) if g is None else g for (n, t), g in zip(tensors.items(), grads)}

    def batch_gradients(self) -> Iterator[tuple[float, Arrays]]:
        """``(weight, gradient)`` per mini-batch, where ``weight`` is its share of the samples."""
        for batch in self.batches:
            loss, tensors = self._loss(batch)
            grads = self._grad(loss, tensors)
            yield len(batch[_TARGETS]) / self.samples, {n: _numpy(g) for n, g in grads.items()}

    def gradients(self) -> Arrays:
        """The gradient ``g`` of the mean loss over all the data, per variable."""
        total: Arrays = {}
        for share, grads in self.batch_gradients():
            for n, g in grads.items():
                total[n] = total[n] + share * g if n in total else share * g
        return total

    def hessian_gradient(self, g: Arrays) -> Arrays:
        """``H g``: the Hessian of the mean loss times ``g`` (over all variables), per variable.

        For each mini-batch ``b``, ``H_b g = ∂/∂θ (∇L_b(θ) · stopgrad(g))``; the products are
        averaged with the batches' sample shares.
        """
        import torch

        total: Arrays = {n: np.zeros_like(v) for n, v in g.items()}
        for batch in self.batches:
            loss, tensors = self._loss(batch)
            grads = self._grad(loss, tensors, create_graph=True)
            dot = sum((grads[n] * torch.from_numpy(g[n]).to(grads[n].dtype)).sum() for n in self.variables
                      if grads[n].requires_grad)
            if not isinstance(dot, torch.Tensor):
                continue  # the loss is linear in every tensor: H g = 0
            share = len(batch[_TARGETS]) / self.samples
            for n, hg in self._grad(dot, tensors).items():
                total[n] += share * _numpy(hg)
        return total


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()
