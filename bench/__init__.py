"""Benchmarks: how fast the service is against the limits it could reach.

    python -m bench            # everything, side by side, one Ray start (make bench)
    python -m bench.gpu_svd    # full-size SVD-XT on a CUDA GPU (or --tiny on CPU)
    python -m bench.timeline   # one benchmark job through the service, call by call (where the time goes)
    make bench-smoke           # every benchmark once, --smoke (or --tiny), checked for its figures (tests/bench)

Every figure is a ratio or a latency measured in the same run as its reference, so a busy shared machine
moves both sides together. Results go to bench/out/latest.json; bench/RESULTS.md records runs by hand.
"""
