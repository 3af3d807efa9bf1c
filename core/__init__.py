"""The layer below everything: statuses, variants, job ids and files, error codes, metrics.

``engines``, ``deployments`` and ``serve_app`` import from here; nothing here imports them
(tests/unit/test_import_graph.py checks it).
"""
