"""The README's config table, generated from the settings models and the preset data."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .settings import NAMESPACES, default_preset, documented_meaning, known_keys, presets


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if hasattr(value, "value"):
        return str(value.value)
    if isinstance(value, (list, dict)):
        return json.dumps(value) if value else ("`{}`" if isinstance(value, dict) else "`[]`")
    return str(value)


def _preset_cell(preset: str, namespace: str, key: str, default: Any) -> str:
    values = presets()[preset]
    without_service = not values.get("metadata:enabled", False)
    if without_service and namespace in ("db", "metadata") and key != "metadata:enabled":
        return "—"  # no database or metadata service in this preset
    return _shown(values.get(key, default))


def config_table() -> str:
    """Markdown: every config key, its default in each preset, and what it does."""
    names = list(presets())
    rows = [f"| key | {' | '.join(names)} | meaning |", "|---|" + "---|" * len(names) + "---|"]
    for namespace, model in NAMESPACES.items():
        for info in model.model_fields.values():
            key = f"{namespace}:{info.alias}"
            if key == "metaflow:preset":
                cells = ["default" if name == default_preset() else "" for name in names]
            elif info.is_required():
                cells = ["required"] * len(names)
            else:
                cells = [_preset_cell(p, namespace, key, info.default) for p in names]
            cells = [c.replace("|", "\\|") for c in cells]
            rows.append(f"| `{key}` | {' | '.join(cells)} | {documented_meaning(info)} |")
        if namespace == "aws":
            passed_through = [
                key
                for key in known_keys("aws")
                if key.removeprefix("aws:") not in {info.alias for info in model.model_fields.values()}
            ]
            rows.append(
                f"| any other AWS provider setting: {', '.join(f'`{key}`' for key in passed_through)} | "
                f"{' | '.join(['unset'] * len(names))} | forwarded to the AWS provider as given "
                "(lists and objects as JSON) |"
            )
    return "\n".join(rows)


def update_readme(path: Path, sections: dict[str, Callable[[], str]]) -> None:
    """Rewrite each generated `<!-- name: ... -->` ... `<!-- /name -->` section of the README."""
    text = path.read_text()
    for name, generate in sections.items():
        pattern = re.compile(rf"(<!-- {name}:[^>]*-->\n).*?(<!-- /{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"{path} has no <!-- {name}: --> section")
        body = generate()
        text = pattern.sub(lambda match, body=body: f"{match.group(1)}{body}\n{match.group(2)}", text)
    path.write_text(text)
