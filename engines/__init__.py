"""Plain-Python engines behind the Ray Serve deployments.

Nothing in this package imports Ray: every engine can be built and tested on its own, and each
deployment in ``deployments/`` is a thin wrapper around one of them.
"""
