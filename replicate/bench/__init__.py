"""Training-step and inference speed of the zoo, ours against the reference computation.

``python -m replicate.bench`` times, for each model, the implementations below on synthetic images with
``torch.utils.benchmark`` (warm-up, repeated blocks, median), interleaving configurations round by round so
that machine drift affects all of them alike:

* ``replicate``: the library as the training engine runs it (fused basis, fused basis-BN/coefficients on
  CPU, batched regulariser, channels_last; float32 as the engine trains by default);
* ``reference``: the same model and weights computed the authors' way (``bench.reference``), NCHW, fp32;
* ``original``: the unshared network of the same family, run as ``replicate`` runs;
* ``folded``: ``models.fold`` of the shared model, inference only;
* ``compiled`` (opt-in): ``replicate`` under ``torch.compile``.

``--basis-convs`` (``bench.convs``) times each basis convolution shape of a model instead, at its rank and
without its unique channels: what the rank costs on this machine's convolution kernels.
"""
from .measure import IMPLEMENTATIONS, DEFAULT_MODELS, Measurement, run_benchmark

__all__ = ["DEFAULT_MODELS", "IMPLEMENTATIONS", "Measurement", "run_benchmark"]
