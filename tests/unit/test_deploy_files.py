"""The operators' files shipped in ``ooma_moh/deploy`` (issue 25 item 4): the Prometheus alerting
rules and the Grafana dashboard name only metrics and labels the processes export, the dashboard
is importable as is (a ``${datasource}`` variable, no tenant anywhere), the gauges the rules
rely on follow what they stand for, and ``ooma-moh deploy-files`` writes every file, all or
nothing. No network, no server: promtool's own checks of the rules are in
tests/integration/test_monitoring.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from ooma_moh import metrics
from ooma_moh.cli import main
from ooma_moh.deploy import deploy_names, deploy_text
from ooma_moh.errors import (
    DisclaimerRequired,
    InvalidTenantId,
    NoLongerAuthorised,
    StorageError,
    UploadRejected,
    upload_outcome,
)
from ooma_moh.rejections import Rejection
from tests.promql import references

DEPLOY = Path(__file__).resolve().parents[2] / "ooma_moh" / "deploy"
#: the sample names each metric family type has in prometheus_client's text exposition
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
#: the series Prometheus itself adds for every target it scrapes (not exported by a process)
SCRAPE_SERIES = {"up"}
#: the labels Prometheus puts on every scraped series, and the histograms' bucket label
TARGET_LABELS = {"job", "instance", "le"}
#: the scrape jobs the rules and the dashboard expect: one per unit (docs/monitoring.md)
JOBS = {"ooma-moh-ari", "ooma-moh-agi", "ooma-moh-http", "ooma-moh-agent"}


def exported_series() -> set[str]:
    """Every series name the processes export: each family of the registry with its suffixes
    (a labelled metric with no series yet is listed too: it is exported once used)."""
    return {family.name + suffix for family in metrics.REGISTRY.collect() for suffix in SUFFIXES[family.type]}


def exported_labels() -> set[str]:
    our = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    return {label for metric in our for label in metric._labelnames} | TARGET_LABELS


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(deploy_text("prometheus/ooma-moh-rules.yml"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(deploy_text("grafana/ooma-moh-dashboard.json"))
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def check_names(expr: str) -> set[str]:
    """Assert ``expr`` names only exported series and known labels; the series it names."""
    refs = references(expr)
    unknown = refs.metrics - exported_series() - SCRAPE_SERIES
    assert not unknown, f"{expr}: not exported by ooma-moh: {sorted(unknown)}"
    assert refs.labels <= exported_labels(), f"{expr}: unknown labels {sorted(refs.labels - exported_labels())}"
    assert "tenant" not in refs.labels
    for job in re.findall(r'job=~?"([^"]*)"', expr):
        assert any(re.fullmatch(job, name) for name in JOBS), f"{expr}: job {job!r} matches none of {JOBS}"
    return refs.metrics


# -- the PromQL reader itself: it finds what it should and refuses what it cannot read --------------


def test_the_reader_finds_series_labels_and_functions() -> None:
    refs = references(
        'sum by (job, reason) (rate(a_total{route="ari", reason!~"x|y"}[5m])) / ignoring(reason) group_left'
        ' sum by (job) (increase(b_total[$__rate_interval])) > 0.05 and on (job) c == 1 unless {job="d"}'
    )
    assert refs.metrics == {"a_total", "b_total", "c"}
    assert refs.labels == {"job", "reason", "route"}
    assert refs.functions == {"sum", "rate", "increase"}


@pytest.mark.parametrize(
    "expr",
    [
        "rate(a_total[5m]",  # unbalanced
        "rate(a_total[5m]))",
        "rat(a_total[5m])",  # unknown function
        'a{job="x"',  # matcher block not closed
        "a{job=x}",  # unquoted value
        'a{job=="x"}',
        "a * $instance",  # a Grafana variable outside a string
        "sum by (job, 1) (a)",
    ],
)
def test_the_reader_refuses_what_is_not_promql(expr: str) -> None:
    with pytest.raises(ValueError):
        references(expr)


def test_exported_series_are_what_the_exposition_shows() -> None:
    """The suffix table matches prometheus_client: every sample it writes is in the list, and a
    made-up name is not."""
    written = {
        sample.name
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
    }
    assert written and written <= exported_series()
    assert {"ooma_moh_holds_total", "ooma_moh_hold_to_music_seconds_bucket", "ooma_moh_classes_published"} <= (
        exported_series()
    )
    assert "ooma_moh_holds_total_total" not in exported_series() and "ooma_moh_holds" not in exported_series()


# -- the alerting rules -----------------------------------------------------------------------------


def test_every_rule_is_complete() -> None:
    found = rules()
    names = [rule["alert"] for rule in found]
    assert len(names) == len(set(names)) >= 8
    for rule in found:
        assert rule["alert"].startswith("OomaMoh"), rule
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        assert rule["annotations"]["summary"].strip() and len(rule["annotations"]["description"]) > 60, rule


def test_every_rule_names_only_what_the_processes_export() -> None:
    used = set().union(*(check_names(rule["expr"]) for rule in rules()))
    # what the operators asked the rules to watch (issue 25 item 4)
    assert {
        "ooma_moh_fallbacks_total",  # holds falling back to default
        "up",  # a process down
        "ooma_moh_ari_connected",  # serve ari not ready
        "ooma_moh_agent_ready",  # a node not ready: behind
        "ooma_moh_sync_last_success_timestamp_seconds",  # a node's sync stale
        "ooma_moh_sync_errors_total",  # syncs failing
        "ooma_moh_uploads_total",  # uploads failing
    } <= used
    assert any('result="server_error"' in rule["expr"] for rule in rules() if "ooma_moh_uploads_total" in rule["expr"])


def test_a_wrong_name_in_a_rule_would_be_caught() -> None:
    with pytest.raises(AssertionError, match="not exported"):
        check_names("rate(ooma_moh_hold_total[5m])")
    with pytest.raises(AssertionError, match="unknown labels"):
        check_names('sum by (tenant) (rate(ooma_moh_holds_total{job="ooma-moh-ari"}[5m]))')
    with pytest.raises(AssertionError, match="matches none"):
        check_names('ooma_moh_ari_connected{job="ari"} == 0')


# -- the dashboard -----------------------------------------------------------------------------------


def test_the_dashboard_is_importable_with_a_datasource_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
    for variable in variables.values():  # every other variable queries through the chosen datasource
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}", variable["name"]


def test_every_dashboard_query_names_only_what_the_processes_export() -> None:
    used = set().union(*(check_names(expr) for expr in dashboard_exprs()))
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":  # Grafana's label_values(metric, label), not PromQL
            match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["query"]["query"])
            assert match, variable
            assert match[1] in exported_series() and match[2] in exported_labels(), variable
    for panel in panels():
        for target in panel["targets"]:
            assert set(re.findall(r"{{ *(\w+) *}}", target["legendFormat"])) <= exported_labels(), target
    # the panels asked for: holds and fallbacks, hold latency, uploads by result, syncs and errors,
    # node lag, readiness
    assert {
        "ooma_moh_holds_total",
        "ooma_moh_fallbacks_total",
        "ooma_moh_hold_to_music_seconds_bucket",
        "ooma_moh_uploads_total",
        "ooma_moh_sync_runs_total",
        "ooma_moh_sync_errors_total",
        "ooma_moh_sync_last_success_timestamp_seconds",
        "up",
        "ooma_moh_ari_connected",
        "ooma_moh_agent_ready",
    } <= used
    assert any("sum by (result)" in expr and "ooma_moh_uploads_total" in expr for expr in dashboard_exprs())


def test_no_tenant_anywhere_in_the_dashboard() -> None:
    """The metrics have no tenant label by design: no variable, query or legend may pretend so."""
    board = dashboard()
    assert all("tenant" not in variable["name"].lower() for variable in board["templating"]["list"])
    for panel in panels():
        for target in panel["targets"]:
            assert not re.search(r"\btenant\b\s*(=|!=|=~|!~|,|\))", target["expr"]), target["expr"]
            assert "{{tenant" not in target["legendFormat"].replace(" ", ""), target


# -- the gauges the rules read ------------------------------------------------------------------------


def test_the_agent_ready_gauge_follows_readyz() -> None:
    state: dict[str, str | None] = {"problem": "starting: the first full sync is not done yet"}
    metrics.agent_readiness(lambda: state["problem"])
    try:
        assert metrics.REGISTRY.get_sample_value("ooma_moh_agent_ready") == 0.0
        state["problem"] = None
        assert metrics.REGISTRY.get_sample_value("ooma_moh_agent_ready") == 1.0
        state["problem"] = "catalog or storage failing: …; retrying"
        assert metrics.REGISTRY.get_sample_value("ooma_moh_agent_ready") == 0.0
    finally:
        metrics.AGENT_READY.set_function(lambda: 0.0)  # what every process that is not an agent shows


def test_every_upload_result_is_exported_from_the_start() -> None:
    """An alert's increase() misses the first increment of a series that appears with it, so every
    result upload_outcome gives exists at 0 before any upload."""
    outcomes = [
        None,
        UploadRejected(Rejection.TOO_LARGE, "too large"),
        DisclaimerRequired("accept it"),
        NoLongerAuthorised("the token was revoked"),
        InvalidTenantId("bad id"),
        StorageError("disk_full", "the disk is full"),
        RuntimeError("a bug"),
    ]
    results = {upload_outcome(exc)[0] for exc in outcomes}
    assert results <= set(metrics.UPLOAD_RESULTS) and "server_error" in results
    for result in metrics.UPLOAD_RESULTS:
        assert metrics.REGISTRY.get_sample_value("ooma_moh_uploads_total", {"result": result}) is not None, result


# -- ooma-moh deploy-files --------------------------------------------------------------------------------


def shipped_in_tree() -> set[str]:
    return {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file() and p.suffix != ".py"} - {
        p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("__pycache__/*")
    }


#: what operators run (issue 25 item 4): each must ship, in the wheel and from deploy-files
OPERATORS_FILES = {
    "systemd/ooma-moh-ari.service",
    "systemd/ooma-moh-agi.service",
    "systemd/ooma-moh-http.service",
    "systemd/ooma-moh-agent.service",
    "systemd/ooma-moh.sysusers.conf",
    "systemd/ooma-moh.tmpfiles.conf",
    "systemd/ooma-moh.env.example",
    "systemd/dropins/local-postgresql.conf",
    "prometheus/ooma-moh-rules.yml",
    "grafana/ooma-moh-dashboard.json",
}


def test_deploy_files_writes_every_shipped_file_and_refuses_to_overwrite(tmp_path: Path) -> None:
    dest = tmp_path / "deploy"
    runner = CliRunner()
    wrote = runner.invoke(main, ["deploy-files", "--dest", str(dest), "--json"])
    assert wrote.exit_code == 0, wrote.output
    written = {Path(p).relative_to(dest).as_posix() for p in json.loads(wrote.output)["written"]}
    assert written == set(deploy_names()) == shipped_in_tree()
    assert written >= OPERATORS_FILES
    for name in written:
        assert (dest / name).read_bytes() == (DEPLOY / name).read_bytes(), name
    assert not list(dest.rglob("*.partial"))

    edited = dest / "systemd" / "ooma-moh.env.example"
    edited.write_text("OOMA_MOH_ARI_PASSWORD='mine'\n")
    refused = runner.invoke(main, ["deploy-files", "--dest", str(dest)])
    assert refused.exit_code == 1 and "already exist" in refused.output
    assert edited.read_text() == "OOMA_MOH_ARI_PASSWORD='mine'\n"  # nothing was written
    forced = runner.invoke(main, ["deploy-files", "--dest", str(dest), "--force"])
    assert forced.exit_code == 0, forced.output
    assert edited.read_bytes() == (DEPLOY / "systemd" / "ooma-moh.env.example").read_bytes()


def test_deploy_files_says_why_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    failed = CliRunner().invoke(main, ["deploy-files", "--dest", str(blocker / "deploy")])
    assert failed.exit_code == 1 and "cannot create" in failed.output, failed.output
