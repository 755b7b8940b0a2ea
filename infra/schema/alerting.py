"""Where alerts go: Alertmanager receivers and the severities each one is sent.

Used where the program installs Alertmanager (``workloads.monitoring.install``, kube-prometheus-stack);
:func:`infra.k8s.prometheus_stack.alertmanager_config` renders it. A receiver's URL or routing key is
a credential (whoever has a Slack webhook URL can post to the channel), so the whole
``purchase-classifier:alerting`` key is a secret: set the URLs with
``pulumi config set --path --secret 'purchase-classifier:alerting.receivers[0].url' <url>``, which
encrypts them in the stack file and marks the key secret; a plain-text URL is refused.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from infra.schema.base import Model

SEVERITIES = ("critical", "warning", "info")
"""The ``severity`` label values alerts carry (ours: critical and warning; the chart's rules add info)."""
NULL_RECEIVER = "null"
"""The receiver that drops what no route matches (the chart's Watchdog heartbeat, say)."""
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_URL_RE = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_DURATION_RE = re.compile(r"^[1-9][0-9]*(s|m|h)$")


def _check_url(value: SecretStr | None) -> SecretStr | None:
    # The message never echoes the value: it is a credential.
    if value is not None and not _URL_RE.match(value.get_secret_value()):
        raise ValueError("is not an http(s) URL (the value is a secret and is not shown)")
    return value


class Receiver(Model):
    """One destination, and the severities routed to it (an alert goes to every receiver that takes it)."""

    name: str = Field(description="Receiver name (lowercase letters, digits, '-'), unique.")
    type: Literal["webhook", "slack", "pagerduty"] = Field(
        description="`webhook` (POSTs Alertmanager's JSON to `url`), `slack` (incoming-webhook `url`), "
        "`pagerduty` (Events API v2 `routingKey`; `url` only for another region's endpoint)."
    )
    severities: list[Literal["critical", "warning", "info"]] = Field(
        min_length=1, description="Severities sent here, e.g. `[critical]` for a pager."
    )
    url: SecretStr | None = Field(default=None, description="Webhook or Slack URL (secret).")
    routing_key: SecretStr | None = Field(default=None, description="PagerDuty integration key (secret).")
    channel: str | None = Field(default=None, description="Slack channel, when the webhook may post to several.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value) or value == NULL_RECEIVER:
            raise ValueError(f"{value!r} is not a receiver name (lowercase letters, digits, '-'; not 'null')")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        return _check_url(value)

    @field_validator("severities")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"{value} names a severity twice")
        return value

    @model_validator(mode="after")
    def _credential(self) -> Receiver:
        if self.type == "pagerduty":
            if self.routing_key is None:
                raise ValueError(
                    "routingKey is required for a pagerduty receiver; set it with "
                    "`pulumi config set --path --secret 'purchase-classifier:alerting.receivers[<n>].routingKey' <key>`"
                )
        elif self.url is None:
            raise ValueError(
                f"url is required for a {self.type} receiver; set it with "
                "`pulumi config set --path --secret 'purchase-classifier:alerting.receivers[<n>].url' <url>`"
            )
        if self.routing_key is not None and self.type != "pagerduty":
            raise ValueError(f"routingKey is only used by pagerduty receivers, not {self.type}")
        if self.channel is not None and self.type != "slack":
            raise ValueError(f"channel is only used by slack receivers, not {self.type}")
        return self


class Alerting(Model):
    """Alertmanager's receivers and timings. Without receivers every alert goes to the `null` receiver."""

    receivers: list[Receiver] = Field(default_factory=list, description="Where alerts go, by severity.")
    group_wait: str = Field(
        default="30s", description="How long Alertmanager gathers alerts of a new group before the first message."
    )
    group_interval: str = Field(default="5m", description="Wait before telling a group about new alerts.")
    repeat_interval: str = Field(default="4h", description="Repeat a still-firing alert this often.")

    @field_validator("group_wait", "group_interval", "repeat_interval")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not _DURATION_RE.match(value):
            raise ValueError(f"{value!r} is not a duration like '30s', '5m' or '4h'")
        return value

    @field_validator("receivers")
    @classmethod
    def _unique_names(cls, value: list[Receiver]) -> list[Receiver]:
        names = [receiver.name for receiver in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"receiver names must be unique; repeated: {', '.join(duplicates)}")
        return value
