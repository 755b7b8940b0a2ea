"""``purchase-classifier:alerting``: typed receivers, refused loudly with the key named, kept secret.

The config goes through the stack config loader (:func:`infra.config.parse_config`) exactly as Pulumi
hands it to the program, and the whole program runs under Pulumi's mocks for the release it renders.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.config import ConfigError, parse_config
from infra.k8s.prometheus_stack import alertmanager_config
from infra.mockrun import DEFAULT_MOCK_SECRETS, SECRET_SIG, load_stack_config, to_pulumi_config
from tests.infra.harness import DIGEST, run_stack

KEY = "purchase-classifier:alerting"
SLACK_URL = "https://hooks.slack.com/services/T000/B000/not-a-real-token"
RECEIVERS: list[dict[str, Any]] = [
    {"name": "oncall", "type": "pagerduty", "severities": ["critical"], "routingKey": "0123456789abcdef"},
    {"name": "team", "type": "slack", "severities": ["critical", "warning"], "url": SLACK_URL},
]


def parse(alerting: Any, *, secret: bool = True, stack: str = "staging") -> Any:
    raw = load_stack_config(stack)
    raw[KEY] = alerting
    config, secret_keys = to_pulumi_config(raw, {})
    if secret:
        secret_keys.append(KEY)
    return parse_config(config, secret_keys=secret_keys, stack=stack, aws_region=raw["aws:region"])


def problems(alerting: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as refused:
        parse(alerting, **kwargs)
    return str(refused.value)


def test_receivers_parse_into_typed_config_whose_credentials_never_print() -> None:
    cfg = parse({"receivers": RECEIVERS, "repeatInterval": "1h"})
    oncall, team = cfg.alerting.receivers
    assert (oncall.type, oncall.severities) == ("pagerduty", ["critical"])
    assert team.url is not None and team.url.get_secret_value() == SLACK_URL
    assert SLACK_URL not in repr(cfg) and "0123456789abcdef" not in repr(cfg)
    routes = alertmanager_config(cfg.alerting)["route"]["routes"]
    assert [(r["receiver"], r["matchers"]) for r in routes[1:]] == [
        ("oncall", ['severity=~"critical"']),
        ("team", ['severity=~"critical|warning"']),
    ]


def test_a_stack_without_alerting_routes_everything_to_null() -> None:
    raw = load_stack_config("prod")
    config, secret_keys = to_pulumi_config(raw, {})
    cfg = parse_config(config, secret_keys=secret_keys, stack="prod", aws_region=raw["aws:region"])
    rendered = alertmanager_config(cfg.alerting)
    assert rendered["receivers"] == [{"name": "null"}] and rendered["route"]["receiver"] == "null"


def test_credentials_in_plain_text_are_refused() -> None:
    message = problems({"receivers": RECEIVERS}, secret=False)
    assert f"{KEY}: is stored in plain text; it is a secret" in message
    assert SLACK_URL not in message


@pytest.mark.parametrize(
    ("receiver", "expected"),
    [
        ({"name": "team", "type": "slack", "severities": ["warning"]}, "receivers[0]: url is required for a slack"),
        ({"name": "hook", "type": "webhook", "severities": ["warning"]}, "receivers[0]: url is required for a webhook"),
        ({"name": "pd", "type": "pagerduty", "severities": ["critical"]}, "receivers[0]: routingKey is required"),
        (
            {"name": "team", "type": "slack", "severities": ["page"], "url": SLACK_URL},
            "receivers[0].severities[0]: got <secret>; Input should be 'critical', 'warning' or 'info'",
        ),
        ({"name": "team", "type": "slack", "severities": [], "url": SLACK_URL}, "receivers[0].severities"),
        ({"name": "null", "type": "slack", "severities": ["warning"], "url": SLACK_URL}, "receivers[0].name"),
        ({"name": "team", "type": "email", "severities": ["warning"], "url": SLACK_URL}, "receivers[0].type"),
        (
            {"name": "team", "type": "slack", "severities": ["warning"], "url": SLACK_URL, "to": "x"},
            "receivers[0].to: unknown key; allowed keys here: channel, name, routingKey, severities, type, url",
        ),
        (
            {"name": "team", "type": "webhook", "severities": ["warning"], "url": SLACK_URL, "channel": "#a"},
            "receivers[0]: channel is only used by slack receivers",
        ),
    ],
)
def test_a_bad_receiver_is_refused_naming_its_key(receiver: dict[str, Any], expected: str) -> None:
    message = problems({"receivers": [receiver]})
    assert f"{KEY}.{expected}" in message, message
    assert SLACK_URL not in message


def test_receivers_where_no_alertmanager_is_installed_are_refused() -> None:
    # local is existing mode: its cluster's Alertmanager is not the program's to configure.
    raw = load_stack_config("local")
    raw[KEY] = {"receivers": RECEIVERS}
    config, secret_keys = to_pulumi_config(raw, {})
    with pytest.raises(ConfigError, match="alerting is only used where the program installs Alertmanager"):
        parse_config(config, secret_keys=[*secret_keys, KEY], stack="local")


def test_a_url_that_is_not_one_is_refused_without_showing_it() -> None:
    bad = "hooks.slack.com/services/T000/B000/secret-token"
    message = problems({"receivers": [{"name": "team", "type": "slack", "severities": ["warning"], "url": bad}]})
    assert f"{KEY}.receivers[0].url: got <secret>; is not an http(s) URL" in message
    assert "secret-token" not in message


def test_repeated_names_and_bad_durations_are_refused() -> None:
    message = problems({"receivers": [RECEIVERS[1], RECEIVERS[1]], "groupWait": "soon"})
    assert f"{KEY}.receivers: got <secret>; receiver names must be unique; repeated: team" in message
    assert f"{KEY}.groupWait: got <secret>; 'soon' is not a duration" in message


def test_the_release_carries_the_receivers_as_a_pulumi_secret() -> None:
    alerting = {"receivers": RECEIVERS}
    run = run_stack(
        "staging", overrides={"imageDigest": DIGEST}, secrets={**DEFAULT_MOCK_SECRETS, "alerting": json.dumps(alerting)}
    )
    (release,) = [
        r for r in run.of_type("kubernetes:helm.sh/v3:Release") if r.inputs.get("name") == "kube-prometheus-stack"
    ]
    values = release.inputs["values"]
    assert SECRET_SIG in values, "the Helm values hold the receivers' credentials: they must be a secret"
    config = values["value"]["alertmanager"]["config"]
    assert [r["name"] for r in config["receivers"]] == ["null", "oncall", "team"]
    assert config["receivers"][2]["slack_configs"][0]["api_url"] == SLACK_URL
    assert not any("no receivers" in m for m in run.warnings)


def test_a_stack_without_receivers_is_warned_that_no_one_is_told() -> None:
    run = run_stack("prod")
    (release,) = [
        r for r in run.of_type("kubernetes:helm.sh/v3:Release") if r.inputs.get("name") == "kube-prometheus-stack"
    ]
    assert SECRET_SIG not in release.inputs["values"]
    assert any("Alertmanager has no receivers: every alert goes to 'null'" in m for m in run.warnings)
