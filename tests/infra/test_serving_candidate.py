"""The stack config's candidate mode reaches the serving container as the settings the server reads."""

from __future__ import annotations

import pytest

from infra.k8s import serving
from ml.serve.settings import ServeSettings
from tests.infra.test_k8s_builders import env_of, make_ctx, stack_config


@pytest.mark.parametrize(("mode", "share"), [("off", 0.1), ("shadow", 0.1), ("canary", 0.25)])
def test_candidate_mode_and_share_reach_the_server_settings(
    monkeypatch: pytest.MonkeyPatch, mode: str, share: float
) -> None:
    workloads = stack_config("dev").workloads
    configured = workloads.serving.model_copy(update={"candidate_mode": mode, "canary_share": share})
    ctx = make_ctx("dev", workloads=workloads.model_copy(update={"serving": configured}))
    env = env_of(serving.build_deployment(ctx)["spec"]["template"]["spec"]["containers"][0])
    for name in (serving.CANDIDATE_MODE_ENV, serving.CANARY_SHARE_ENV):
        monkeypatch.setenv(name, env[name]["value"])
    settings = ServeSettings()
    assert (settings.candidate_mode, settings.canary_share) == (mode, share)


def test_an_unknown_candidate_mode_is_refused_naming_the_key() -> None:
    serving_config = stack_config("dev").workloads.serving
    with pytest.raises(ValueError, match="candidate"):
        type(serving_config).model_validate({**serving_config.model_dump(), "candidate_mode": "blue-green"})
