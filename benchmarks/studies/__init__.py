"""One-off studies: each answered one design question once, and its module docstring says the
question, the answer and where the results are (benchmarks/results/). They are kept so that the
answer can be checked again; they are not part of the maintained benchmark suite."""
