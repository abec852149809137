"""Benchmarks: ``python -m bench cpu | gpu | render | memory | knobs | all``.

Each section prints one fixed-width table headed by the machine (CPU model, threads, torch and
onnxruntime versions, load average) and the command that produced it. Timings on a shared machine
are noisy: every section times the reference generator in the same process where a ratio is
reported, and gives medians and p95.
"""
