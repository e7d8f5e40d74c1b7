"""Copies the metadata-service image into this stack's ECR repository (`metadata:scaleToZero`), run once per
image by `pulumi up` (an `aws.lambda_.Invocation`). Runs on AWS Lambda's Python runtime (boto3 included).

Why: with scale to zero every wake starts a task, and every task start on Fargate pulls the whole image
(Fargate caches none). From this repository the pull stays in the region, and a wake no longer depends
on Docker Hub answering, nor on its limit of 10 unauthenticated pulls an hour per IP address.

The copy is exact: the platform manifest's bytes are put unchanged, so the image in ECR has the very digest
the source registry gives it, and every blob is checked against its digest before ECR is told it is
complete. The function speaks the registry API (bearer tokens as the registry's challenge asks) and ECR's
layer-upload API; it holds one part (ECR's largest, 10 MiB) in memory at a time. Blobs and an image
already in the repository are not copied again, so a repeated run costs a few API calls.

Event: {"image": "<a reference as docker pull takes it>", "repository": "<ECR repository name>"}.
Answer: {"digest": "sha256:…", "compressedBytes": <config and layers>, "copiedBytes": <uploaded now>}.
A failure raises, and `pulumi up` shows the message.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO, TypeVar

import boto3

_log = logging.getLogger(__name__)
_log.setLevel(logging.INFO)

PLATFORM = ("linux", "amd64")
"""The task definitions run X86_64 Linux."""
PART_BYTES = 10 * 1024 * 1024
"""ECR's largest layer part (service quota, 10 MiB; every part but the last must be at least 5 MiB)."""
INDEX_TYPES = frozenset(
    {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
)
MANIFEST_TYPES = frozenset(
    {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
)
TRANSIENT_HTTP = frozenset({429, 500, 502, 503, 504})
ATTEMPTS = 6
"""Per registry request: waits of 1, 2, 4, 8 and 16 s (or what Retry-After asks, 1 to 60 s) in between."""
RETRY_AFTER_CAP_SECONDS = 60.0
TIME_MARGIN_SECONDS = 30.0
"""Kept from the function's run time: a copy that would outlast it stops with a message instead."""
CHECK_BATCH = 100
"""BatchCheckLayerAvailability takes at most 100 digests (botocore's ECR model)."""
POLICY_WAIT_SECONDS = 60.0
"""A role's new inline policy can take seconds to apply: ECR's first refusal is retried for this long."""


class MirrorError(Exception):
    """The image cannot be copied; the message says why."""


class ShortBody(Exception):
    """A blob's body ended before its size: the connection was cut."""


T = TypeVar("T")


@dataclass(frozen=True)
class Reference:
    host: str
    """The registry's host (Docker Hub's API host for docker.io)."""
    repository: str
    reference: str
    """The digest if the image names one, else its tag."""
    tag: str | None


def parse_reference(image: str) -> Reference:
    """Split a reference as `docker pull` reads it: a first component with '.' or ':' (or `localhost`) names
    the registry, anything else is on Docker Hub, whose one-part names live under `library/`."""
    name, _, digest = image.partition("@")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, repository = first, rest
    else:
        host, repository = "docker.io", name
    if host in ("docker.io", "index.docker.io"):
        host = "registry-1.docker.io"
        if "/" not in repository:
            repository = f"library/{repository}"
    if not repository or not (digest or tag):
        raise MirrorError(f"{image!r} is not a pinned image reference (name:tag or name@sha256:…)")
    return Reference(host, repository, digest or tag or "", tag)


def _challenge(header: str) -> dict[str, str]:
    """The parameters of a `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge."""
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "bearer":
        raise MirrorError(f"the registry asks for {scheme} authentication; only anonymous bearer tokens are supported")
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


class Registry:
    """Anonymous pulls from one repository of a registry (the distribution API, v2)."""

    def __init__(
        self,
        base_url: str,
        repository: str,
        open_url: Callable[..., Any] = urllib.request.urlopen,
        sleep: Callable[[float], None] = time.sleep,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url, self.repository = base_url.rstrip("/"), repository
        self._open, self._sleep, self._deadline, self._clock = open_url, sleep, deadline, clock
        self._token: str | None = None

    def manifest(self, reference: str) -> tuple[bytes, str]:
        """The manifest's exact bytes and its media type."""
        accept = ", ".join(sorted(INDEX_TYPES | MANIFEST_TYPES))

        def fetch() -> tuple[bytes, str]:
            with self._get(f"/v2/{self.repository}/manifests/{reference}", accept) as response:
                return response.read(), response.headers.get("Content-Type", "").split(";")[0].strip()

        body, media_type = self.again_if_cut(f"the manifest {reference}", fetch)
        return body, json.loads(body).get("mediaType") or media_type

    def again_if_cut(self, what: str, action: Callable[[], T]) -> T:
        """Run `action` (a request and the reading of its answer) again when the connection breaks once the
        answer has begun, or its body comes short: urllib raises those as they are, past `_send`'s retries."""
        attempt = 0
        while True:
            try:
                return action()
            except urllib.error.HTTPError:
                raise
            except (http.client.HTTPException, OSError, ShortBody) as error:
                if attempt == ATTEMPTS - 1:
                    raise MirrorError(f"{what}: cut off {ATTEMPTS} times, the last: {error!r}") from error
                self._pause(float(2**attempt))
                attempt += 1

    def _pause(self, seconds: float) -> None:
        if self._deadline is not None and self._clock() + seconds > self._deadline:
            raise MirrorError(
                "the registry is still failing and the copy would outlast the function's run time: "
                "run `pulumi up` again later"
            )
        self._sleep(seconds)

    @contextmanager
    def blob(self, digest: str) -> Iterator[BinaryIO]:
        with self._get(f"/v2/{self.repository}/blobs/{digest}") as response:
            yield response

    @contextmanager
    def _get(self, path: str, accept: str | None = None) -> Iterator[Any]:
        url = self.base_url + path
        fetched = False
        while True:
            request = urllib.request.Request(url)
            if accept:
                request.add_header("Accept", accept)
            if self._token:
                # Not sent on to where a blob request is redirected (a CDN or a presigned URL).
                request.add_unredirected_header("Authorization", f"Bearer {self._token}")
            try:
                response = self._send(request, timeout=60)
            except urllib.error.HTTPError as error:
                if error.code == 401 and not fetched:
                    # No token yet, or it expired (Docker Hub's anonymous ones last 300 s): ask for one, once.
                    self._token = self._fetch_token(error.headers.get("WWW-Authenticate", ""))
                    fetched = True
                    continue
                raise MirrorError(_refusal(url, error)) from error
            with response:
                yield response
            return

    def _send(self, request: urllib.request.Request, timeout: float) -> Any:
        """Open `request`, trying again after a transient answer or a network error (waits of 1, 2, 4, 8 and
        16 s, or what Retry-After asks); any other HTTP answer is raised as HTTPError."""
        attempt = 0
        while True:
            try:
                return self._open(request, timeout=timeout)
            except urllib.error.HTTPError as error:
                if error.code not in TRANSIENT_HTTP or attempt == ATTEMPTS - 1:
                    raise
                wait = self._wait(attempt, error.headers.get("Retry-After"))
            except (http.client.HTTPException, OSError) as error:  # refused, reset, cut, timed out, TLS
                if attempt == ATTEMPTS - 1:
                    raise MirrorError(f"GET {request.full_url} failed: {error!r}") from error
                wait = self._wait(attempt, None)
            self._pause(wait)
            attempt += 1

    @staticmethod
    def _wait(attempt: int, retry_after: str | None) -> float:
        """Retry-After in seconds or as an HTTP date, kept within 1 to 60 s; without it, 2**attempt."""
        seconds = None
        if retry_after and retry_after.strip().isdigit():
            seconds = float(retry_after)
        elif retry_after:
            with suppress(TypeError, ValueError):
                seconds = (parsedate_to_datetime(retry_after) - datetime.datetime.now(datetime.UTC)).total_seconds()
        if seconds is None:
            return float(2**attempt)
        return min(max(seconds, 1.0), RETRY_AFTER_CAP_SECONDS)

    def _fetch_token(self, header: str) -> str:
        params = _challenge(header)
        if "realm" not in params:
            raise MirrorError(f"the registry's challenge names no token realm: {header!r}")
        query = {"scope": f"repository:{self.repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        url = f"{params['realm']}?{urllib.parse.urlencode(query)}"
        try:
            with self._send(urllib.request.Request(url), timeout=30) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise MirrorError(f"no pull token: {_refusal(url, error)}") from error
        token = answer.get("token") or answer.get("access_token")
        if not token:
            raise MirrorError(f"{params['realm']} answered no token")
        return token


def _refusal(url: str, error: urllib.error.HTTPError) -> str:
    message = f"GET {url} answered HTTP {error.code} {error.reason}"
    if error.code == 429:
        # Docker Hub: 10 unauthenticated pulls an hour per address, and Lambda's addresses are shared.
        message += " (the registry's pull limit for this address: run `pulumi up` again later)"
    return message


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def platform_manifest(registry: Registry, reference: str) -> tuple[bytes, str, str]:
    """The linux/amd64 image manifest (its bytes, media type and digest), through an index if there is one."""
    body, media_type = registry.manifest(reference)
    if reference.startswith("sha256:") and sha256(body) != reference:
        raise MirrorError(f"the manifest served for {reference} has digest {sha256(body)}")
    if media_type in INDEX_TYPES:
        wanted = [
            entry
            for entry in json.loads(body).get("manifests", [])
            if (entry.get("platform", {}).get("os"), entry.get("platform", {}).get("architecture")) == PLATFORM
        ]
        if not wanted:
            raise MirrorError(f"{registry.repository}@{reference} has no {'/'.join(PLATFORM)} image")
        digest = wanted[0]["digest"]
        body, media_type = registry.manifest(digest)
        if sha256(body) != digest:
            raise MirrorError(f"the manifest served for {digest} has digest {sha256(body)}")
    else:
        digest = sha256(body)
    if media_type not in MANIFEST_TYPES:
        raise MirrorError(f"{registry.repository}@{reference} is a {media_type or 'untyped'} manifest, not an image")
    return body, media_type, digest


def _with_policy_wait(call: Callable[[], Any], sleep: Callable[[float], None]) -> Any:
    waited = 0.0
    while True:
        try:
            return call()
        except Exception as error:  # botocore's ClientError: its code decides
            code = getattr(error, "response", {}).get("Error", {}).get("Code")
            if code != "AccessDeniedException" or waited >= POLICY_WAIT_SECONDS:
                raise
            sleep(5.0)
            waited += 5.0


def _has_image(ecr: Any, repository: str, digest: str) -> bool:
    # DescribeImages, not BatchGetImage: by digest, the latter returns only the manifest formats it is told to
    # accept.
    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageDigest": digest}])
    except ecr.exceptions.ImageNotFoundException:
        return False
    return True


def _read_part(stream: BinaryIO, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def copy_blob(registry: Registry, ecr: Any, repository: str, descriptor: dict[str, Any]) -> int:
    """Stream one blob into ECR part by part; ECR is told it is complete only if digest and size match. A
    download cut short starts again, in a new upload."""
    if descriptor["size"] == 0:
        # ECR completes an upload of at least one part, and a part has at least one byte.
        raise MirrorError(f"blob {descriptor['digest']} is empty, which ECR's layer upload cannot store")
    return registry.again_if_cut(
        f"blob {descriptor['digest']}", lambda: _upload_blob(registry, ecr, repository, descriptor)
    )


def _upload_blob(registry: Registry, ecr: Any, repository: str, descriptor: dict[str, Any]) -> int:
    digest, size = descriptor["digest"], descriptor["size"]
    upload = ecr.initiate_layer_upload(repositoryName=repository)
    part_bytes = min(int(upload.get("partSize") or PART_BYTES), PART_BYTES)
    hasher, offset = hashlib.sha256(), 0
    with registry.blob(digest) as stream:
        while part := _read_part(stream, part_bytes):
            hasher.update(part)
            ecr.upload_layer_part(
                repositoryName=repository,
                uploadId=upload["uploadId"],
                partFirstByte=offset,
                partLastByte=offset + len(part) - 1,
                layerPartBlob=part,
            )
            offset += len(part)
    if offset < size:
        raise ShortBody(f"{offset} of {size} bytes")
    if offset != size or f"sha256:{hasher.hexdigest()}" != digest:
        raise MirrorError(f"blob {digest} arrived as {offset} bytes with digest sha256:{hasher.hexdigest()}")
    ecr.complete_layer_upload(repositoryName=repository, uploadId=upload["uploadId"], layerDigests=[digest])
    return size


def mirror(
    registry: Registry, source: Reference, ecr: Any, repository: str, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    body, media_type, digest = platform_manifest(registry, source.reference)
    manifest = json.loads(body)
    blobs = [manifest["config"], *manifest["layers"]]
    compressed = sum(blob["size"] for blob in blobs)
    if _with_policy_wait(lambda: _has_image(ecr, repository, digest), sleep):
        _log.info("%s is already in %s", digest, repository)
        return {"digest": digest, "compressedBytes": compressed, "copiedBytes": 0}
    digests = [blob["digest"] for blob in blobs]
    have = set()
    for first in range(0, len(digests), CHECK_BATCH):
        available = ecr.batch_check_layer_availability(
            repositoryName=repository, layerDigests=digests[first : first + CHECK_BATCH]
        )
        have |= {layer["layerDigest"] for layer in available["layers"] if layer["layerAvailability"] == "AVAILABLE"}
    copied = 0
    for blob in blobs:
        if blob["digest"] not in have:
            copied += copy_blob(registry, ecr, repository, blob)
            have.add(blob["digest"])
    put = {
        "repositoryName": repository,
        "imageManifest": body.decode("utf-8"),
        "imageManifestMediaType": media_type,
        "imageDigest": digest,
    }
    try:
        ecr.put_image(**put, **({"imageTag": source.tag} if source.tag else {}))
    except (ecr.exceptions.ImageTagAlreadyExistsException, ecr.exceptions.ImageAlreadyExistsException):
        # Either a concurrent run put it, or the repository's immutable tag names an image the source has since
        # replaced: then this one is kept untagged (tasks pull by digest).
        if not _has_image(ecr, repository, digest):
            with suppress(ecr.exceptions.ImageAlreadyExistsException):  # put by a run beside this one
                ecr.put_image(**put)
    _log.info("copied %s (%d of %d bytes) into %s", digest, copied, compressed, repository)
    return {"digest": digest, "compressedBytes": compressed, "copiedBytes": copied}


def registry_url(host: str) -> str:
    """HTTPS, except on the loopback network, which Docker too treats as an insecure registry."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    loopback = name == "localhost" or name.startswith("127.")
    return f"{'http' if loopback else 'https'}://{host}"


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    source = parse_reference(event["image"])
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - TIME_MARGIN_SECONDS
    registry = Registry(registry_url(source.host), source.repository, deadline=deadline)
    return mirror(registry, source, boto3.client("ecr"), event["repository"])
