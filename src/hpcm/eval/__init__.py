"""hpcm.eval: evaluation (CompressAI eval_model schema), classical anchors, RD plots, BD-rate, profiling.

Modules: ``metrics`` (PSNR / MS-SSIM / bpp), ``schema`` (JSON Schema + validator), ``results`` (records,
aggregation, I/O), ``runner`` (``hpcm eval``), ``classical`` (``hpcm bench-codec``), ``plot``, ``bdrate``,
``profile``, ``study`` (the phase study's analysis and report, driven by ``experiments/phase_study.py``).
See docs/measurement.md.
"""
