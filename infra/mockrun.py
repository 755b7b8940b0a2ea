"""Run the whole Pulumi program offline, under Pulumi's own mocks, and capture every resource.

Used by the infra tests and by the offline render command. There is no Pulumi CLI, engine or cloud
here: :func:`run_stack` reads ``Pulumi.<stack>.yaml`` itself, installs fresh mock settings, runs
:func:`infra.program.main` inside a new root stack and returns what the program registered (type,
name, inputs, parent, provider, dependencies, options) plus the stack outputs.

Pulumi's runtime state is process-global (context variables for settings, config and the root
stack), so every run starts by resetting all of it; many runs in one process are independent.
Outputs of resources (ARNs, URLs, endpoints) are invented by :class:`PlatformMocks` so ``apply``
chains run to completion and policy documents are rendered with concrete ARNs. They carry the stack's
own account (the first of ``aws:allowedAccountIds``), so a stack that names another account's
resources shows it in the render and fails the tests that pin ARNs to the stack's account.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs, Mocks

from infra.naming import PROJECT

ROOT = Path(__file__).resolve().parent.parent
MOCK_ACCOUNT = "111122223333"
"""The account of a stack whose file names none (``aws:allowedAccountIds`` unset)."""
DEFAULT_MOCK_SECRETS: dict[str, str] = {
    "databaseUrl": "postgresql+psycopg://mock:mock@db.invalid:5432/purchases",
}
"""Stand-ins for ``pulumi config set --secret`` values (not in the committed stack files)."""
SECRET_SIG = "4dabf18193072939515e22adb298388d"


@dataclass
class CapturedResource:
    """One resource the program registered (inputs use the wire names: camelCase)."""

    type: str
    name: str
    urn: str
    inputs: dict[str, Any]
    custom: bool
    parent: str
    """Parent URN ('' only for the root stack)."""
    provider: str
    """Provider reference ``<urn>::<id>`` for custom resources, '' when the default provider is used."""
    providers: dict[str, str] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    """``protect``, ``ignoreChanges``, ``deleteBeforeReplace``, ``additionalSecretOutputs``..."""

    @property
    def provider_urn(self) -> str:
        return self.provider.rsplit("::", 1)[0] if self.provider else ""


@dataclass
class StackRun:
    """Result of one offline run."""

    stack: str
    resources: list[CapturedResource]
    outputs: dict[str, Any]
    secret_outputs: set[str]
    warnings: list[str]
    config: dict[str, str] = field(default_factory=dict)
    """The flat config the program ran with (secret values are the mock stand-ins)."""
    secret_keys: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[CapturedResource]:
        return [r for r in self.resources if r.type == type_]

    def by_urn(self) -> dict[str, CapturedResource]:
        return {r.urn: r for r in self.resources}


def _region_of(inputs: Mapping[str, Any], fallback: str) -> str:
    return str(inputs.get("region") or fallback)


class PlatformMocks(Mocks):
    """Invents plausible output properties for the resource types the program uses."""

    def __init__(self, region: str = "eu-west-1", account: str = MOCK_ACCOUNT) -> None:
        self.region = region
        self.account = account

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        typ: str = args.typ
        name: str = args.name
        inputs: dict[str, Any] = dict(args.inputs)
        region = _region_of(inputs, self.region)
        rid = f"{name}-id"
        state = dict(inputs)
        service = typ.split(":")[1].split("/")[0] if typ.startswith("aws:") else ""
        state.setdefault("arn", f"arn:aws:{service}:{region}:{self.account}:{name}")
        state.setdefault("name", name)
        if typ == "aws:s3/bucket:Bucket":
            bucket = inputs.get("bucket") or f"{inputs.get('bucketPrefix', '')}{name}"
            rid = bucket
            state.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}")
        elif typ == "aws:ecr/repository:Repository":
            state["repositoryUrl"] = f"{self.account}.dkr.ecr.{region}.amazonaws.com/{inputs.get('name', name)}"
        elif typ == "aws:eks/cluster:Cluster":
            state["endpoint"] = f"https://{inputs.get('name', name)}.gr7.{region}.eks.amazonaws.com"
            state["vpcConfig"] = {**inputs.get("vpcConfig", {}), "clusterSecurityGroupId": f"sg-{name}"}
            state["certificateAuthority"] = {"data": "TU9DSy1DQQ=="}
        elif typ == "aws:iam/role:Role":
            state["arn"] = f"arn:aws:iam::{self.account}:role/{name}"
        elif typ == "aws:kms/key:Key":
            state["arn"] = f"arn:aws:kms:{region}:{self.account}:key/{name}"
            state["keyId"] = name
        return rid, state

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        # The failures list must be a list: Pulumi's MockMonitor iterates it (``None`` raises).
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": self.account,
                "arn": f"arn:aws:iam::{self.account}:user/mock",
                "userId": "mock",
            }, []
        return {}, []


def load_stack_config(stack: str, root: Path = ROOT) -> dict[str, Any]:
    """The ``config:`` map of ``Pulumi.<stack>.yaml`` (raw YAML values)."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no stack file {path}")
    data = yaml.safe_load(path.read_text()) or {}
    return dict(data.get("config") or {})


def to_pulumi_config(
    raw: Mapping[str, Any], secrets: Mapping[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """Turn stack-file values into what the CLI hands a program: strings, objects as JSON.

    ``secure:`` values cannot be decrypted here; they are replaced by ``secrets[<key>]`` or a
    placeholder, and marked secret either way. ``secrets`` keys are short (``databaseUrl``) or full.
    """
    secrets = dict(secrets or {})
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in raw.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            short = key.removeprefix(f"{PROJECT}:")
            config[key] = secrets.pop(key, "") or secrets.pop(short, "") or f"mock-secret-{short}"
            secret_keys.append(key)
        elif isinstance(value, str):
            config[key] = value
        else:
            config[key] = json.dumps(value)
    for key, value in secrets.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        config[full] = value
        secret_keys.append(full)
    return config, secret_keys


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_program(
    program: Callable[[], Any],
    *,
    stack: str,
    config: Mapping[str, str],
    secret_keys: list[str] | None = None,
    region: str = "eu-west-1",
    account: str = MOCK_ACCOUNT,
    project: str = PROJECT,
) -> StackRun:
    """Run ``program`` in a fresh root stack under mocks and return everything it registered."""
    from pulumi.runtime import config as runtime_config
    from pulumi.runtime import mocks, rpc, settings
    from pulumi.runtime.stack import run_in_stack
    from pulumi.runtime.sync_await import _sync_await

    captured: list[CapturedResource] = []
    outputs: dict[str, Any] = {}
    secret_outputs: set[str] = set()

    class Monitor(mocks.MockMonitor):
        def make_urn(self, parent: str, type_: str, name: str) -> str:
            # The base class asks the runtime for project/stack, but the SDK calls the monitor from
            # executor threads where those context variables hold their import-time defaults.
            if parent:
                type_ = parent.split("::")[2].split("$").pop() + "$" + type_
            return f"urn:pulumi:{stack}::{project}::{type_}::{name}"

        def RegisterResource(self, request: Any) -> Any:
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                captured.append(
                    CapturedResource(
                        type=request.type,
                        name=request.name,
                        urn=response.urn,
                        inputs=rpc.deserialize_properties(request.object),
                        custom=bool(request.custom),
                        parent=request.parent,
                        provider=request.provider,
                        providers=dict(request.providers),
                        dependencies=list(request.dependencies),
                        options={
                            "protect": request.protect,
                            "retainOnDelete": request.retainOnDelete,
                            "ignoreChanges": list(request.ignoreChanges),
                            "deleteBeforeReplace": request.deleteBeforeReplace,
                            "additionalSecretOutputs": list(request.additionalSecretOutputs),
                            "replaceOnChanges": list(request.replaceOnChanges),
                        },
                    )
                )
            return response

        def RegisterResourceOutputs(self, request: Any) -> Any:
            if request.urn.endswith(f"::pulumi:pulumi:Stack::{project}-{stack}"):
                raw = json.loads(json.dumps(_struct_to_python(request.outputs)))
                for key, value in raw.items():
                    if isinstance(value, dict) and value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
                        secret_outputs.add(key)
                        value = value.get("value")
                    outputs[key] = value
            return super().RegisterResourceOutputs(request)

    log_capture = _Capture()
    logger = logging.getLogger(f"infra.mockrun.{stack}")
    logger.propagate = False
    logger.handlers = [log_capture]
    logger.setLevel(logging.DEBUG)

    # Reset every piece of process-global runtime state a previous run may have left behind.
    settings.ROOT.set(None)
    settings.configure(
        mocks.MockSettings(
            monitor=Monitor(PlatformMocks(region, account)),
            engine=mocks.MockEngine(logger),
            project=project,
            stack=stack,
            dry_run=True,
            organization="organization",
            feature_support={},
        )
    )
    runtime_config.set_all_config(dict(config), list(secret_keys or []))
    try:
        _sync_await(run_in_stack(program))
    finally:
        settings.ROOT.set(None)
        runtime_config.set_all_config({}, [])
    return StackRun(
        stack, captured, outputs, secret_outputs, log_capture.messages, dict(config), list(secret_keys or [])
    )


def _struct_to_python(struct: Any) -> Any:
    from google.protobuf import json_format

    return json_format.MessageToDict(struct)


def run_stack(
    stack: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    root: Path = ROOT,
    program: Callable[[], Any] | None = None,
) -> StackRun:
    """Run the program for ``Pulumi.<stack>.yaml`` offline and capture its resources.

    :param overrides: config values replacing the file's (short ``imageDigest`` or full keys;
        ``None`` removes a key).
    :param secrets: secret config (short or full keys); defaults to :data:`DEFAULT_MOCK_SECRETS`.
    :param program: defaults to :func:`infra.program.main`.
    """
    raw = load_stack_config(stack, root)
    for key, value in (overrides or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if value is None:
            raw.pop(full, None)
        else:
            raw[full] = value
    config, secret_keys = to_pulumi_config(raw, DEFAULT_MOCK_SECRETS if secrets is None else secrets)
    if program is None:
        from infra.program import main

        program = main
    return run_program(
        program,
        stack=stack,
        config=config,
        secret_keys=secret_keys,
        region=str(raw.get("aws:region") or "eu-west-1"),
        account=stack_account(raw),
    )


def stack_account(raw: Mapping[str, Any]) -> str:
    """The account a stack file deploys into: the first of ``aws:allowedAccountIds``, else :data:`MOCK_ACCOUNT`."""
    accounts = raw.get("aws:allowedAccountIds") or [MOCK_ACCOUNT]
    return str(accounts[0])
