"""A scale-to-zero wake, simulated offline and met by Metaflow's real client.

The model: the first request reaches the waker (503); the service goes from 0 tasks to 1; the task is placed
and pulls its image; the migrator's connection takes the database from paused to available; the server
passes its health check; the watcher switches the route; from then on requests get 200. Stage timings are
the documented ranges of `metaflow_infra/data/wake_timings.toml`.

The client: `ServiceMetadataProvider._request` and `_version` from the installed metaflow, unchanged, with the
retry count the generated profile sets. Only its HTTP session (the endpoint) and `time.sleep` (a simulated
clock) are replaced; the retry loop and its back-off are Metaflow's own.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from metaflow.exception import MetaflowException
from metaflow.plugins.metadata_providers import service as metaflow_service
from metaflow.plugins.metadata_providers.service import ServiceMetadataProvider

from metaflow_infra.profile import MetadataEndpoint, ProfileInputs, metaflow_profile
from metaflow_infra.wake import WAKE_GOAL_SECONDS, best_wake_seconds, wake_stages, worst_wake_seconds

PROFILE = metaflow_profile(
    ProfileInputs(
        bucket_name="b",
        job_queue_arn="arn:aws:batch:us-east-1:123456789012:job-queue/q",
        task_role_arn="arn:aws:iam::123456789012:role/t",
        metadata=MetadataEndpoint(url="https://api.example/", internal_url="https://api.example/", auth_key="k"),
    )
)
PROFILE_RETRIES = int(PROFILE["METAFLOW_SERVICE_RETRY_COUNT"])
METAFLOW_DEFAULT_RETRIES = 5


@dataclass
class Wake:
    """The stack while it wakes, on a simulated clock: what the endpoint answers at each moment."""

    stage_seconds: list[float]
    """How long each stage of the wake takes, in order (see wake_timings.toml)."""
    first_answer: int = 503
    """What the endpoint answers while waking: the waker's 503, or what a design without it could answer."""
    clock: float = 0.0
    attempts: list[float] = field(default_factory=list)
    database: list[tuple[float, str]] = field(default_factory=lambda: [(0.0, "paused")])
    tasks: list[tuple[float, int]] = field(default_factory=lambda: [(0.0, 0)])

    @property
    def routed_at(self) -> float:
        """When the route reaches a ready task: the end of the last stage."""
        return sum(self.stage_seconds)

    def _timeline(self) -> None:
        """Record the state changes the stages imply, once the waker has been called."""
        ends = [sum(self.stage_seconds[: i + 1]) for i in range(len(self.stage_seconds))]
        self.tasks.append((ends[0], 1))  # the waker set desired count 1
        self.database.append((ends[3], "available"))  # the migrator's connection resumed it

    def get(self, url: str, headers: dict[str, str]) -> SimpleNamespace:
        if not self.attempts:
            self._timeline()
        self.attempts.append(self.clock)
        if self.clock >= self.routed_at:
            return SimpleNamespace(
                status_code=200, text="{}", json=lambda: {}, headers={"METADATA_SERVICE_VERSION": "2.5.1"}
            )
        return SimpleNamespace(status_code=self.first_answer, text='{"message": "starting"}', headers={})

    post = patch = get

    def sleep(self, seconds: float) -> None:
        self.clock += seconds


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Metaflow's client pointed at a simulated wake; returns `call(wake, retries, path)`."""

    def call(wake: Wake, retries: int = PROFILE_RETRIES, ping: bool = False) -> str:
        monkeypatch.setattr(metaflow_service, "SERVICE_RETRY_COUNT", retries)
        monkeypatch.setattr(metaflow_service, "time", SimpleNamespace(sleep=wake.sleep))
        monkeypatch.setattr(ServiceMetadataProvider, "_session", wake)
        # What default_info() gives from the profile's METAFLOW_SERVICE_URL (setting INFO would ping it first).
        monkeypatch.setattr(ServiceMetadataProvider, "_INFO", PROFILE["METAFLOW_SERVICE_URL"])
        try:
            if ping:
                ServiceMetadataProvider._version(None)
            else:
                ServiceMetadataProvider._request(None, "/flows/HelloFlow", "GET")
        except MetaflowException as error:
            return f"failed: {type(error).__name__}"
        return "ok"

    yield call


def one_stage(seconds: float) -> list[float]:
    return [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, seconds]


def test_the_documented_stages_sum_to_a_47_to_153_second_wake() -> None:
    assert [round(best_wake_seconds(), 1), worst_wake_seconds()] == [47.5, 153]
    assert len(wake_stages()) == 8 and all(stage.source and stage.best <= stage.worst for stage in wake_stages())
    assert "resumes the paused Aurora database" in wake_stages()[3].name


def test_the_documented_worst_case_misses_the_90_second_goal() -> None:
    """Said plainly in docs/scale-to-zero.md with what would bring it down."""
    assert worst_wake_seconds() > WAKE_GOAL_SECONDS
    assert best_wake_seconds() <= WAKE_GOAL_SECONDS


@pytest.mark.parametrize(
    "start_delay, outcome",
    [
        (15, "ok"),
        (47.5, "ok"),  # the documented best case
        (90, "ok"),
        (127, "ok"),  # the 8th attempt
        (153, "ok"),  # the documented worst case
        (255, "ok"),  # the 9th and last attempt
        (256, "failed: ServiceException"),
    ],
)
def test_start_delays_the_profile_outlasts_and_the_first_it_does_not(
    client: Any, start_delay: float, outcome: str
) -> None:
    wake = Wake(one_stage(start_delay))
    assert client(wake) == outcome
    assert len(wake.attempts) <= PROFILE_RETRIES
    if outcome == "ok":
        assert wake.attempts[-1] >= start_delay > (wake.attempts[-2] if len(wake.attempts) > 1 else -1)


def test_the_profile_covers_the_worst_wake_with_margin(client: Any) -> None:
    """The last attempt comes at least 60% later than the documented worst-case wake needs."""
    wake = Wake(one_stage(float("inf")))
    assert client(wake).startswith("failed")
    last_attempt = wake.attempts[-1]
    assert last_attempt == 255
    assert last_attempt >= 1.6 * worst_wake_seconds()


def test_metaflows_default_retry_count_gives_up_during_even_the_best_wake(client: Any) -> None:
    wake = Wake([stage.best for stage in wake_stages()])
    assert client(wake, retries=METAFLOW_DEFAULT_RETRIES) == "failed: ServiceException"
    assert wake.attempts[-1] == 15 < best_wake_seconds()


def test_a_504_during_the_wake_fails_at_once(client: Any) -> None:
    """Why the design never lets API Gateway time out an integration: Metaflow does not retry a 504."""
    wake = Wake([stage.best for stage in wake_stages()], first_answer=504)
    assert client(wake) == "failed: ServiceException"
    assert wake.attempts == [0.0]


def test_the_version_check_rides_out_the_wake_too(client: Any) -> None:
    wake = Wake([stage.worst for stage in wake_stages()])
    assert client(wake, ping=True) == "ok"


@pytest.mark.parametrize("seed", range(200))
def test_every_wake_drawn_from_the_documented_ranges_succeeds(client: Any, seed: int) -> None:
    chance = random.Random(seed)
    wake = Wake([chance.uniform(stage.best, stage.worst) for stage in wake_stages()])
    assert client(wake) == "ok"
    assert wake.attempts[-1] >= wake.routed_at


def test_the_model_wakes_the_task_first_and_the_database_on_the_migrators_connection(client: Any) -> None:
    wake = Wake([stage.worst for stage in wake_stages()])
    client(wake)
    assert wake.tasks == [(0.0, 0), (3, 1)]
    assert wake.database == [(0.0, "paused"), (3 + 20 + 60 + 30, "available")]
    assert wake.routed_at == worst_wake_seconds()
