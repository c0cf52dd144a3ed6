"""Reconstruction and adversarial-example attacks, and how they are scored.

- :mod:`.interface`: the observations (intercepted smashed data + the
  adversary's own material; one example's gradients) and the interface every
  reconstruction attack implements (``reconstruct(observation) -> images``).
- :mod:`.decoder`: learned inversion ``h -> x`` (He et al. 2019; Titcombe et al. 2021).
- :mod:`.gan_prior`: DCGAN trained on the adversary's own data, latent codes
  optimised to match the intercepted ``h`` (the paper's DCGAN row).
- :mod:`.gradient_matching`: DLG (Zhu et al. 2019) and iDLG (Zhao et al. 2020);
  :mod:`.split_gradients`: their observation on the split network.
- :mod:`.adversarial_examples`: JSMA, C&W, BIM and FGSM through ART.
- :mod:`.scoring`: MSE / PSNR / SSIM (torchmetrics) and the clean classifier.
- :mod:`.interception`: the adversarial client inside a federation.
"""
