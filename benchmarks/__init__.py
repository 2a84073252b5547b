"""The maintained benchmarks of MemoCMT Live.

`python -m benchmarks --help`: latency against accuracy for every model variant. Its modules are
`machine` (what the numbers were measured on), `variants` (the models and their ONNX bundles),
`worker` (one variant in a process of its own), `latency` (per-stage timings, scaling,
throughput, load time and memory), `accuracy` (UA/WA on held-out speakers and the floors),
`plots`, `compare` (against an earlier results.json) and `report` (markdown and the command line).

Run on their own: `live_latency.py` (end of speech to result through the live pipeline),
`soak.py` (a long generated session: memory and lag stay flat), `onnx_speed.py` (PyTorch eager against
ONNX Runtime fp32 and int8) and `baselines.py` (speaker-independent floors for RAVDESS: linear probes and eGeMAPS). One-off studies
that answered a design question are in `benchmarks/studies/`; results are in `benchmarks/results/`.
"""
