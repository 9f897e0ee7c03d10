"""Distribution matching (DM, Zhao & Bilen 2023) and decomposed DM (Rahimi Malakshan et al. 2025).

Synthetic pixels are trained so that a freshly drawn random network sees the same per-class
statistics in the synthetic images as in the real ones. One generator implements both papers;
each term of the objective is switched on in config::

    L = L_MMD + style_weight * (moments_weight * L_MM + L_CM) + diversity_weight * L_ICD

i.e. the paper's ``λ(α·L_MM + L_CM) + (β·L_ICD + L_MMD)``. Every choice the sources leave open
is written down in ``docs/methods/dm.md``.

Speed: the agent is re-initialised in place, all classes go through one forward pass where the
network treats samples independently (instance norm, group norm, none), real images go through it
without autograd, and nothing inside an iteration reads a value back to the host; losses are
accumulated on the device and read at the logging / checkpoint / grid points only.

The modules, by job:

* :mod:`~distillkit.generators.distribution_matching.losses` — the loss terms (L_MMD, the style
  statistics with L_MM and L_CM, L_ICD);
* :mod:`~distillkit.generators.distribution_matching.agent` — the random agent: redrawn in place,
  and probed for its embeddings and norm-layer outputs;
* :mod:`~distillkit.generators.distribution_matching.batches` — random real images of every class at
  once, and siamese DSA with one draw per class;
* :mod:`~distillkit.generators.distribution_matching.generator` — the generator and its matching run.
"""
