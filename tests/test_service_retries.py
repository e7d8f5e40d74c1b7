"""The profile's METAFLOW_SERVICE_RETRY_COUNT outlasts a metadata task replacement.

Each case runs the real client in a subprocess, configured the way users run it: the generated
profile written to `$METAFLOW_HOME/config_<name>.json`, so `metaflow_config` reads the count and
`ServiceMetadataProvider._request` loops on it. The endpoint is a local HTTP server that fails until
a simulated clock passes the outage, and `time.sleep` advances that clock instead of sleeping.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from metaflow_infra.profile import (
    SERVICE_RETRY_COUNT,
    TASK_REPLACEMENT_SECONDS,
    MetadataEndpoint,
    ProfileInputs,
    metaflow_profile,
)

LONGEST_ACCEPTABLE_HANG_SECONDS = 10 * 60
"""How long a user may wait before a real outage surfaces as an error."""

PROFILE = metaflow_profile(
    ProfileInputs(
        bucket_name="b",
        job_queue_arn="arn:aws:batch:us-east-1:1:job-queue/q",
        task_role_arn="arn:aws:iam::1:role/t",
        metadata=MetadataEndpoint(
            url="https://x.execute-api.us-east-1.amazonaws.com", internal_url="https://x", auth_key="k"
        ),
    )
)

CLIENT_DURING_OUTAGE = r"""
import http.server, json, os, sys, threading, time

outage_seconds, failure = float(sys.argv[1]), sys.argv[2]
clock = [0.0]
attempts = []


class Endpoint(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        attempts.append(clock[0])
        if clock[0] < outage_seconds and failure == "drop":
            self.close_connection = True  # no response at all: the client sees a dropped connection
            return
        status, body = (503, b'{"message":"Service Unavailable"}') if clock[0] < outage_seconds else (200, b"{}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
threading.Thread(target=server.serve_forever, daemon=True).start()
# The environment outranks the profile in metaflow_config: only the URL changes, to this endpoint.
os.environ["METAFLOW_SERVICE_URL"] = "http://127.0.0.1:%d/" % server.server_port
time.sleep = lambda seconds: clock.__setitem__(0, clock[0] + seconds)

from metaflow import metaflow_config
from metaflow.plugins.metadata_providers.service import ServiceMetadataProvider

try:
    ServiceMetadataProvider._request(None, "/flows/HelloFlow", "GET")
    outcome = "ok"
except Exception as error:
    outcome = type(error).__name__
print(json.dumps({"retry_count": metaflow_config.SERVICE_RETRY_COUNT, "outcome": outcome,
                  "attempts": attempts, "gave_up_at": clock[0]}))
"""


def client_during_outage(
    home: Path,
    profile: dict[str, str],
    outage_seconds: float,
    failure: str = "503",
    retry_count_override: int | None = None,
) -> dict[str, Any]:
    """Write `profile` where Metaflow reads it and make one metadata request through an outage."""
    (home / "config_dev.json").write_text(json.dumps(profile))
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAFLOW_")}
    env.update(METAFLOW_HOME=str(home), METAFLOW_PROFILE="dev", USERNAME="tester")
    if retry_count_override is not None:
        env["METAFLOW_SERVICE_RETRY_COUNT"] = str(retry_count_override)
    result = subprocess.run(
        [sys.executable, "-c", CLIENT_DURING_OUTAGE, str(outage_seconds), failure],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=home,
        timeout=30,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_profile_sets_the_retry_count_only_with_the_metadata_service() -> None:
    assert PROFILE["METAFLOW_SERVICE_RETRY_COUNT"] == str(SERVICE_RETRY_COUNT)
    assert "METAFLOW_SERVICE_RETRY_COUNT" not in metaflow_profile(ProfileInputs("b", "q", "r"))


@pytest.mark.parametrize("failure", ["503", "drop"], ids=["api-gateway-503", "dropped-connection"])
def test_profile_retry_count_outlasts_a_task_replacement(tmp_path: Path, failure: str) -> None:
    result = client_during_outage(tmp_path, PROFILE, TASK_REPLACEMENT_SECONDS, failure)
    assert result["retry_count"] == SERVICE_RETRY_COUNT
    assert result["outcome"] == "ok"
    assert result["attempts"][-1] >= TASK_REPLACEMENT_SECONDS > result["attempts"][-2]


def test_metaflow_default_retry_count_gives_up_during_a_task_replacement(tmp_path: Path) -> None:
    without_the_key = {k: v for k, v in PROFILE.items() if k != "METAFLOW_SERVICE_RETRY_COUNT"}
    result = client_during_outage(tmp_path, without_the_key, TASK_REPLACEMENT_SECONDS)
    assert result["retry_count"] == 5  # metaflow's own default
    assert result["outcome"] == "ServiceException"
    assert max(result["attempts"]) < TASK_REPLACEMENT_SECONDS


def test_one_attempt_fewer_would_not_outlast_it(tmp_path: Path) -> None:
    result = client_during_outage(
        tmp_path, PROFILE, TASK_REPLACEMENT_SECONDS, retry_count_override=SERVICE_RETRY_COUNT - 1
    )
    assert result["outcome"] == "ServiceException"


@pytest.mark.parametrize("failure", ["503", "drop"], ids=["api-gateway-503", "dropped-connection"])
def test_a_real_outage_still_fails_in_bounded_time(tmp_path: Path, failure: str) -> None:
    result = client_during_outage(tmp_path, PROFILE, math.inf, failure)
    assert result["outcome"] != "ok"
    assert len(result["attempts"]) == SERVICE_RETRY_COUNT
    assert result["gave_up_at"] <= LONGEST_ACCEPTABLE_HANG_SECONDS
