"""Run the program offline on Pulumi's mock runtime: no AWS credentials, no Pulumi CLI.

Used by the tests and by `python -m metaflow_infra plan`. The mocks answer like AWS would for
the attributes the program wires (ids, ARNs, auto-names, endpoints) and record every resource
with its inputs, its parent and its provider, so the whole graph can be inspected.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.settings import ROOT, SETTINGS
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await
from pydantic.alias_generators import to_camel

from .platform import build
from .settings import Settings, config_warnings, load_settings
from .settings.aws_rules import partition_of

ACCOUNT_ID = "123456789012"
PROJECT = "metaflow-infra"
COMPONENT_PREFIX = "metaflow:infra:"
STACK_TYPE = "pulumi:pulumi:Stack"

# (service, resource path) of the ARN AWS gives each type; `{name}` is the physical name.
ARN_SHAPES: dict[str, tuple[str, str]] = {
    "aws:iam/role:Role": ("iam", "role/{name}"),
    "aws:iam/instanceProfile:InstanceProfile": ("iam", "instance-profile/{name}"),
    "aws:batch/jobQueue:JobQueue": ("batch", "job-queue/{name}"),
    "aws:batch/computeEnvironment:ComputeEnvironment": ("batch", "compute-environment/{name}"),
    "aws:secretsmanager/secret:Secret": ("secretsmanager", "secret:{name}-AbCdEf"),
    "aws:lambda/function:Function": ("lambda", "function:{name}"),
    "aws:ecs/cluster:Cluster": ("ecs", "cluster/{name}"),
    "aws:ecs/taskDefinition:TaskDefinition": ("ecs", "task-definition/{name}:1"),
    "aws:cloudwatch/logGroup:LogGroup": ("logs", "log-group:{name}"),
    "aws:servicediscovery/service:Service": ("servicediscovery", "service/srv-{name}"),
    "aws:rds/instance:Instance": ("rds", "db:{name}"),
    "aws:rds/cluster:Cluster": ("rds", "cluster:{name}"),
    "aws:cloudwatch/eventRule:EventRule": ("events", "rule/{name}"),
    "aws:scheduler/schedule:Schedule": ("scheduler", "schedule/default/{name}"),
    "aws:ecr/repository:Repository": ("ecr", "repository/{name}"),
    "aws:kms/key:Key": ("kms", "key/{name}"),
}
GLOBAL_SERVICES = {"iam", "s3"}
DNS_SUFFIXES = {"aws-cn": "amazonaws.com.cn"}
"""Domains of the partitions whose endpoints are not under amazonaws.com (GovCloud's are)."""
PYTHON_MODULES = {"lambda": "lambda_", "index": ""}
"""Type-token modules whose Python module name differs."""


def _reveal(value: Any, path: str, secret_paths: set[str]) -> Any:
    """Unwrap Pulumi's secret envelopes, remembering where they were."""
    if isinstance(value, dict):
        if value.get(pulumi.runtime.rpc._special_sig_key) == pulumi.runtime.rpc._special_secret_sig:
            secret_paths.add(path)
            return _reveal(value["value"], path, secret_paths)
        return {k: _reveal(v, f"{path}.{k}" if path else k, secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v, f"{path}[{i}]", secret_paths) for i, v in enumerate(value)]
    return value


def relative_urn(urn: str) -> str:
    return urn.split("::", 2)[2]


@dataclass(frozen=True)
class AliasSpec:
    """One alias as the engine receives it; empty fields mean "as the resource is now"."""

    name: str = ""
    type: str = ""
    parent_urn: str = ""
    no_parent: bool = False


def _suffix(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:7]


@dataclass
class DeclaredResource:
    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    state: dict[str, Any]
    parent_urn: str
    provider: str
    secret_inputs: set[str] = field(default_factory=set)
    """Paths of inputs that were Pulumi secrets, e.g. `password`."""
    dependencies: list[str] = field(default_factory=list)
    """URNs this resource waits for (explicit `depends_on` and those its inputs come from)."""
    aliases: list[AliasSpec] = field(default_factory=list)
    """Earlier identities this resource answers to (`ResourceOptions.aliases`)."""
    protect: bool = False
    retain_on_delete: bool = False
    ignore_changes: list[str] = field(default_factory=list)
    replace_with: list[str] = field(default_factory=list)
    """URNs whose replacement replaces this resource too (`ResourceOptions.replace_with`)."""

    @property
    def is_component(self) -> bool:
        return self.type.startswith(COMPONENT_PREFIX)

    def deprecated_inputs(self) -> list[str]:
        """Arguments set on this resource that pulumi-aws marks deprecated. The Python SDK warns only
        when they go through an `...Args` object, so keyword arguments are checked here."""
        if not self.type.startswith("aws:"):
            return []
        _, module_path, class_name = self.type.split(":")
        module_name = PYTHON_MODULES.get(module_path.split("/")[0], module_path.split("/")[0])
        module = getattr(pulumi_aws, module_name) if module_name else pulumi_aws
        args_class = getattr(module, f"{class_name}Args", None)
        deprecated = []
        for python_name, member in vars(args_class or object).items():
            original = getattr(getattr(member, "fget", None), "_pulumi_deprecated_callable", None)
            if original is not None:
                input_name = getattr(original, "_pulumi_name", None) or to_camel(python_name)
                if input_name in self.inputs:
                    deprecated.append(f"{self.type} {self.name}: argument {input_name} is deprecated")
        return deprecated


@dataclass(frozen=True)
class SubnetFixture:
    """An existing subnet as the mocked AWS describes it (for network:subnetIds)."""

    vpc_id: str
    availability_zone: str
    zone_id: str
    map_public_ip_on_launch: bool = True
    default_route_target: str | None = "igw-0123456789abcdef0"


ZONE_ID_PREFIXES = {
    "us-east-1": "use1",
    "us-west-1": "usw1",
    "us-west-2": "usw2",
    "eu-west-1": "euw1",
    "ap-northeast-1": "apne1",
}
ZONE_IDS_IN_REGION = {"us-west-1": 3}
"""Regions with fewer than the mock's four zone IDs: us-west-1 has three, of which an account sees two."""
MOCK_ZONE_NUMBERS = {"a": 3, "b": 1, "c": 2, "d": 4}
"""Zone name letter -> zone ID number in the mocked account: `a` is deliberately az3, which
us-east-1's HTTP API VPC links (and Tokyo's Fargate) do not support."""


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, region: str, subnets: Mapping[str, SubnetFixture], vpc_id: str | None = None) -> None:
        self.region = region
        self.partition = partition_of(region) or "aws"
        self.dns_suffix = DNS_SUFFIXES.get(self.partition, "amazonaws.com")
        self.subnets = dict(subnets)
        self.vpc_id = vpc_id
        self.assumed: list[str] = []
        """Existing subnets nothing described: taken as given (in the VPC, public, in their own AZ)."""
        self.invented: set[str] = {ACCOUNT_ID}
        """What AWS would choose that these mocks made up: the account, ids, generated names."""
        self.images: dict[str, list[str]] = {}
        """Image digests in each ECR repository, as the image mirror's invocations put them."""

    def _subnet(self, subnet_id: str) -> SubnetFixture:
        if subnet_id not in self.subnets:
            prefix = ZONE_ID_PREFIXES.get(self.region, self.region.replace("-", ""))
            letter = "bcd"[len(self.assumed) % 3]  # zones every mocked region supports
            self.subnets[subnet_id] = SubnetFixture(
                self.vpc_id or "", f"{self.region}{letter}", f"{prefix}-az{MOCK_ZONE_NUMBERS[letter]}"
            )
            self.assumed.append(subnet_id)
        return self.subnets[subnet_id]

    def _arn(self, type_: str, physical_name: str) -> str:
        service, path = ARN_SHAPES.get(type_, (type_.split(":")[1].split("/")[0], "{name}"))
        region = "" if service in GLOBAL_SERVICES else self.region
        account = "" if service == "s3" else ACCOUNT_ID
        return f"arn:{self.partition}:{service}:{region}:{account}:{path.format(name=physical_name)}"

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        auto_name = f"{args.name}-{_suffix(args.name)}"
        state.setdefault("name", auto_name)
        for name_input, prefix_input in (
            ("bucket", "bucketPrefix"),
            ("identifier", "identifierPrefix"),
            ("clusterIdentifier", "clusterIdentifierPrefix"),
        ):
            if prefix_input in state:  # AWS-side unique suffix after the given prefix
                state.setdefault(name_input, f"{state[prefix_input]}{_suffix(args.name)}")
        if args.typ == "aws:s3/bucket:Bucket":
            state.setdefault("bucket", auto_name)
            physical = state["bucket"]
            state["bucketDomainName"] = f"{physical}.s3.{self.dns_suffix}"
        else:
            physical = state["name"]
        resource_id = f"{physical}-id" if args.typ != "aws:s3/bucket:Bucket" else physical
        self.invented |= {
            state[key] for key in ("name", "bucket", "identifier") if key in state and key not in args.inputs
        }
        if resource_id != physical:
            self.invented.add(resource_id)
        state.setdefault("arn", self._arn(args.typ, physical))
        for attribute, value in self._computed(args.typ, resource_id, state["arn"], args.inputs).items():
            state.setdefault(attribute, value)
        return resource_id, state

    def _computed(self, type_: str, resource_id: str, arn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """Attributes AWS computes that the program wires into other resources."""
        if type_ == "aws:lambda/invocation:Invocation":
            # The image mirror's answer (lambdas/mirror.py): a stand-in digest, no size known offline; the
            # repository then holds it.
            stand_in = "sha256:" + hashlib.sha256(inputs["input"].encode()).hexdigest()
            self.images.setdefault(json.loads(inputs["input"])["repository"], []).append(stand_in)
            return {"result": json.dumps({"digest": stand_in, "compressedBytes": 0, "copiedBytes": 0})}
        if type_ == "aws:ec2/launchTemplate:LaunchTemplate":
            return {"latestVersion": 1}
        if type_ == "aws:rds/instance:Instance":
            return {"address": f"{resource_id}.abcdefghij.{self.region}.rds.{self.dns_suffix}", "port": 5432}
        if type_ == "aws:rds/cluster:Cluster":
            return {"endpoint": f"{resource_id}.cluster-abcdefghij.{self.region}.rds.{self.dns_suffix}", "port": 5432}
        if type_ == "aws:apigatewayv2/api:Api":
            return {
                "apiEndpoint": f"https://{resource_id}.execute-api.{self.region}.{self.dns_suffix}",
                "executionArn": f"arn:{self.partition}:execute-api:{self.region}:{ACCOUNT_ID}:{resource_id}",
            }
        if type_ == "random:index/randomPassword:RandomPassword":
            return {"result": hashlib.sha256(resource_id.encode()).hexdigest()[:40]}
        if type_ == "random:index/randomId:RandomId":
            return {"hex": _suffix(resource_id)}
        if type_ == "aws:ecr/repository:Repository":
            name = arn.rsplit("repository/", 1)[-1]
            return {"repositoryUrl": f"{ACCOUNT_ID}.dkr.ecr.{self.region}.{self.dns_suffix}/{name}"}
        if type_ == "aws:lb/loadBalancer:LoadBalancer":
            return {"dnsName": f"{resource_id}.{self.region}.elb.{self.dns_suffix}", "zoneId": "Z35SXDOTRQ7X7K"}
        if type_ == "aws:lambda/function:Function":
            return {
                "invokeArn": f"arn:{self.partition}:apigateway:{self.region}:lambda:path"
                f"/2015-03-31/functions/{arn}/invocations"
            }
        return {}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return self._answer(args.token, args.args), []

    def _answer(self, token: str, a: dict[str, Any]) -> dict[str, Any]:
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            prefix = ZONE_ID_PREFIXES.get(self.region, self.region.replace("-", ""))
            zones = [
                (f"{self.region}{letter}", f"{prefix}-az{number}")
                for letter, number in MOCK_ZONE_NUMBERS.items()
                if f"{prefix}-az{number}" not in a.get("excludeZoneIds", [])
                and number <= ZONE_IDS_IN_REGION.get(self.region, len(MOCK_ZONE_NUMBERS))
            ]
            return {"names": [n for n, _ in zones], "zoneIds": [z for _, z in zones], "id": self.region}
        if token == "aws:ec2/getVpcEndpointService:getVpcEndpointService":  # the commercial regions' form
            name = next(f for f in a["filters"] if f["name"] == "service-name")["values"][0]
            return {"serviceName": name, "serviceType": a["serviceType"], "id": name}
        if token == "aws:ecr/getRepositories:getRepositories":
            return {"names": sorted(self.images), "id": self.region}
        if token == "aws:ecr/getImages:getImages":
            ids = [{"imageDigest": digest, "imageTag": ""} for digest in self.images.get(a["repositoryName"], [])]
            return {"repositoryName": a["repositoryName"], "imageIds": ids, "id": a["repositoryName"]}
        if token == "aws:index/getPartition:getPartition":
            return {"partition": self.partition, "dnsSuffix": self.dns_suffix, "id": self.partition}
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT_ID,
                "arn": f"arn:{self.partition}:iam::{ACCOUNT_ID}:user/offline",
                "userId": "OFFLINE",
                "id": ACCOUNT_ID,
            }
        if token == "aws:index/getRegion:getRegion":
            return {"name": self.region, "region": self.region, "id": self.region}
        if token == "aws:ssm/getParameter:getParameter":  # public AMI parameters (the Neuron AMI's id)
            value = f"ami-{hashlib.sha256(a['name'].encode()).hexdigest()[:17]}"
            arn = f"arn:{self.partition}:ssm:{self.region}::parameter{a['name']}"
            return {"name": a["name"], "value": value, "type": "String", "version": 1, "arn": arn, "id": a["name"]}
        if token == "aws:ec2/getSubnet:getSubnet":
            subnet = self._subnet(a["id"])
            return {
                "id": a["id"],
                "vpcId": subnet.vpc_id,
                "mapPublicIpOnLaunch": subnet.map_public_ip_on_launch,
                "availabilityZone": subnet.availability_zone,
                "availabilityZoneId": subnet.zone_id,
            }
        if token == "aws:ec2/getRouteTables:getRouteTables":
            subnet_filter = [f for f in a.get("filters", []) if f["name"] == "association.subnet-id"]
            ids = [f"rtb-{subnet_filter[0]['values'][0]}"] if subnet_filter else []
            return {"ids": ids, "id": "route-tables"}
        if token == "aws:ec2/getRouteTable:getRouteTable":
            subnet = self._subnet(a["routeTableId"].removeprefix("rtb-"))
            target = subnet.default_route_target
            routes = (
                []
                if target is None
                else [
                    {
                        "cidrBlock": "0.0.0.0/0",
                        "gatewayId": target if target.startswith("igw-") else "",
                        "natGatewayId": target if target.startswith("nat-") else "",
                    }
                ]
            )
            return {"routeTableId": a["routeTableId"], "routes": routes, "id": a["routeTableId"]}
        raise NotImplementedError(f"the offline mocks do not answer {token}")


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """Remembers each registration's parent and provider, which MockResourceArgs leaves out."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.declared: list[DeclaredResource] = []
        self._thread_loops: set[asyncio.AbstractEventLoop] = set()

    def Invoke(self, request: Any) -> Any:
        return self._in_worker_thread(lambda: super(_RecordingMonitor, self).Invoke(request))

    def ReadResource(self, request: Any) -> Any:
        return self._in_worker_thread(lambda: super(_RecordingMonitor, self).ReadResource(request))

    def RegisterResource(self, request: Any) -> Any:
        return self._in_worker_thread(lambda: self._register(request))

    def _in_worker_thread(self, call: Callable[[], Any]) -> Any:
        """Run a mock-monitor call, remembering the event loop Pulumi's mock monitor makes in a worker
        thread: each thread keeps its loop for the next call (a loop per call cost a fifth of a run)."""
        try:
            return call()
        finally:
            if threading.current_thread() is not threading.main_thread():
                with contextlib.suppress(RuntimeError):  # no loop was created in this thread
                    self._thread_loops.add(asyncio.get_event_loop_policy().get_event_loop())

    def close_thread_loops(self) -> None:
        """Close the worker threads' loops once the threads are done (otherwise they are collected
        unclosed, sometimes printing "Exception ignored in BaseEventLoop.__del__" at exit)."""
        for loop in self._thread_loops:
            loop.close()
        self._thread_loops.clear()

    def _register(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            registration = self.resources[response.urn]
            secret_paths: set[str] = set()
            inputs = _reveal(pulumi.runtime.rpc.deserialize_properties(request.object), "", secret_paths)
            self.declared.append(
                DeclaredResource(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    inputs=inputs,
                    state=_reveal(dict(registration.state), "", set()),
                    parent_urn=request.parent,
                    provider=request.provider,
                    secret_inputs=secret_paths,
                    dependencies=list(request.dependencies),
                    aliases=[
                        AliasSpec(a.spec.name, a.spec.type, a.spec.parentUrn, a.spec.noParent)
                        for a in request.aliases
                        if a.HasField("spec")
                    ],
                    protect=bool(request.protect),
                    retain_on_delete=bool(request.retainOnDelete),
                    ignore_changes=list(request.ignoreChanges),
                    replace_with=list(request.replace_with),
                )
            )
        return response


class _WarningLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass
class OfflineRun:
    settings: Settings
    resources: list[DeclaredResource]
    outputs: dict[str, Any]
    secret_outputs: set[str]
    warnings: list[str] = field(default_factory=list)
    """What the program logged at warning level, e.g. pulumi-aws's "X is deprecated"."""
    unchecked_subnets: list[str] = field(default_factory=list)
    """Existing subnets the offline run could not describe, so took as having a way out."""
    placeholders: frozenset[str] = frozenset()
    """Values the mocks made up where AWS would choose (the account id, resource ids, generated names)."""
    config_warnings: list[str] = field(default_factory=list)
    """Keys set in the config that have no effect, and why."""

    def is_placeholder(self, value: str) -> bool:
        """Whether a value holds something the mocks made up, so `pulumi up` would show another."""
        return any(invented in value for invented in self.placeholders)

    @property
    def deprecations(self) -> list[str]:
        """Deprecated resources (logged by pulumi-aws) and deprecated arguments the program uses."""
        logged = [w for w in self.warnings if "deprecated" in w]
        return logged + [d for r in self.resources for d in r.deprecated_inputs()]

    def of_type(self, type_: str) -> list[DeclaredResource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> DeclaredResource:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, found {[r.name for r in found]}"
        return found[0]

    def _chain(self, urn: str) -> str:
        """The engine's qualified type of a registered URN: every ancestor's type below the stack,
        joined by `$` (the mock monitor keeps only the parent's own type)."""
        by_urn = {r.urn: r for r in self.resources}
        resource = by_urn.get(urn)
        if resource is None:  # the stack itself, or a parent no longer declared: trust the URN
            chain = relative_urn(urn).split("::")[0]
            return "" if chain == STACK_TYPE else chain.removeprefix(f"{STACK_TYPE}$")
        parent_chain = self._chain(resource.parent_urn) if resource.parent_urn else ""
        return f"{parent_chain}${resource.type}" if parent_chain else resource.type

    def identity(self, resource: DeclaredResource) -> str:
        """What the engine keys this resource's state by: the URN without stack and project."""
        return f"{self._chain(resource.urn)}::{resource.name}"

    def earlier_identities(self, resource: DeclaredResource) -> set[str]:
        """Every identity whose old state the engine would adopt for this resource: its own, its
        aliases', and those it inherits from its parents' aliases."""
        by_urn = {r.urn: r for r in self.resources}
        parent = by_urn.get(resource.parent_urn)
        parent_chains = (
            {identity.split("::")[0] for identity in self.earlier_identities(parent)} if parent is not None else {""}
        )

        def qualified(chain: str, type_: str, name: str) -> str:
            return f"{chain}${type_}::{name}" if chain else f"{type_}::{name}"

        found = {qualified(chain, resource.type, resource.name) for chain in parent_chains}
        for alias in resource.aliases:
            if alias.no_parent:
                chains = {""}
            elif alias.parent_urn:
                chains = {self._chain(alias.parent_urn)}
            else:
                chains = parent_chains
            found |= {qualified(chain, alias.type or resource.type, alias.name or resource.name) for chain in chains}
        return found

    def component_of(self, resource: DeclaredResource) -> DeclaredResource | None:
        """The nearest metaflow:infra component above a resource."""
        by_urn = {r.urn: r for r in self.resources}
        parent = by_urn.get(resource.parent_urn)
        while parent is not None and not parent.is_component:
            parent = by_urn.get(parent.parent_urn)
        return parent


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """A run allocates some 10^5 objects that nearly all live until it ends: the cyclic garbage
    collector walked them again and again, a third of a run's time, to free little. Its garbage is
    collected after the run, at the collector's next pass."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run_offline(
    raw_config: Mapping[str, Any],
    stack: str = "dev",
    subnets: Mapping[str, SubnetFixture] | None = None,
    today: datetime.date | None = None,
    declare: Callable[[Settings], dict[str, pulumi.Output[Any]]] = build,
) -> OfflineRun:
    """Validate the config, declare the stack (`build`, unless told otherwise) on mocks and resolve
    its outputs."""
    settings = load_settings(raw_config, stack=stack, today=today)
    mocks = RecordingMocks(settings.region, subnets or {}, settings.network.vpc_id)
    monitor = _RecordingMonitor(mocks)
    log = _WarningLog()
    logger = logging.getLogger(f"metaflow_infra.offline.{stack}")
    logger.propagate = False
    logger.handlers = [log]
    ROOT.set(None)
    # A loop of its own (set before the mocks create the stack resource on it), closed after the run:
    # the runtime would otherwise leave loops open for the garbage collector.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, logger=logger, monitor=monitor)

    outputs: dict[str, Any] = {}
    secret_outputs: set[str] = set()

    async def declare_and_resolve() -> None:
        for output_name, output in declare(settings).items():
            outputs[output_name] = await output.future()
            if await output.is_secret():
                secret_outputs.add(output_name)

    try:
        with _collector_paused():
            _sync_await(run_pulumi_func(lambda: _sync_await(declare_and_resolve())))
    finally:
        # A run the program failed leaves registrations and applies pending, and Pulumi's process-wide lists
        # of outputs and RPCs still naming them (the next run in this process would wait on them, on this closed
        # loop): they are cancelled here and the lists emptied.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        process_wide: Any = SETTINGS  # its context properties are invisible to type checkers
        process_wide.outputs.clear()
        process_wide.rpc_manager.clear()
        loop.run_until_complete(loop.shutdown_default_executor())
        monitor.close_thread_loops()
        loop.close()
        asyncio.set_event_loop(None)
    return OfflineRun(
        settings,
        monitor.declared,
        outputs,
        secret_outputs,
        log.messages,
        mocks.assumed,
        frozenset(mocks.invented),
        config_warnings(settings, raw_config),
    )
