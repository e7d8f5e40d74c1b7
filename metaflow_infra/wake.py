"""How long a scale-to-zero wake takes: the stages of `data/wake_timings.toml`, each a best-to-worst range
with its source. A stage starts once every stage it comes after has ended, so the task's start and the
database's resume run side by side; the service is reachable once the first of the stages that serve requests
ends (the waker forwarding them, or the route deployed), each at the end of its longest chain (the critical
path). What a client waits is later: its first answer comes with the first of its attempts (Metaflow's retry
schedule) that the waker holds until then, or that comes after (`first_answer_seconds`). Pure; the simulation
test runs these ranges through Metaflow's own client and holds `first_answer_seconds` to it."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from .lambdas.waker import HOLD_OVERRUN_SECONDS, HOLD_SECONDS
from .profile import SERVICE_RETRY_COUNT

WAKE_GOAL_SECONDS = 90
"""Issue 17's goal for the documented worst case, held to what the client that woke the service waits for its
first answer (worst_first_answer_seconds): `plan --compare` says whether it is met, with and without the RDS
Data API; the task start, others' measurement, is most of it (docs/scale-to-zero.md)."""


@dataclass(frozen=True)
class Stage:
    id: str
    name: str
    after: tuple[str, ...]
    best: float
    worst: float
    kind: str
    source: str
    without_data_api: tuple[str, ...] | None = None
    """What the stage waits for where the stack has no Data API to resume the database early."""
    image_mb: float | None = None
    """The compressed image size (MB) the stage's timing was measured with."""
    serves: bool = False
    """From this stage's end, requests get the service's answers: the wake ends with the first such stage."""

    def waits_for(self, data_api: bool) -> tuple[str, ...]:
        return self.after if data_api or self.without_data_api is None else self.without_data_api


@cache
def wake_stages() -> tuple[Stage, ...]:
    """In an order where each stage comes after those it waits for (with or without the Data API)."""
    return parse_stages(resources.files("metaflow_infra").joinpath("data", "wake_timings.toml").read_text())


def parse_stages(text: str) -> tuple[Stage, ...]:
    """The stages of a wake_timings.toml, refused if one comes before a stage it waits for, or if none serves."""
    data = tomllib.loads(text)
    stages = tuple(
        Stage(
            **{
                **stage,
                "after": tuple(stage["after"]),
                "without_data_api": tuple(stage["without_data_api"]) if "without_data_api" in stage else None,
            }
        )
        for stage in data["stages"]
    )
    if not any(stage.serves for stage in stages):
        raise ValueError("no wake stage serves requests: the wake would never end")
    seen: set[str] = set()
    for stage in stages:
        if not {*stage.after, *(stage.without_data_api or ())} <= seen:
            raise ValueError(f"wake stage {stage.id!r} comes before a stage it waits for")
        seen.add(stage.id)
    return stages


def stage_ends(durations: Mapping[str, float], data_api: bool = True) -> dict[str, float]:
    """When each stage ends, from the first request, given how long each took."""
    ends: dict[str, float] = {}
    for stage in wake_stages():
        ends[stage.id] = max((ends[before] for before in stage.waits_for(data_api)), default=0.0) + durations[stage.id]
    return ends


def wake_seconds(durations: Mapping[str, float], data_api: bool = True) -> float:
    """From the first request until the service is reachable: the end of the first stage that serves requests
    (a request forwarded by the waker, or the route's switch deployed)."""
    ends = stage_ends(durations, data_api)
    return min(ends[stage.id] for stage in wake_stages() if stage.serves)


def image_size_warning(compressed_bytes: int) -> str | None:
    """What to tell at `pulumi up` when the copied image is larger than the image the documented pull time was
    measured with: its wakes may take longer than the documented worst case."""
    [measured_mb] = [stage.image_mb for stage in wake_stages() if stage.image_mb is not None]
    megabytes = compressed_bytes / 1e6
    if megabytes <= measured_mb:
        return None
    return (
        f"the metadata-service image is {megabytes:.0f} MB compressed, larger than the {measured_mb:g} MB "
        f"image the documented worst-case wake ({worst_wake_seconds():g} s) rests on: its pull, and so a wake, "
        "may take longer (docs/scale-to-zero.md)"
    )


def best_wake_seconds(data_api: bool = True) -> float:
    return wake_seconds({stage.id: stage.best for stage in wake_stages()}, data_api)


def worst_wake_seconds(data_api: bool = True) -> float:
    return wake_seconds({stage.id: stage.worst for stage in wake_stages()}, data_api)


def attempt_windows(
    hold_seconds: float = HOLD_SECONDS, retries: int = SERVICE_RETRY_COUNT
) -> list[tuple[float, float]]:
    """When each of a client's attempts is sent and until when the waker holds it, from the first: Metaflow's
    client (`ServiceMetadataProvider._request`) sleeps 2**i seconds after its i-th 503 (from 0)."""
    windows: list[tuple[float, float]] = []
    start = 0.0
    for attempt in range(retries):
        windows.append((start, start + hold_seconds))
        start += hold_seconds + 2**attempt
    return windows


def first_answer_seconds(
    reachable_at: float, hold_seconds: float = HOLD_SECONDS, retries: int = SERVICE_RETRY_COUNT
) -> float | None:
    """When the client whose request woke the service gets the service's first answer, if the service is
    reachable `reachable_at` seconds after that request: during the attempt the waker holds then, or at the
    first attempt after. None: its retries ran out first."""
    for start, held_until in attempt_windows(hold_seconds, retries):
        if reachable_at <= held_until:
            return max(start, reachable_at)
    return None


def worst_first_answer_seconds(
    data_api: bool = True,
    hold_seconds: float = HOLD_SECONDS,
    overrun_seconds: float = HOLD_OVERRUN_SECONDS,
    retries: int = SERVICE_RETRY_COUNT,
) -> float | None:
    """The latest first answer for any wake within the documented range, whatever each attempt's hold between
    `hold_seconds` and `hold_seconds + overrun_seconds` (the waker's: it looks last at `hold_seconds` and answers
    its 503 after that look, usually within HOLD_OVERRUN_SECONDS; lambdas/waker.py, `hold`). A reachable moment
    inside an attempt's hold is answered then; one after its last look (in the overrun, or in the client's sleep
    of 2**i s that follows) at the next attempt, at its latest. None: the range may reach past the last
    attempt."""
    best, worst = best_wake_seconds(data_api), worst_wake_seconds(data_api)
    answers = [worst]
    for attempt in range(retries):
        gap = 2**attempt
        # The gap after attempt k starts once k + 1 holds and the k sleeps before it have passed.
        earliest = (attempt + 1) * hold_seconds + gap - 1
        latest = (attempt + 1) * (hold_seconds + overrun_seconds) + gap - 1
        if earliest < worst and latest + gap > best:  # it may hold a reachable moment of the range
            if attempt == retries - 1:
                return None
            answers.append(latest + gap)
    return max(answers)
