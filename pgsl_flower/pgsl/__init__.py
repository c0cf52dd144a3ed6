"""PGSL building blocks (Khowaja et al. 2022, Section IV) as pure, batched torch functions.

- :mod:`.pixel_attack` — intentional JSMA-style few-pixel attack (eq. 1)
- :mod:`.resampling` — reversible down/up-sampling with the saliency channel (IV-B)
- :mod:`.proximal` — robust PCA by accelerated proximal gradient (eqs. 2-6)
- :mod:`.fusion` — conv-sum fusion (eqs. 7-8) and adaptive weighted averaging (eqs. 9-11)
- :mod:`.server_model` — the server side: recovery, fusion, three towers, fused-only dL/dh

Selected by run-config ``defense = "pgsl"`` (``strategies/pgsl.toml``).
"""
