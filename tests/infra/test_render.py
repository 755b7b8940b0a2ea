"""``python -m infra render`` and the ``python -m infra`` dispatcher."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from infra import cli
from infra.mockrun import ROOT
from infra.render import (
    K8S_DIR,
    KIND_ORDER,
    REDACTED,
    SUMMARY_FILE,
    RenderError,
    kubernetes_manifests,
    manifest_filenames,
    render,
    render_run,
)
from tests.infra.harness import DIGEST, STACKS, cached_run


@pytest.mark.parametrize("stack", STACKS)
def test_one_file_per_object_in_apply_order(stack: str, tmp_path: Path) -> None:
    run = cached_run(stack)
    result = render_run(run, tmp_path)
    files = sorted((tmp_path / K8S_DIR).glob("*.yaml"))
    assert files == sorted(result.files)
    assert (
        len(files)
        == len(result.objects)
        # Every object the provider sends to the API server; Helm releases are charts, not objects.
        == len([r for r in run.resources if r.custom and r.type.startswith("kubernetes:") and "kind" in r.inputs])
    )
    assert files[0].name.startswith("001-namespace-")
    # Listing the directory gives the apply order: namespaces, then what lives in them, by kind.
    assert [f.name.split("-", 1)[0] for f in files] == [f"{i:03d}" for i in range(1, len(files) + 1)]
    ranks = [KIND_ORDER.index(o["kind"]) if o["kind"] in KIND_ORDER else len(KIND_ORDER) for o in result.objects]
    assert ranks == sorted(ranks)
    assert [f.name for f in files] == manifest_filenames(result.objects)
    for path, expected in zip(files, result.objects, strict=True):
        docs = list(yaml.safe_load_all(path.read_text()))
        assert len(docs) == 1
        obj = docs[0]
        assert list(obj)[:3] == ["apiVersion", "kind", "metadata"]
        assert (obj["kind"], obj["metadata"]["name"]) == (expected["kind"], expected["metadata"]["name"])


def test_numbers_are_integers_and_secret_values_redacted(tmp_path: Path) -> None:
    render_run(cached_run("dev"), tmp_path)
    (worker_file,) = (tmp_path / K8S_DIR).glob("*-deployment-dask-worker.yaml")
    worker = yaml.safe_load(worker_file.read_text())
    assert worker["spec"]["replicas"] == 2 and isinstance(worker["spec"]["replicas"], int)
    (secret_file,) = (tmp_path / K8S_DIR).glob("*-secret-database-url.yaml")
    secret_text = secret_file.read_text()
    secret = yaml.safe_load(secret_text)
    assert secret["stringData"] == {"DATABASE_URL": REDACTED}
    everything = "".join(p.read_text() for p in (tmp_path / K8S_DIR).glob("*.yaml"))
    assert "postgresql" not in everything and "mock:mock" not in everything


def test_summary_lists_aws_settings_outputs_and_objects(tmp_path: Path) -> None:
    render_run(cached_run("prod"), tmp_path)
    summary = (tmp_path / SUMMARY_FILE).read_text()
    assert "# Offline render of stack `prod`" in summary and "pulumi preview" in summary
    assert "**aws:eks/cluster:Cluster** `cluster-eks`" in summary
    assert '"endpointPublicAccess": false' in summary
    assert 'capacityType: "ON_DEMAND"' in summary
    assert "policy: Deny s3:* on" in summary  # bucket policy rendered readably
    assert "`kubeconfig`: [secret]" in summary
    assert re.search(r"^- CronJob `purchase-classifier/predict` → `k8s/\d{3}-cronjob-predict\.yaml`$", summary, re.M)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_summary_shows_capacity_per_pool_at_min_and_max_scale(stack: str, tmp_path: Path) -> None:
    render_run(cached_run(stack), tmp_path)
    summary = (tmp_path / SUMMARY_FILE).read_text()
    section = summary.split("## Capacity per node pool", 1)[1].split("## Kubernetes objects", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| dask ") or line.startswith("| general ")]
    assert [r.split("|")[1].strip() for r in rows] == ["dask", "general"]
    assert "requested at min scale" in section and "requested at max scale" in section and "pool may provide" in section


def test_summary_capacity_figures_for_dev(tmp_path: Path) -> None:
    render_run(cached_run("dev"), tmp_path)
    summary = (tmp_path / SUMMARY_FILE).read_text()
    # Two workers of 1 CPU / 2Gi on m/r nodes of at most 4 vCPUs, limits 8 CPU: two such nodes.
    assert "| dask | 4 vCPU / 32 GiB (3715m, 27.8 GiB) | 2 | 2000m, 4.0 GiB | 2000m, 4.0 GiB (1 node(s)) |" in summary


def test_existing_mode_summary_has_no_aws(tmp_path: Path) -> None:
    render_run(cached_run("local"), tmp_path)
    assert "None (existing-cluster mode)." in (tmp_path / SUMMARY_FILE).read_text()
    assert "Capacity per node pool" not in (tmp_path / SUMMARY_FILE).read_text()


def test_stale_manifests_are_removed_but_other_files_kept(tmp_path: Path) -> None:
    (tmp_path / K8S_DIR).mkdir()
    (tmp_path / K8S_DIR / "99-deployment-gone.yaml").write_text("kind: Deployment\n")
    (tmp_path / "notes.txt").write_text("mine")
    render_run(cached_run("dev"), tmp_path)
    assert not (tmp_path / K8S_DIR / "99-deployment-gone.yaml").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_fresh_stack_renders_no_workloads_and_says_why(tmp_path: Path) -> None:
    result = render_run(cached_run("staging", with_digest=False), tmp_path)
    # The cluster's own objects (Karpenter's node classes and pools, the monitoring namespace, the
    # preview group's read access) exist without a digest; no workload does.
    assert {o["kind"] for o in result.objects} == {
        "EC2NodeClass", "NodePool", "Namespace", "ClusterRole", "ClusterRoleBinding"
    }  # fmt: skip
    assert [o["metadata"]["name"] for o in result.objects if o["kind"] == "Namespace"] == ["monitoring"]
    assert any("imageDigest is not set" in w for w in result.warnings)
    assert "imageDigest is not set" in (tmp_path / SUMMARY_FILE).read_text()


def test_render_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"no stack file .*stacks here: dev, local, prod, staging"):
        render("nope", tmp_path)
    with pytest.raises(RenderError, match="tags are refused"):
        render("dev", tmp_path, image_digest="latest")


def test_cli_render_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "--stack", "local", "--out", str(tmp_path), "--image-digest", DIGEST]) == 0
    out = capsys.readouterr().out
    assert f"stack local: {len(kubernetes_manifests(cached_run('local')))} Kubernetes objects" in out
    assert (tmp_path / SUMMARY_FILE).exists()
    assert cli.main(["render", "--stack", "nope", "--out", str(tmp_path)]) == 2
    assert "no stack file" in capsys.readouterr().err


def test_cli_without_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "render" in capsys.readouterr().out


def test_cli_skips_a_command_module_that_does_not_exist_yet() -> None:
    parser = cli.build_parser(("infra.render", "infra.not_written_yet"))
    assert parser.parse_args(["render", "--stack", "dev", "--out", "x"]).command == "render"


def test_cli_does_not_hide_a_command_module_with_a_missing_dependency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pc_cmd_probe.py").write_text("import pc_missing_dependency_probe\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="pc_missing_dependency_probe"):
        cli.build_parser(("infra.render", "pc_cmd_probe"))


def test_cli_registers_each_module_add_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("infra.fake_cmd")

    def add_parser(subparsers: argparse._SubParsersAction) -> None:
        p = subparsers.add_parser("fake")
        p.set_defaults(func=lambda args: 7)

    mod.add_parser = add_parser  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "infra.fake_cmd", mod)
    assert cli.main(["fake"], modules=("infra.fake_cmd",)) == 7


@pytest.mark.slow
def test_python_dash_m_infra_render(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "infra", "render", "--stack", "dev", "--out", str(tmp_path), "--image-digest", DIGEST],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # The workloads' objects and Karpenter's two EC2NodeClasses and two NodePools.
    count = len(kubernetes_manifests(cached_run("dev")))
    assert f"stack dev: {count} Kubernetes objects" in proc.stdout
    assert len(list((tmp_path / K8S_DIR).glob("*.yaml"))) == count
    assert "Capacity per node pool" in (tmp_path / SUMMARY_FILE).read_text()
