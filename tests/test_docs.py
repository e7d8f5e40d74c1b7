"""The README documents every config key with its real per-preset defaults."""

from __future__ import annotations

import re
from pathlib import Path

from metaflow_infra.docs import config_table
from metaflow_infra.settings import NAMESPACES, known_keys

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_section(marker: str) -> str:
    match = re.search(rf"<!-- {marker}:[^>]*-->\n(.*?)\n<!-- /{marker} -->", README.read_text(), re.S)
    assert match, f"README has no {marker} section"
    return match.group(1)


def test_readme_config_table_is_the_generated_one() -> None:
    assert readme_section("config-table") == config_table(), "run `python -m metaflow_infra config-table`"


def test_every_config_key_has_a_description() -> None:
    for namespace, model in NAMESPACES.items():
        for info in model.model_fields.values():
            assert info.description, f"{namespace}:{info.alias}"
    table = config_table()
    assert all(f"`{key}`" in table for namespace in NAMESPACES for key in known_keys(namespace))
