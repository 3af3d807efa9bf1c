"""Docs that are generated or quoted from the code stay in step with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.config_docs import render

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]


def test_config_reference_matches_the_schema():
    committed = (ROOT / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    assert committed == render(), "regenerate: python -m serve_app.config_docs > docs/CONFIG.md"


def test_readme_opens_with_the_two_commands_and_covers_operations():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme[: readme.index("## ", readme.index("## Quick start") + 3)]
    assert "make demo" in quick_start and "make test" in quick_start
    for heading in ("## Troubleshooting", "## Performance", "## Configuration", "## Monitoring"):
        assert heading in readme, heading


def test_the_license_file_is_the_license_pyproject_names():
    import tomllib

    license_name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_name == "Apache-2.0"
    assert "Apache License" in text[:200] and "Version 2.0, January 2004" in text[:200]


def test_the_monitoring_table_lists_every_metric_the_code_defines():
    import re

    from tests.support.docs import documented_metrics

    defined = set(re.findall(r'"(storyreel_\w+)"', (ROOT / "core" / "metrics.py").read_text()))
    assert documented_metrics() == defined
