"""PGD's step loop in fixed buffers, captured once as a CUDA graph and replayed: ``PGD(cuda_graph=True)``.

A ``StaticRun`` keeps the whole state of one run in tensors allocated once per batch shape: the
images ``x0`` and goals, the iterate ``xa``, the momentum ``m``, ``moving`` (bool (N,): samples not
fooled yet) and ``out`` (each sample's first fooling point). One step (the forward, under autocast
with ``amp``; the gradient with respect to the input; early stop by mask; momentum; the fused in-place
projection) reads and writes only those buffers and the model's parameters, and reads nothing back
to the host, so its kernels are captured once (``torch.cuda.CUDAGraph``) and each later step is one
graph launch instead of hundreds of kernel launches.

Early stop in a batch that cannot shrink: a sample fooled at the start of a step has its point copied
to ``out`` and stops counting as moving; it still takes the step, but its result is the stored point,
the one the eager loop returns. The loop ends early once no sample is moving (one flag read per step).
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepfast.attacks.step import StepSettings, step_


class StaticRun:
    """One PGD run of ``attack`` on a batch of one shape, in fixed buffers; ``capture()`` records a step
    as a CUDA graph, after which ``run`` replays it (without, ``run`` calls the step eagerly)."""

    def __init__(self, attack: StepSettings, x0: Tensor, goal: Tensor, targeted: bool) -> None:
        self.attack, self.targeted = attack, targeted
        self.x0, self.goal = torch.empty_like(x0), torch.empty_like(goal)
        self.xa, self.out = torch.empty_like(x0), torch.empty_like(x0)
        self.moving = torch.ones(x0.shape[0], dtype=torch.bool, device=x0.device)
        self.m = torch.zeros_like(x0) if attack.momentum > 0 else None
        self.graph: torch.cuda.CUDAGraph | None = None

    def load(self, x0: Tensor, goal: Tensor, start: Tensor) -> None:
        """Copies a batch (x0, goal) and its starting point into the buffers; every sample moving."""
        self.x0.copy_(x0)
        self.goal.copy_(goal)
        self.xa.copy_(start)
        self.out.copy_(start)
        self.moving.fill_(True)
        if self.m is not None:
            self.m.zero_()

    def _per_sample(self, mask: Tensor) -> Tensor:
        return mask.view(-1, *(1,) * (self.xa.dim() - 1))

    def step(self) -> None:
        """One PGD step on the buffers (the work a graph replay repeats)."""
        a = self.attack
        grad, logits = a.gradient(self.xa, self.goal, self.targeted)
        if a.early_stop:
            done = a.succeeded(logits, self.goal, self.targeted)
            self.out.copy_(torch.where(self._per_sample(done & self.moving), self.xa, self.out))
            self.moving.logical_and_(~done)
        step_(a, self.xa, grad, self.x0, self.m)

    def capture(self, warmup: int = 2) -> None:
        """Records ``step`` as a CUDA graph, after ``warmup`` eager steps on the stream the capture then
        uses (lazy initialisation of cuDNN, cuBLAS handles and workspaces, and Triton compilation,
        happens there, not in the capture). The steps move the buffers: ``load`` again before ``run``."""
        device = self.x0.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self.step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            self.step()
        self.graph = graph

    def run(self, steps: int) -> Tensor:
        """``steps`` steps from the loaded start (fewer with early stop once every sample is fooled);
        returns the adversarial examples, a new tensor (N, ...)."""
        for _ in range(steps):
            if self.graph is None:
                self.step()
            else:
                self.graph.replay()
            if self.attack.early_stop and not bool(self.moving.any()):
                break
        return torch.where(self._per_sample(self.moving), self.xa, self.out)
