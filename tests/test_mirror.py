"""The image mirror (lambdas/mirror.py) against a fake registry on loopback (the distribution API: bearer
challenge, token endpoint, manifests, blobs redirected to another host) and ECR from moto, whose layer
uploads check part order and compute digests from the bytes. No network beyond 127.0.0.1."""

from __future__ import annotations

import email.utils
import hashlib
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from metaflow_infra.lambdas import mirror
from metaflow_infra.lambdas.mirror import MirrorError, Reference, Registry, parse_reference

REPOSITORY = "metaflow-dev/metadata-service"
NAME = "netflixoss/metaflow_metadata_service"
MIB = 1024 * 1024
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


DOCKER_INDEX = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass
class Image:
    """An image as a registry holds it: blobs by digest, the platform manifest, and an index over it."""

    layers: list[bytes]
    index_type: str = OCI_INDEX
    manifest_type: str = OCI_MANIFEST
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifest: bytes = b""
    index: bytes = b""

    def __post_init__(self) -> None:
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
        descriptors = []
        for blob, media_type in [(config, "application/vnd.oci.image.config.v1+json")] + [
            (layer, "application/vnd.oci.image.layer.v1.tar+gzip") for layer in self.layers
        ]:
            self.blobs[digest(blob)] = blob
            descriptors.append({"mediaType": media_type, "digest": digest(blob), "size": len(blob)})
        # Whitespace a re-serialisation would lose: the copy must keep the bytes, not the JSON.
        self.manifest = json.dumps(
            {"schemaVersion": 2, "mediaType": self.manifest_type, "config": descriptors[0], "layers": descriptors[1:]},
            indent=3,
        ).encode()
        platforms = [
            ("linux", "arm64", b"another image"),
            ("linux", "amd64", self.manifest),
            ("unknown", "unknown", b"an attestation"),
        ]
        entries = [
            {
                "mediaType": self.manifest_type,
                "digest": digest(body),
                "size": len(body),
                "platform": {"os": os, "architecture": arch},
            }
            for os, arch, body in platforms
        ]
        self.index = json.dumps({"schemaVersion": 2, "mediaType": self.index_type, "manifests": entries}).encode()

    @property
    def digest(self) -> str:
        return digest(self.manifest)

    @property
    def size(self) -> int:
        return sum(len(blob) for blob in self.blobs.values())


@dataclass
class FakeRegistry:
    """What the fake servers answer and what they were asked."""

    tags: dict[str, Image] = field(default_factory=dict)
    token: str = "t0k3n"
    token_answer: dict[str, str] | None = None
    """What the token endpoint answers instead of {"token": token}."""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, Authorization header) of every request to the registry and the blob host."""
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    """Answers (status, headers) given before any real one, in order."""
    failures_after_token: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    """The same, given only to requests that carry the token (as Docker Hub challenges first)."""
    token_failures: list[int] = field(default_factory=list)
    """Statuses the token endpoint answers first."""
    corrupt: set[str] = field(default_factory=set)
    """Blobs served with one byte changed."""
    breaks: list[str] = field(default_factory=list)
    """How the next manifests and blobs are broken off, in order: "close" (the connection closes before any
    answer) or "short" (half the body, then the connection closes)."""
    serve_single_manifest: bool = False
    blob_host: str = ""

    def manifests(self) -> dict[str, tuple[bytes, str]]:
        found: dict[str, tuple[bytes, str]] = {}
        for tag, image in self.tags.items():
            if self.serve_single_manifest:
                found[tag] = (image.manifest, image.manifest_type)
            else:
                found[tag] = (image.index, image.index_type)
                found[digest(image.index)] = (image.index, image.index_type)
            found[image.digest] = (image.manifest, image.manifest_type)
        return found

    def blob(self, wanted: str) -> bytes | None:
        for image in self.tags.values():
            if wanted in image.blobs:
                data = image.blobs[wanted]
                return data[:-1] + bytes([data[-1] ^ 1]) if wanted in self.corrupt else data
        return None


def _handler(fake: FakeRegistry, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def deliver(self, body: bytes, headers: dict[str, str] | None = None) -> None:
            """A 200 with its body, unless the next break says otherwise."""
            kind = fake.breaks.pop(0) if fake.breaks else None
            if kind == "close":
                self.close_connection = True
                return
            if kind == "short":
                self.send_response(200)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.answer(200, body, headers)

        def challenge(self) -> str:
            realm = f"http://{self.headers['Host']}/token"
            return f'Bearer realm="{realm}",service="registry.test",scope="repository:{NAME}:pull"'

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            fake.requests.append((self.path, self.headers.get("Authorization")))
            if role == "cdn":
                data = fake.blob(url.path.rsplit("/", 1)[-1])
                return self.deliver(data) if data else self.answer(404)
            if url.path == "/token":
                if fake.token_failures:
                    return self.answer(fake.token_failures.pop(0))
                query = urllib.parse.parse_qs(url.query)
                assert query == {"scope": [f"repository:{NAME}:pull"], "service": ["registry.test"]}
                answer = fake.token_answer if fake.token_answer is not None else {"token": fake.token}
                return self.answer(200, json.dumps(answer).encode())
            if fake.failures:
                status, headers = fake.failures.pop(0)
                return self.answer(status, b"", headers)
            if fake.failures_after_token and self.headers.get("Authorization") == f"Bearer {fake.token}":
                status, headers = fake.failures_after_token.pop(0)
                if status == 401:
                    headers = {**headers, "WWW-Authenticate": self.challenge()}
                return self.answer(status, b"", headers)
            if self.headers.get("Authorization") != f"Bearer {fake.token}":
                return self.answer(401, b"", {"WWW-Authenticate": self.challenge()})
            prefix = f"/v2/{NAME}/"
            kind, _, reference = url.path.removeprefix(prefix).partition("/")
            if kind == "manifests" and reference in fake.manifests():
                body, media_type = fake.manifests()[reference]
                if media_type not in self.headers.get("Accept", ""):
                    return self.answer(404)  # a registry serves only a form the client says it reads
                return self.deliver(body, {"Content-Type": f"{media_type}; charset=utf-8"})
            if kind == "blobs" and fake.blob(reference) is not None:
                # Docker Hub sends blobs from a CDN with a signed URL; the token must not follow.
                return self.answer(307, b"", {"Location": f"{fake.blob_host}/signed/{reference}?sig=abc"})
            return self.answer(404)

    return Handler


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    state = FakeRegistry()
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, role)) for role in ("registry", "cdn")]
    for server in servers:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    state.blob_host = f"http://127.0.0.1:{servers[1].server_address[1]}"
    state.registry_url = f"http://127.0.0.1:{servers[0].server_address[1]}"  # type: ignore[attr-defined]
    yield state
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def ecr() -> Iterator[Any]:
    # One boto3 session for every test: a new one reloads botocore's service models (most of the setup).
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        client = boto3.client("ecr", region_name="us-east-1")
        client.create_repository(repositoryName=REPOSITORY, imageTagMutability="IMMUTABLE")
        yield client


class Recorder:
    """Passes calls to the client and keeps (operation, arguments)."""

    def __init__(self, client: Any) -> None:
        self.client, self.calls = client, []
        self.exceptions = client.exceptions

    def __getattr__(self, name: str) -> Any:
        def call(**arguments: Any) -> Any:
            self.calls.append((name, arguments))
            return getattr(self.client, name)(**arguments)

        return call


def run(fake: FakeRegistry, ecr: Any, tag: str = "v2.5.1", sleeps: list[float] | None = None) -> dict[str, Any]:
    slept = sleeps if sleeps is not None else []
    registry = Registry(fake.registry_url, NAME, sleep=slept.append)  # type: ignore[attr-defined]
    return mirror.mirror(registry, Reference("registry.test", NAME, tag, tag), ecr, REPOSITORY, sleep=slept.append)


PART = 64 * 1024
"""The part size most tests copy with (`small_parts`): the same code path as ECR's 10 MiB, at a fraction of the
time moto takes per byte."""


@pytest.fixture(autouse=True)
def small_parts(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "real_part_size" not in request.keywords:
        monkeypatch.setattr(mirror, "PART_BYTES", PART)


def big_image(seed: bytes = b"base", part: int = PART) -> Image:
    # Three parts (2.3 times the part size) and a small layer of one.
    return Image(layers=[hashlib.sha256(seed).digest() * (23 * part // 320), b"small layer " + seed])


@dataclass
class LambdaContext:
    remaining_ms: int

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_the_copy_keeps_the_manifest_bytes_so_ecr_gives_the_sources_digest(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    answer = run(fake, ecr)
    assert answer == {"digest": image.digest, "compressedBytes": image.size, "copiedBytes": image.size}
    stored = ecr.batch_get_image(repositoryName=REPOSITORY, imageIds=[{"imageDigest": image.digest}])["images"]
    assert [entry["imageManifest"].encode() for entry in stored] == [image.manifest]
    assert stored[0]["imageId"] == {"imageDigest": image.digest, "imageTag": "v2.5.1"}
    layers = ecr.batch_check_layer_availability(repositoryName=REPOSITORY, layerDigests=list(image.blobs))["layers"]
    assert {(layer["layerDigest"], layer["layerSize"]) for layer in layers} == {
        (name, len(blob)) for name, blob in image.blobs.items()
    }


def test_an_index_resolves_to_its_linux_amd64_image(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    assert run(fake, ecr)["digest"] == image.digest
    assert any(path.endswith(f"/manifests/{image.digest}") for path, _ in fake.requests)


def test_a_single_platform_manifest_is_copied_as_it_is(fake: FakeRegistry, ecr: Any) -> None:
    fake.serve_single_manifest = True
    image = fake.tags["v2.5.1"] = big_image()
    assert run(fake, ecr)["digest"] == image.digest


def test_an_image_without_linux_amd64_is_refused(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    index = json.loads(image.index)
    index["manifests"] = [entry for entry in index["manifests"] if entry["platform"]["architecture"] != "amd64"]
    image.index = json.dumps(index).encode()
    with pytest.raises(MirrorError, match="has no linux/amd64 image"):
        run(fake, ecr)


@pytest.mark.real_part_size
def test_every_part_is_within_ecrs_part_sizes_and_in_order(fake: FakeRegistry, ecr: Any) -> None:
    fake.tags["v2.5.1"] = big_image(part=10 * MIB)
    recorder = Recorder(ecr)
    run(fake, recorder)
    parts = [arguments for name, arguments in recorder.calls if name == "upload_layer_part"]
    by_upload: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        by_upload.setdefault(part["uploadId"], []).append(part)
    assert sorted(len(uploads) for uploads in by_upload.values()) == [1, 1, 3]
    for uploads in by_upload.values():
        sizes = [len(part["layerPartBlob"]) for part in uploads]
        assert all(5 * MIB <= size <= 10 * MIB for size in sizes[:-1]) and sizes[-1] <= 10 * MIB
        assert [part["partFirstByte"] for part in uploads] == [sum(sizes[:i]) for i in range(len(sizes))]
        assert all(part["partLastByte"] == part["partFirstByte"] + len(part["layerPartBlob"]) - 1 for part in uploads)


def test_a_second_run_finds_the_image_and_copies_nothing(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    run(fake, ecr)
    fake.requests.clear()
    recorder = Recorder(ecr)
    assert run(fake, recorder) == {"digest": image.digest, "compressedBytes": image.size, "copiedBytes": 0}
    assert not any("/blobs/" in path or "/signed/" in path for path, _ in fake.requests)
    assert [name for name, _ in recorder.calls] == ["describe_images"], "found: nothing checked or put again"


def test_blobs_the_repository_has_are_not_copied_again(fake: FakeRegistry, ecr: Any) -> None:
    first = fake.tags["v2.5.0"] = big_image()
    run(fake, ecr, tag="v2.5.0")
    # The next release shares the big base layer and config, and changes the small layer.
    second = fake.tags["v2.5.1"] = Image(layers=[first.layers[0], b"small layer, next release"])
    answer = run(fake, ecr)
    assert answer["copiedBytes"] == len(b"small layer, next release")
    assert answer["digest"] == second.digest


def test_a_blob_that_does_not_match_its_digest_is_never_completed(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    bad = digest(image.layers[1])
    fake.corrupt.add(bad)
    recorder = Recorder(ecr)
    with pytest.raises(MirrorError, match=f"blob {bad} arrived as .* with digest"):
        run(fake, recorder)
    completed = [arguments["layerDigests"] for name, arguments in recorder.calls if name == "complete_layer_upload"]
    assert [bad] not in completed
    assert not any(name == "put_image" for name, _ in recorder.calls)


def test_the_token_comes_from_the_challenge_and_does_not_follow_blob_redirects(fake: FakeRegistry, ecr: Any) -> None:
    fake.tags["v2.5.1"] = big_image()
    run(fake, ecr)
    registry_calls = [(path, auth) for path, auth in fake.requests if path.startswith("/v2/")]
    assert registry_calls[0] == (f"/v2/{NAME}/manifests/v2.5.1", None)  # answered by the challenge
    assert all(auth == f"Bearer {fake.token}" for _, auth in registry_calls[1:])
    cdn_calls = [auth for path, auth in fake.requests if path.startswith("/signed/")]
    assert len(cdn_calls) == 3 and cdn_calls == [None] * 3


def test_a_rate_limited_request_waits_as_long_as_retry_after_asks(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    fake.failures = [(429, {"Retry-After": "7"}), (503, {})]
    sleeps: list[float] = []
    assert run(fake, ecr, sleeps=sleeps)["digest"] == image.digest
    assert sleeps == [7.0, 2.0]


def test_a_registry_that_stays_down_fails_with_its_answer_after_six_attempts(fake: FakeRegistry, ecr: Any) -> None:
    fake.tags["v2.5.1"] = big_image()
    fake.failures = [(503, {})] * 6
    sleeps: list[float] = []
    with pytest.raises(MirrorError, match=r"/manifests/v2\.5\.1 answered HTTP 503"):
        run(fake, ecr, sleeps=sleeps)
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_a_refusal_other_than_a_token_is_not_retried(fake: FakeRegistry, ecr: Any) -> None:
    with pytest.raises(MirrorError, match=r"/manifests/v9 answered HTTP 404"):
        run(fake, ecr, tag="v9")


def test_a_tag_the_source_moved_is_kept_untagged_in_the_immutable_repository(fake: FakeRegistry, ecr: Any) -> None:
    fake.tags["v2.5.1"] = big_image()
    run(fake, ecr)
    moved = fake.tags["v2.5.1"] = big_image(b"rebuilt")
    assert run(fake, ecr)["digest"] == moved.digest
    stored = ecr.batch_get_image(repositoryName=REPOSITORY, imageIds=[{"imageDigest": moved.digest}])["images"]
    assert [entry["imageManifest"].encode() for entry in stored] == [moved.manifest]


def test_a_new_roles_refusal_is_retried_while_its_policy_applies(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    refusals = 2

    class NewRole(Recorder):
        def __getattr__(self, name: str) -> Any:
            nonlocal refusals
            if name == "describe_images" and refusals:
                refusals -= 1
                error = {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}
                raise ClientError(error, "DescribeImages")  # type: ignore[arg-type]
            return super().__getattr__(name)

    sleeps: list[float] = []
    assert run(fake, NewRole(ecr), sleeps=sleeps)["digest"] == image.digest
    assert sleeps == [5.0, 5.0]


def test_a_refusal_that_outlasts_the_policy_wait_is_raised(fake: FakeRegistry, ecr: Any) -> None:
    fake.tags["v2.5.1"] = big_image()

    class Denied(Recorder):
        def __getattr__(self, name: str) -> Any:
            if name == "describe_images":
                error = {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}
                raise ClientError(error, "DescribeImages")  # type: ignore[arg-type]
            return super().__getattr__(name)

    sleeps: list[float] = []
    with pytest.raises(ClientError, match="AccessDenied"):
        run(fake, Denied(ecr), sleeps=sleeps)
    assert sum(sleeps) == mirror.POLICY_WAIT_SECONDS


def test_a_manifest_served_for_a_digest_must_have_that_digest(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    wrong = digest(b"something else")
    fake.tags[wrong] = image  # served under a digest it does not have
    fake.serve_single_manifest = True
    with pytest.raises(MirrorError, match=f"served for {wrong} has digest {image.digest}"):
        run(fake, ecr, tag=wrong)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (
            "netflixoss/metaflow_metadata_service:v2.5.1",
            Reference("registry-1.docker.io", "netflixoss/metaflow_metadata_service", "v2.5.1", "v2.5.1"),
        ),
        ("python:3.11-slim", Reference("registry-1.docker.io", "library/python", "3.11-slim", "3.11-slim")),
        ("docker.io/library/python:3.11", Reference("registry-1.docker.io", "library/python", "3.11", "3.11")),
        (
            "public.ecr.aws/outerbounds/metaflow_metadata_service:2.3.3",
            Reference("public.ecr.aws", "outerbounds/metaflow_metadata_service", "2.3.3", "2.3.3"),
        ),
        (
            "localhost:5000/team/service@sha256:" + "a" * 64,
            Reference("localhost:5000", "team/service", "sha256:" + "a" * 64, None),
        ),
        (
            "ghcr.io/org/img:v1@sha256:" + "b" * 64,
            Reference("ghcr.io", "org/img", "sha256:" + "b" * 64, "v1"),
        ),
    ],
)
def test_references_are_read_as_docker_pull_reads_them(image: str, expected: Reference) -> None:
    assert parse_reference(image) == expected


def test_an_unpinned_reference_is_refused() -> None:
    with pytest.raises(MirrorError, match="not a pinned image reference"):
        parse_reference("netflixoss/metaflow_metadata_service")


def test_the_handler_copies_the_image_its_event_names(
    fake: FakeRegistry, ecr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # as Lambda sets it
    image = fake.tags["v2.5.1"] = big_image()
    host = fake.registry_url.removeprefix("http://")  # type: ignore[attr-defined]
    event = {"image": f"{host}/{NAME}:v2.5.1", "repository": REPOSITORY}
    assert mirror.handler(event, LambdaContext(900_000)) == {
        "digest": image.digest,
        "compressedBytes": image.size,
        "copiedBytes": image.size,
    }


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("registry-1.docker.io", "https://registry-1.docker.io"),
        ("public.ecr.aws", "https://public.ecr.aws"),
        ("registry.example:5000", "https://registry.example:5000"),
        ("localhost:5000", "http://localhost:5000"),
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_registries_are_reached_over_https_except_on_loopback(host: str, url: str) -> None:
    assert mirror.registry_url(host) == url


def test_docker_manifest_lists_and_manifests_are_read_as_oci_ones_are(fake: FakeRegistry, ecr: Any) -> None:
    """What Docker's own builds push (and Docker Hub serves): the Docker media types."""
    image = fake.tags["v2.5.1"] = Image(
        layers=big_image().layers, index_type=DOCKER_INDEX, manifest_type=DOCKER_MANIFEST
    )
    assert run(fake, ecr)["digest"] == image.digest
    [stored] = ecr.batch_get_image(repositoryName=REPOSITORY, imageIds=[{"imageDigest": image.digest}])["images"]
    assert stored["imageManifestMediaType"] == DOCKER_MANIFEST


def test_a_manifest_without_a_media_type_field_takes_its_content_type(fake: FakeRegistry, ecr: Any) -> None:
    """OCI makes the field optional; the registry's Content-Type then says what it is."""
    image = fake.tags["v2.5.1"] = big_image()
    body = json.loads(image.manifest)
    del body["mediaType"]
    image.manifest = json.dumps(body).encode()
    fake.serve_single_manifest = True
    assert run(fake, ecr)["digest"] == digest(image.manifest)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_answers_are_retried(fake: FakeRegistry, ecr: Any, status: int) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    fake.failures = [(status, {})]
    sleeps: list[float] = []
    assert run(fake, ecr, sleeps=sleeps)["digest"] == image.digest
    assert sleeps == [1.0]


@pytest.mark.parametrize("status", [400, 403, 501])
def test_other_refusals_fail_at_once(fake: FakeRegistry, ecr: Any, status: int) -> None:
    fake.tags["v2.5.1"] = big_image()
    fake.failures = [(status, {})]
    sleeps: list[float] = []
    with pytest.raises(MirrorError, match=f"answered HTTP {status}"):
        run(fake, ecr, sleeps=sleeps)
    assert sleeps == []


def test_an_unreachable_registry_is_tried_six_times_then_named(ecr: Any) -> None:
    attempts: list[Any] = []

    def unreachable(request: Any, timeout: float) -> Any:
        attempts.append((request.full_url, timeout))
        raise urllib.error.URLError("Name or service not known")

    sleeps: list[float] = []
    registry = Registry("https://registry.invalid", NAME, open_url=unreachable, sleep=sleeps.append)
    with pytest.raises(MirrorError, match=r"GET https://registry.invalid/v2/.*/manifests/v2\.5\.1 failed"):
        mirror.mirror(registry, Reference("registry.invalid", NAME, "v2.5.1", "v2.5.1"), ecr, REPOSITORY)
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert len(attempts) == 6 and all(timeout > 0 for _, timeout in attempts)


def test_a_passing_network_error_costs_one_wait(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    failed = []

    def flaky(request: Any, timeout: float) -> Any:
        if not failed:
            failed.append(request.full_url)
            raise TimeoutError("timed out")
        return urllib.request.urlopen(request, timeout=timeout)

    sleeps: list[float] = []
    registry = Registry(fake.registry_url, NAME, open_url=flaky, sleep=sleeps.append)  # type: ignore[attr-defined]
    reference = Reference("registry.test", NAME, "v2.5.1", "v2.5.1")
    assert mirror.mirror(registry, reference, ecr, REPOSITORY)["digest"] == image.digest
    assert sleeps == [1.0]


@pytest.mark.parametrize(
    ("challenge", "message"),
    [
        ('Basic realm="registry"', "asks for Basic authentication"),
        ('Bearer service="registry.test"', "names no token realm"),
    ],
)
def test_a_challenge_the_copy_cannot_answer_is_named(ecr: Any, challenge: str, message: str) -> None:
    def challenging(request: Any, timeout: float) -> Any:
        raise urllib.error.HTTPError(request.full_url, 401, "Unauthorized", {"WWW-Authenticate": challenge}, None)  # type: ignore[arg-type]

    registry = Registry("https://registry.example", NAME, open_url=challenging, sleep=lambda _: None)
    with pytest.raises(MirrorError, match=message):
        mirror.mirror(registry, Reference("registry.example", NAME, "v1", "v1"), ecr, REPOSITORY)


class PartSize(Recorder):
    """ECR answering InitiateLayerUpload with another part size than moto's."""

    def __init__(self, client: Any, part_size: int) -> None:
        super().__init__(client)
        self.part_size = part_size

    def __getattr__(self, name: str) -> Any:
        call = super().__getattr__(name)
        if name != "initiate_layer_upload":
            return call
        return lambda **arguments: {**call(**arguments), "partSize": self.part_size}


def test_a_smaller_part_size_ecr_asks_for_is_used(fake: FakeRegistry, ecr: Any) -> None:
    fake.tags["v2.5.1"] = big_image()
    recorder = PartSize(ecr, PART // 2)
    run(fake, recorder)
    sizes = [len(arguments["layerPartBlob"]) for name, arguments in recorder.calls if name == "upload_layer_part"]
    assert max(sizes) == PART // 2


@pytest.mark.real_part_size
def test_parts_stay_within_ecrs_10_mib_quota_whatever_ecr_answers(fake: FakeRegistry, ecr: Any) -> None:
    """InitiateLayerUpload may answer the API's 20 MiB; ECR's quota for a part is 10 MiB."""
    fake.tags["v2.5.1"] = big_image(part=10 * MIB)
    recorder = PartSize(ecr, 20 * MIB)
    run(fake, recorder)
    sizes = [len(arguments["layerPartBlob"]) for name, arguments in recorder.calls if name == "upload_layer_part"]
    assert max(sizes) == 10 * MIB


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("localhost/team/service:v1", Reference("localhost", "team/service", "v1", "v1")),
        ("index.docker.io/library/python:3", Reference("registry-1.docker.io", "library/python", "3", "3")),
        ("team/service:v1", Reference("registry-1.docker.io", "team/service", "v1", "v1")),
    ],
)
def test_the_registry_host_is_told_apart_from_a_repository_path(image: str, expected: Reference) -> None:
    assert parse_reference(image) == expected


def test_an_expired_token_is_fetched_again_once(fake: FakeRegistry, ecr: Any) -> None:
    """Docker Hub's anonymous tokens last 300 s; a slow copy outlives one."""
    image = fake.tags["v2.5.1"] = big_image()
    registry = Registry(fake.registry_url, NAME)  # type: ignore[attr-defined]
    registry._token = "expired"
    reference = Reference("registry.test", NAME, "v2.5.1", "v2.5.1")
    assert mirror.mirror(registry, reference, ecr, REPOSITORY)["digest"] == image.digest
    assert [auth for path, auth in fake.requests if "/manifests/" in path][:2] == ["Bearer expired", "Bearer t0k3n"]
    assert sum(1 for path, _ in fake.requests if path.startswith("/token")) == 1


def test_a_401_to_a_token_just_fetched_is_a_refusal_not_a_loop(fake: FakeRegistry, ecr: Any) -> None:
    """One token fetch per request: after the challenge's, a second 401 ends the copy."""
    fake.tags["v2.5.1"] = big_image()
    fake.failures_after_token = [(401, {}), (401, {})]
    with pytest.raises(MirrorError, match="answered HTTP 401"):
        run(fake, ecr)
    assert len([path for path, _ in fake.requests if path.startswith("/token")]) == 1
    assert len(fake.failures_after_token) == 1, "the request was not sent a third time"


def test_the_challenge_costs_no_retry(fake: FakeRegistry, ecr: Any) -> None:
    """Docker Hub answers 401 first, then perhaps a 5xx: the waits are still 1, 2, 4, 8 and 16 s."""
    fake.tags["v2.5.1"] = big_image()
    fake.failures_after_token = [(503, {})] * 6
    sleeps: list[float] = []
    with pytest.raises(MirrorError, match="answered HTTP 503"):
        run(fake, ecr, sleeps=sleeps)
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_a_transient_token_refusal_is_tried_again(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    fake.token_failures = [503]
    sleeps: list[float] = []
    assert run(fake, ecr, sleeps=sleeps)["digest"] == image.digest
    assert sleeps == [1.0]


def test_a_token_endpoint_that_refuses_is_named(fake: FakeRegistry, ecr: Any) -> None:
    fake.tags["v2.5.1"] = big_image()
    fake.token_failures = [403]
    with pytest.raises(MirrorError, match=r"no pull token: GET http://.*/token\?.* answered HTTP 403"):
        run(fake, ecr)


def test_the_pull_limit_is_named_with_what_to_do(fake: FakeRegistry, ecr: Any) -> None:
    fake.tags["v2.5.1"] = big_image()
    fake.failures = [(429, {"Retry-After": "1"})] * 6
    with pytest.raises(MirrorError, match=r"HTTP 429 .*pull limit for this address: run `pulumi up` again later"):
        run(fake, ecr)


def test_availability_is_checked_in_batches_no_larger_than_ecr_takes(
    fake: FakeRegistry, ecr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    operation = ecr.meta.service_model.operation_model("BatchCheckLayerAvailability")
    assert mirror.CHECK_BATCH == operation.input_shape.members["layerDigests"].metadata["max"] == 100
    # Batches of 4 over 6 layers and the config: the same loop as 100 over 151, without copying 150 blobs.
    monkeypatch.setattr(mirror, "CHECK_BATCH", 4)
    image = fake.tags["v2.5.1"] = Image(layers=[f"layer {n}".encode() for n in range(6)])
    recorder = Recorder(ecr)
    assert run(fake, recorder)["digest"] == image.digest
    checks = [args["layerDigests"] for name, args in recorder.calls if name == "batch_check_layer_availability"]
    assert [len(batch) for batch in checks] == [4, 3]
    assert sorted(digest for batch in checks for digest in batch) == sorted(image.blobs)


def test_an_index_served_for_a_digest_must_have_that_digest(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    wrong = digest(b"not the index")
    fake.tags[wrong] = image
    with pytest.raises(MirrorError, match=f"served for {wrong} has digest {digest(image.index)}"):
        run(fake, ecr, tag=wrong)


def test_an_image_pinned_by_its_index_digest_is_copied_untagged(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    source = parse_reference(f"registry.test/{NAME}@{digest(image.index)}")
    assert source.tag is None
    registry = Registry(fake.registry_url, NAME, sleep=lambda _: None)  # type: ignore[attr-defined]
    assert mirror.mirror(registry, source, ecr, REPOSITORY)["digest"] == image.digest
    [stored] = ecr.describe_images(repositoryName=REPOSITORY)["imageDetails"]
    assert stored["imageDigest"] == image.digest and "imageTags" not in stored


def test_a_run_beside_this_one_putting_the_image_first_is_no_failure(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()

    class Raced(Recorder):
        """The other run's put lands between this run's look and its own two puts."""

        def __getattr__(self, name: str) -> Any:
            if name == "describe_images":

                def not_yet(**arguments: Any) -> Any:
                    raise self.exceptions.ImageNotFoundException({"Error": {"Code": "ImageNotFoundException"}}, name)

                return not_yet
            if name == "put_image":

                def already(**arguments: Any) -> Any:
                    self.calls.append((name, arguments))
                    raise self.exceptions.ImageAlreadyExistsException({"Error": {"Code": "ImageAlreadyExists"}}, name)

                return already
            return super().__getattr__(name)

    raced = Raced(ecr)
    assert run(fake, raced)["digest"] == image.digest
    assert [args.get("imageTag") for name, args in raced.calls if name == "put_image"] == ["v2.5.1", None]


def test_a_connection_dropped_before_the_answer_is_tried_again(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = big_image()
    fake.breaks = ["close", "close"]  # the index, then the same request again
    sleeps: list[float] = []
    assert run(fake, ecr, sleeps=sleeps)["digest"] == image.digest
    assert sleeps == [1.0, 2.0]


def test_a_body_cut_short_is_fetched_again_into_a_new_upload(fake: FakeRegistry, ecr: Any) -> None:
    """The manifest's read and a blob's stream break after the answer began: past urlopen, so the request and
    its reading are repeated together; the half-sent blob is never completed in ECR."""
    image = fake.tags["v2.5.1"] = big_image()
    fake.breaks = ["short", "", "", "short"]  # the index; the manifest and the config; the big layer
    recorder = Recorder(ecr)
    sleeps: list[float] = []
    assert run(fake, recorder, sleeps=sleeps)["digest"] == image.digest
    assert sleeps == [1.0, 1.0]
    uploads = [name for name, _ in recorder.calls if name == "initiate_layer_upload"]
    completed = [args["layerDigests"] for name, args in recorder.calls if name == "complete_layer_upload"]
    assert len(uploads) == len(image.blobs) + 1
    assert sorted(digest for batch in completed for digest in batch) == sorted(image.blobs)


def test_a_blob_cut_off_every_time_fails_after_six_tries_and_says_so(fake: FakeRegistry, ecr: Any) -> None:
    image = fake.tags["v2.5.1"] = Image(layers=[b"one layer" * 1000])
    fake.breaks = ["", "", ""] + ["short"] * 6  # index, manifest and config whole; the layer never
    layer = digest(image.layers[0])
    sleeps: list[float] = []
    with pytest.raises(MirrorError, match=f"blob {layer}: cut off 6 times"):
        run(fake, ecr, sleeps=sleeps)
    assert len([path for path, _ in fake.requests if layer in path and "/signed/" in path]) == 6
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_a_copy_that_would_outlast_the_function_stops_with_a_message(
    fake: FakeRegistry, ecr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker Hub failing for minutes must end as our message at `pulumi up`, not as Lambda's timeout."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    fake.tags["v2.5.1"] = big_image()
    fake.failures = [(503, {})] * 6
    host = fake.registry_url.removeprefix("http://")  # type: ignore[attr-defined]
    event = {"image": f"{host}/{NAME}:v2.5.1", "repository": REPOSITORY}
    with pytest.raises(MirrorError, match="would outlast the function's run time: run `pulumi up` again later"):
        mirror.handler(event, LambdaContext(int((mirror.TIME_MARGIN_SECONDS + 0.5) * 1000)))
    assert len(fake.requests) == 1, "no wait longer than the time left"


@pytest.mark.parametrize(
    "retry_after, seconds",
    [("7", 7.0), ("0", 1.0), ("3600", 60.0), ("soon", 4.0), (None, 4.0)],
)
def test_retry_after_is_kept_within_one_second_and_a_minute(retry_after: str | None, seconds: float) -> None:
    assert Registry._wait(2, retry_after) == seconds


def test_retry_after_may_be_an_http_date() -> None:
    in_ten_seconds = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8.0 <= Registry._wait(0, in_ten_seconds) <= 10.0
    assert Registry._wait(0, email.utils.formatdate(time.time() - 100, usegmt=True)) == 1.0


def test_an_empty_blob_is_refused_by_name(fake: FakeRegistry, ecr: Any) -> None:
    """ECR completes only uploads of at least one part of at least one byte."""
    image = fake.tags["v2.5.1"] = Image(layers=[b""])
    with pytest.raises(MirrorError, match=f"blob {digest(b'')} is empty"):
        run(fake, ecr)
    assert image.layers == [b""]


def test_a_token_given_as_access_token_is_used(fake: FakeRegistry, ecr: Any) -> None:
    """OAuth2's name for it, which the distribution spec allows instead of `token`."""
    image = fake.tags["v2.5.1"] = big_image()
    fake.token_answer = {"access_token": fake.token}
    assert run(fake, ecr)["digest"] == image.digest


def test_a_token_endpoint_that_answers_no_token_is_named(fake: FakeRegistry, ecr: Any) -> None:
    fake.tags["v2.5.1"] = big_image()
    fake.token_answer = {"expires_in": "300"}
    with pytest.raises(MirrorError, match="/token answered no token"):
        run(fake, ecr)


class Served(Registry):
    """A registry that answers manifests from a table (reference -> body, Content-Type)."""

    def __init__(self, table: dict[str, tuple[bytes, str]]) -> None:
        super().__init__("http://registry.test", NAME, sleep=lambda _: None)
        self.table = table

    @contextmanager
    def _get(self, path: str, accept: str | None = None) -> Iterator[Any]:
        body, content_type = self.table[path.rsplit("/", 1)[-1]]
        yield type("Answer", (), {"read": lambda _self: body, "headers": {"Content-Type": content_type}})()


def test_a_platform_manifest_that_does_not_match_its_index_entry_is_refused() -> None:
    image = big_image()
    promised = json.loads(image.index)
    [amd64] = [m for m in promised["manifests"] if m["platform"]["architecture"] == "amd64"]
    other = Image(layers=[b"another image"])
    registry = Served({"v2.5.1": (image.index, OCI_INDEX), amd64["digest"]: (other.manifest, OCI_MANIFEST)})
    with pytest.raises(MirrorError, match=f"the manifest served for {amd64['digest']} has digest {other.digest}"):
        mirror.platform_manifest(registry, "v2.5.1")


def test_a_manifest_that_is_not_an_image_is_refused() -> None:
    """An artifact (a signature, an SBOM) carried under the tag: no layers ECR could run."""
    artifact = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.artifact.manifest.v1+json", "blobs": []}
    ).encode()
    registry = Served({"v2.5.1": (artifact, "application/vnd.oci.artifact.manifest.v1+json")})
    with pytest.raises(MirrorError, match=r"is a application/vnd\.oci\.artifact\.manifest\.v1\+json manifest, not an"):
        mirror.platform_manifest(registry, "v2.5.1")


def test_the_manifests_own_media_type_wins_over_a_generic_content_type() -> None:
    """Some registries answer `application/json`; the manifest's mediaType field says what it is."""
    image = big_image()
    registry = Served({image.digest: (image.manifest, "application/json; charset=utf-8")})
    assert registry.manifest(image.digest) == (image.manifest, OCI_MANIFEST)
