"""Trajectory matching: MTT (Cazenavette et al., CVPR 2022), DATM (Guo et al., ICLR 2024) and PAD
(Li et al., 2024) as one generator.

Each iteration picks an expert trajectory (``distillkit.experts``) and a start epoch t, starts a
student at the expert's parameters θ*_t, takes ``syn_steps`` SGD steps on augmented synthetic
batches with a learnable lr α, and matches the expert ``expert_epochs`` (M) epochs later::

    L = ‖θ_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²      (over the kept parameter elements)

The gradient flows back through every unrolled step to the pixels, to α and (DATM) to learnable
soft labels. DATM adds: init from images the experts classify correctly, soft labels initialised
from the experts' logits, a start-epoch window whose upper bound grows, and a loss threshold above
which an iteration does not update. PAD adds parameter selection: drop the shallowest ``ratio`` of
the flattened parameters (``depth``) or the ``ratio`` with the smallest matching error (``loss``).
Every decision where the sources disagree or are silent is in ``docs/methods/trajectory_matching.md``.

Memory: ``memory: full`` keeps the graph of every unrolled step (MTT); ``memory: checkpoint`` keeps
only each step's parameter vector and recomputes one step's graph at a time while walking the
steps backwards, which gives the same gradients (in fp32; under bf16 up to its rounding) with a
peak that no longer holds ``syn_steps`` double-backward graphs.

The student is functional (``torch.func.functional_call`` on a flat parameter vector); nothing
inside an iteration reads a value back to the host: the threshold test is a device-side mask on the
optimiser step, and losses are read at logging / checkpoint points only.

The modules, by job:

* :mod:`~distillkit.generators.trajectory_matching.objective` — the matching loss and PAD's
  parameter selection;
* :mod:`~distillkit.generators.trajectory_matching.student` — the functional student: its flat
  parameter vector and one SGD step on a synthetic batch;
* :mod:`~distillkit.generators.trajectory_matching.unroll` — unrolling the student's steps and
  back-propagating the loss, with every graph kept (``full``) or one at a time (``checkpoint``);
* :mod:`~distillkit.generators.trajectory_matching.optimiser` — SGD with momentum whose step a
  device-side mask can skip (DATM's loss threshold);
* :mod:`~distillkit.generators.trajectory_matching.generator` — the generator and its matching run.
"""
