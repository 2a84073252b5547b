"""Latency-vs-accuracy benchmarks for every MemoCMT variant: `python -m benchmarks --help`.

Modules: `machine` (what the numbers were measured on), `variants` (the models and their
ONNX bundles), `latency` (per-stage timings, scaling, throughput, load time and memory),
`accuracy` (UA/WA on held-out speakers and the floors), `plots`, `compare` and `report`
(markdown and the command line). The other scripts here (`live_latency.py`, `soak.py`,
`baselines.py`) run on their own.
"""
