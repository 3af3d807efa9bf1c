"""Shared pytest setup. Fixtures live in tests/fixtures/, one module per subject, listed here."""

pytest_plugins = [
    "tests.fixtures.media",
]
