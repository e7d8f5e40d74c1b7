"""A scale-to-zero wake, simulated offline and met by Metaflow's real client.

The model: the first request reaches the waker (503); the service goes from 0 tasks to 1; the task is placed
and pulls its image (from the stack's ECR copy) while, side by side, the watcher's Data API call takes the
database from paused to available (where the stack has no Data API, the migrator's connection does, after the
task has started); the migrator runs once both are done; the server passes its health check; from then on a
request reaching the waker is forwarded to the task (a few seconds for its own checks), and soon the watcher's
route switch deploys: whichever comes first, the service is reachable. Until then the waker holds each request
for up to HOLD_SECONDS before its 503: a request held when the service becomes reachable is answered then.
Stage timings are the documented ranges of `metaflow_infra/data/wake_timings.toml`, and the service is
reachable after the critical path (`metaflow_infra.wake`). What is held to the goal is when the client gets
its first answer.

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

from metaflow_infra.lambdas.waker import ANSWER_BY_SECONDS, HOLD_OVERRUN_SECONDS, HOLD_SECONDS
from metaflow_infra.profile import MetadataEndpoint, ProfileInputs, metaflow_profile
from metaflow_infra.wake import (
    WAKE_GOAL_SECONDS,
    attempt_windows,
    best_wake_seconds,
    first_answer_seconds,
    image_size_warning,
    parse_stages,
    stage_ends,
    wake_seconds,
    wake_stages,
    worst_first_answer_seconds,
    worst_wake_seconds,
)

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

    stage_seconds: dict[str, float]
    """How long each stage of the wake takes, by stage id (see wake_timings.toml)."""
    data_api: bool = True
    """Whether the stack's region lets the watcher resume the database through the Data API."""
    first_answer: int = 503
    """What the endpoint answers while waking: the waker's 503, or what a design without it could answer."""
    hold_seconds: float = HOLD_SECONDS
    """How long the waker holds a request before its 503 (0: answered at once)."""
    overruns: list[float] = field(default_factory=list)
    """How much longer than `hold_seconds` each held attempt's 503 takes, in turn (then none)."""
    clock: float = 0.0
    attempts: list[float] = field(default_factory=list)
    answered_at: float | None = None
    """When the service's first answer came."""
    database: list[tuple[float, str]] = field(default_factory=lambda: [(0.0, "paused")])
    tasks: list[tuple[float, int]] = field(default_factory=lambda: [(0.0, 0)])

    @property
    def served_at(self) -> float:
        """When the service is reachable (a request forwarded, or routed)."""
        return wake_seconds(self.stage_seconds, self.data_api)

    def _timeline(self) -> None:
        """Record the state changes the stages imply, once the waker has been called."""
        ends = stage_ends(self.stage_seconds, self.data_api)
        self.tasks.append((ends["waker"], 1))  # the waker set desired count 1
        self.database.append((ends["resume"], "available"))  # the watcher's Data API call, or the migrator

    def get(self, url: str, headers: dict[str, str]) -> SimpleNamespace:
        if not self.attempts:
            self._timeline()
        self.attempts.append(self.clock)
        if self.clock < self.served_at <= self.clock + self.hold_seconds:
            self.clock = self.served_at  # held until the task serves, then forwarded to it
        if self.clock >= self.served_at:
            self.answered_at = self.clock
            return SimpleNamespace(
                status_code=200, text="{}", json=lambda: {}, headers={"METADATA_SERVICE_VERSION": "2.5.1"}
            )
        self.clock += self.hold_seconds + (self.overruns.pop(0) if self.overruns else 0.0)
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


def one_stage(seconds: float) -> dict[str, float]:
    """A wake whose whole length is one stage, the task's start (the others take no time)."""
    return {stage.id: seconds if stage.id == "start" else 0.0 for stage in wake_stages()}


def best() -> dict[str, float]:
    return {stage.id: stage.best for stage in wake_stages()}


def worst() -> dict[str, float]:
    return {stage.id: stage.worst for stage in wake_stages()}


def test_the_documented_stages_give_a_28_to_84_second_wake_and_114_without_the_data_api() -> None:
    assert [best_wake_seconds(), worst_wake_seconds()] == [27.8, 84]
    assert [best_wake_seconds(data_api=False), worst_wake_seconds(data_api=False)] == [42.8, 114]
    assert len(wake_stages()) == 11 and all(stage.source and stage.best <= stage.worst for stage in wake_stages())


def test_the_database_resumes_beside_the_task_start_and_off_its_critical_path() -> None:
    """Its worst resume (36 s after the request) ends long before the worst task start (70 s): shortening it
    would not shorten the worst wake; the start would."""
    stages = {stage.id: stage for stage in wake_stages()}
    assert stages["resume"].after == ("watcher",) and stages["watcher"].after == ("waker",)
    assert stages["resume"].without_data_api == ("start",)
    assert stages["migrate"].after == ("start", "resume")
    ends = stage_ends(worst())
    assert (ends["resume"], ends["start"]) == (36, 70)
    assert wake_seconds({**worst(), "resume": 0.0}) == worst_wake_seconds()
    # An instant start leaves the resume as the longer branch.
    assert wake_seconds({**worst(), "start": 0.0}) == ends["resume"] + 3 + 8 + 3  # migrate, health, forward


def test_the_documented_worst_case_meets_the_90_second_goal_with_six_seconds_to_spare() -> None:
    """Said plainly in docs/scale-to-zero.md: a task start 6 s slower at worst than others' measurement would
    reach the goal; where the stack has no Data API the migrator resumes the database after the start, 30 s more,
    and the goal is missed."""
    assert worst_wake_seconds() <= WAKE_GOAL_SECONDS < worst_wake_seconds(data_api=False)
    stages = {stage.id: stage for stage in wake_stages()}
    assert wake_seconds({**worst(), "start": stages["start"].worst + 6}) == WAKE_GOAL_SECONDS
    assert worst_wake_seconds(data_api=False) == worst_wake_seconds() + 30


def test_forwarding_takes_the_routes_deployment_off_the_critical_path() -> None:
    """However long API Gateway takes to deploy the switched route (undocumented), requests are served once the
    task is; without forwarding, the worst wake would be the route's: 93 s, the goal missed."""
    assert wake_seconds({**worst(), "route": 1000.0}) == worst_wake_seconds()
    assert wake_seconds({**worst(), "forward": float("inf")}) == 3 + 5 + 62 + 3 + 8 + 1 + 1 + 10 == 93
    # and when the route deploys first, it ends the wake
    assert wake_seconds({**best(), "forward": 10.0}) == stage_ends(best())["route"] < stage_ends(best())["health"] + 10


@pytest.mark.parametrize(
    "start_delay, outcome",
    [
        (15, "ok"),
        (27.8, "ok"),  # the documented best case
        (84, "ok"),  # the documented worst case
        (90, "ok"),
        (114, "ok"),  # the documented worst case where the stack has no Data API
        (255, "ok"),
        (435, "ok"),  # the 9th and last attempt, held to its end
        (435.1, "failed: ServiceException"),
    ],
)
def test_start_delays_the_profile_outlasts_and_the_first_it_does_not(
    client: Any, start_delay: float, outcome: str
) -> None:
    wake = Wake(one_stage(start_delay))
    assert client(wake) == outcome
    assert len(wake.attempts) <= PROFILE_RETRIES
    if outcome == "ok":
        assert wake.answered_at == first_answer_seconds(start_delay)


@pytest.mark.parametrize("hold_seconds", [HOLD_SECONDS, 0.0])
@pytest.mark.parametrize("retries", [PROFILE_RETRIES, METAFLOW_DEFAULT_RETRIES])
def test_first_answer_seconds_is_when_metaflows_own_client_gets_its_first_answer(
    client: Any, hold_seconds: float, retries: int
) -> None:
    """What `plan --compare` and the design note report for the client, held to the real retry loop at every
    reachable moment from 0 to past the last attempt, on each side of every attempt's edges."""
    windows = attempt_windows(hold_seconds, retries)
    edges = {edge + nudge for window in windows for edge in window for nudge in (-0.01, 0.0, 0.01)}
    for reachable_at in sorted({*(x / 2 for x in range(900)), *edges} - {x for x in edges if x < 0}):
        wake = Wake(one_stage(reachable_at), hold_seconds=hold_seconds)
        outcome = client(wake, retries=retries)
        expected = first_answer_seconds(reachable_at, hold_seconds, retries)
        assert (wake.answered_at if outcome == "ok" else None) == expected, reachable_at
        assert wake.attempts == [start for start, _ in windows][: len(wake.attempts)]


def test_the_client_that_woke_the_service_is_answered_within_the_goal_because_the_waker_holds_it() -> None:
    """The documented worst case: reachable at 84 s, during the attempt sent at 67 s (71 s at the latest) and
    held; without holding, its client would wait for the attempt at 127 s and the goal would be missed. Where
    the stack has no Data API: 114 s, missed by 24 s. Both said plainly in docs/scale-to-zero.md, as is the
    bound's one condition: a hold overrunning by more than 5.6 s (the waker's last probe and calls take up to
    HOLD_OVERRUN_SECONDS, 4) in each of three attempts in a row, which only its ANSWER_BY_SECONDS guard bounds."""
    assert worst_first_answer_seconds() == worst_wake_seconds() == 84 <= WAKE_GOAL_SECONDS
    assert worst_first_answer_seconds(hold_seconds=0, overrun_seconds=0) == 127
    assert worst_first_answer_seconds(data_api=False) == 114 > WAKE_GOAL_SECONDS
    assert worst_first_answer_seconds(overrun_seconds=5.6) == 84 < worst_first_answer_seconds(overrun_seconds=5.7)
    assert worst_first_answer_seconds(overrun_seconds=ANSWER_BY_SECONDS - HOLD_SECONDS) == 91
    # A hold one second short, as the first version of the waker's loop could end, would miss the goal.
    assert worst_first_answer_seconds(hold_seconds=HOLD_SECONDS - 1, overrun_seconds=0) == 91
    # A wake reachable just as an attempt stops being held waits for the next one: the worst is not always the end.
    assert first_answer_seconds(63.5) == 67 and max(first_answer_seconds(x / 10) or 0 for x in range(278, 841)) == 84


def test_the_profile_covers_the_worst_wake_with_margin(client: Any) -> None:
    """Even if the waker answered at once (no hold), the last attempt comes at least twice as late as the
    documented worst case needs, with the Data API (three times: 255 s for 84 s) or without it (255 s for 114 s)."""
    wake = Wake(one_stage(float("inf")), hold_seconds=0)
    assert client(wake).startswith("failed")
    last_attempt = wake.attempts[-1]
    assert last_attempt == 255
    assert last_attempt >= 3 * worst_wake_seconds()
    assert last_attempt >= 2 * worst_wake_seconds(data_api=False)


def test_held_requests_carry_even_metaflows_default_retries_through_the_documented_wake(client: Any) -> None:
    """Steps on Batch do not read the profile: Metaflow's 5 attempts reach 15 s unheld, short of even the best
    wake; held, they last until 115 s at least, past the documented worst with or without the Data API."""
    for data_api in (True, False):
        assert client(Wake(worst(), data_api=data_api), retries=METAFLOW_DEFAULT_RETRIES) == "ok"
        assert worst_first_answer_seconds(data_api, retries=METAFLOW_DEFAULT_RETRIES) == worst_wake_seconds(data_api)
    assert attempt_windows(HOLD_SECONDS, METAFLOW_DEFAULT_RETRIES)[-1][1] == 115
    unheld = Wake(best(), hold_seconds=0)
    assert client(unheld, retries=METAFLOW_DEFAULT_RETRIES) == "failed: ServiceException"
    assert unheld.attempts[-1] == 15 < best_wake_seconds()


def test_a_504_during_the_wake_fails_at_once(client: Any) -> None:
    """Why the design never lets API Gateway time out an integration: Metaflow does not retry a 504."""
    wake = Wake(best(), first_answer=504, hold_seconds=0)
    assert client(wake) == "failed: ServiceException"
    assert wake.attempts == [0.0]


@pytest.mark.parametrize("data_api", [True, False])
def test_the_version_check_rides_out_the_wake_too(client: Any, data_api: bool) -> None:
    wake = Wake(worst(), data_api=data_api)
    assert client(wake, ping=True) == "ok"


@pytest.mark.parametrize("seed", range(200))
def test_every_wake_drawn_from_the_documented_ranges_succeeds(client: Any, seed: int) -> None:
    """Half the draws where the stack has no Data API; the database's branch is sometimes the longer one."""
    chance = random.Random(seed)
    wake = Wake({s.id: chance.uniform(s.best, s.worst) for s in wake_stages()}, data_api=seed % 2 == 0)
    assert client(wake) == "ok"
    assert wake.answered_at == first_answer_seconds(wake.served_at)
    assert wake.answered_at <= worst_first_answer_seconds(data_api=wake.data_api)


@pytest.mark.parametrize("seed", range(200))
def test_no_wake_in_the_documented_range_is_answered_later_than_the_bound_whatever_the_holds_overrun(
    client: Any, seed: int
) -> None:
    """Each held attempt's 503 may come up to HOLD_OVERRUN_SECONDS late (its last probe, a few calls): drawn per
    attempt, at its extremes half the time, with the reachable moment anywhere in the documented range, the real
    client is never answered later than `worst_first_answer_seconds` says, nor with Metaflow's default 5
    attempts."""
    chance = random.Random(seed)
    data_api = seed % 2 == 0
    reachable = chance.uniform(best_wake_seconds(data_api), worst_wake_seconds(data_api))
    overruns = [chance.choice([0.0, HOLD_OVERRUN_SECONDS, chance.uniform(0, HOLD_OVERRUN_SECONDS)]) for _ in range(9)]
    for retries in (PROFILE_RETRIES, METAFLOW_DEFAULT_RETRIES):
        wake = Wake(one_stage(reachable), overruns=list(overruns))
        assert client(wake, retries=retries) == "ok"
        assert wake.answered_at is not None
        assert reachable <= wake.answered_at <= worst_first_answer_seconds(data_api, retries=retries)


def test_the_model_resumes_the_database_while_the_task_starts(client: Any) -> None:
    wake = Wake(worst())
    client(wake)
    assert wake.tasks == [(0.0, 0), (3, 1)]
    assert wake.database == [(0.0, "paused"), (3 + 3 + 30, "available")]  # waker, watcher, resume
    assert wake.served_at == worst_wake_seconds() == 3 + 5 + 62 + 3 + 8 + 3  # to the first forwarded request


def test_without_the_data_api_the_migrators_connection_resumes_it_after_the_pull(client: Any) -> None:
    wake = Wake(worst(), data_api=False)
    client(wake)
    assert wake.database == [(0.0, "paused"), (3 + 5 + 62 + 30, "available")]
    assert wake.served_at == worst_wake_seconds(data_api=False)


def test_a_stage_listed_before_one_it_waits_for_is_refused() -> None:
    """The critical path is computed in the file's order: a stage must come after every stage it waits for."""
    stage = 'id = "{}"\nname = "n"\nafter = {}\nbest = 1\nworst = 2\nserves = true\nkind = "estimate"\nsource = "s"\n'
    in_order = "[[stages]]\n" + stage.format("a", "[]") + "[[stages]]\n" + stage.format("b", '["a"]')
    assert [s.id for s in parse_stages(in_order)] == ["a", "b"]
    with pytest.raises(ValueError, match="wake stage 'b' comes before a stage it waits for"):
        parse_stages("[[stages]]\n" + stage.format("b", '["a"]') + "[[stages]]\n" + stage.format("a", "[]"))
    without = in_order.replace('after = ["a"]', 'after = []\nwithout_data_api = ["c"]')
    with pytest.raises(ValueError, match="wake stage 'b'"):
        parse_stages(without)
    with pytest.raises(ValueError, match="no wake stage serves requests"):
        parse_stages(in_order.replace("serves = true", "serves = false"))


@pytest.mark.parametrize(
    "compressed_bytes, warned",
    [(326_000_000, False), (413_000_000, False), (413_000_001, True), (1_000_000_000, True)],
)
def test_an_image_larger_than_the_measured_one_is_warned_about(compressed_bytes: int, warned: bool) -> None:
    warning = image_size_warning(compressed_bytes)
    assert (warning is not None) is warned
    if warning:
        assert f"is {compressed_bytes / 1e6:.0f} MB compressed, larger than the 413 MB image" in warning
        assert f"({worst_wake_seconds():g} s)" in warning
