"""The one diffusion module: every class-conditional diffusion model distillkit trains or samples
goes through here — DGS's pool, D2C's difficulty scorer and the generative evaluator.

* :mod:`~distillkit.diffusion.pixels` — between the dataset's normalised space and the model's pixels
  in [-1, 1], and the padding that lets every UNet level halve the image;
* :mod:`~distillkit.diffusion.spaces` — where a denoiser works: the padded pixels, or a VAE's latents;
* :mod:`~distillkit.diffusion.denoisers` — the denoiser networks (diffusers ``UNet2DModel``, or a
  ``DiTTransformer2DModel``, with class embeddings and a null class for classifier-free guidance) and the
  noise schedule;
* :mod:`~distillkit.diffusion.training` — DDPM noise-prediction training, resumable, with a hook for
  extra training losses (e.g. an alignment loss on intermediate features);
* :mod:`~distillkit.diffusion.sampling` — DDIM sampling with classifier-free guidance.

The trained model itself is the ``diffusion`` role (:mod:`distillkit.roles.diffusion`).
"""
