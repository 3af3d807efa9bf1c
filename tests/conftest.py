"""Shared pytest setup. Fixtures live in tests/fixtures/, one module per subject, listed here."""

pytest_plugins = [
    "tests.fixtures.browser",
    "tests.fixtures.jobs",
    "tests.fixtures.media",
    "tests.fixtures.models",
    "tests.fixtures.postgres",
    "tests.fixtures.s3",
    "tests.fixtures.serve",
    "tests.fixtures.writer",
]
