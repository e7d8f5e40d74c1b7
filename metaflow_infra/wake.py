"""How long a scale-to-zero wake takes: the stages of `data/wake_timings.toml`, each a best-to-worst range
with its source, summed. Pure; the profile sizes its retry budget from the worst case and the simulation
test runs these ranges through Metaflow's own client."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

WAKE_GOAL_SECONDS = 90
"""Issue 17's goal for the documented worst case; not met (docs/scale-to-zero.md says what would meet it)."""


@dataclass(frozen=True)
class Stage:
    name: str
    best: float
    worst: float
    kind: str
    source: str


@cache
def wake_stages() -> tuple[Stage, ...]:
    data = tomllib.loads(resources.files("metaflow_infra").joinpath("data", "wake_timings.toml").read_text())
    return tuple(Stage(**stage) for stage in data["stages"])


def best_wake_seconds() -> float:
    return sum(stage.best for stage in wake_stages())


def worst_wake_seconds() -> float:
    return sum(stage.worst for stage in wake_stages())
