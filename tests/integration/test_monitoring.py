"""The shipped alerting rules and dashboard through Prometheus's own tools: ``promtool`` (from
Debian's ``prometheus`` package; scripts/bootstrap extracts it into ``.venv/bin``, since installing
the package would also start a Prometheus server).

- ``promtool check rules`` accepts the rules file as shipped, and the dashboard's queries written
  as recording rules (Grafana's ``$__rate_interval`` and ``$instance`` replaced by what Grafana
  sends): Prometheus's parser, where tests/unit/test_deploy_files.py only tokenizes.
- ``promtool test rules`` feeds made-up series to the shipped rules and checks, alert by alert,
  that it fires for the sick process and stays silent for the healthy one, for another job's zero
  gauge, and once the problem is over. The annotations are left out of the copy under test (their
  wording is not what is tested here); expressions, ``for`` and labels are the shipped ones.

A missing promtool fails these tests with the way to get it: nothing is skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ooma_moh.deploy import deploy_text

RULES = "prometheus/ooma-moh-rules.yml"
N1, N2 = "node-1.example:9484", "node-2.example:9484"


def promtool() -> str:
    found = shutil.which("promtool") or shutil.which("promtool", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("promtool is missing: run scripts/bootstrap (it extracts it from Debian's prometheus package)")
    return found


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *argv], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_the_shipped_rules(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(deploy_text(RULES))
    checked = run("check", "rules", "rules.yml", cwd=tmp_path)
    alerts = [r for g in yaml.safe_load(deploy_text(RULES))["groups"] for r in g["rules"]]
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts)} rules found" in checked.stdout


def test_promtool_would_refuse_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a rule whose expression does not parse is refused."""
    broken = deploy_text(RULES).replace("expr: up{job=~", "expr: up{{job=~", 1)
    assert broken != deploy_text(RULES)
    (tmp_path / "rules.yml").write_text(broken)
    assert run("check", "rules", "rules.yml", cwd=tmp_path).returncode != 0


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    board = json.loads(deploy_text("grafana/ooma-moh-dashboard.json"))
    recorded = [
        {
            "record": f"ooma_moh_dashboard:panel_{panel['id']}_{target['refId']}",
            "expr": target["expr"].replace("$__rate_interval", "1m").replace("$instance", ".*"),
        }
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
    assert len(recorded) >= 20
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    checked = run("check", "rules", "dashboard.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    """One input series of a promtool test (``values`` in promtool's notation: ``0+60x30``)."""
    return {"series": name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}", "values": values}


def expect(alert: str, at: str, *firing: dict[str, str]) -> dict[str, Any]:
    """An alert_rule_test: at ``at``, ``alert`` fires exactly for ``firing`` (label sets)."""
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": labels} for labels in firing]}


ARI = {"job": "ooma-moh-ari", "instance": "node-1.example:9481"}
ARI2 = {"job": "ooma-moh-ari", "instance": "node-2.example:9481"}
AGI = {"job": "ooma-moh-agi", "instance": "node-1.example:9482"}
HTTP = {"job": "ooma-moh-http", "instance": "moh.example:9483"}
AGENT, AGENT2 = {"job": "ooma-moh-agent", "instance": N1}, {"job": "ooma-moh-agent", "instance": N2}
WARN, CRIT = {"severity": "warning"}, {"severity": "critical"}

CASES: list[dict[str, Any]] = [
    {  # node 1: 10 % of holds on default because the catalog is down; node 2: 50 % by the tenants' choice
        "input_series": [
            series("ooma_moh_holds_total", "0+60x60", action="started", outcome="tenant", **ARI),
            series("ooma_moh_fallbacks_total", "0+6x60", route="ari", reason="catalog_unavailable", **ARI),
            series("ooma_moh_holds_total", "0+60x60", action="started", outcome="tenant", **ARI2),
            series("ooma_moh_fallbacks_total", "0+30x60", route="ari", reason="tenant_on_default", **ARI2),
            series("ooma_moh_agi_requests_total", "0+60x60", result="ok", **AGI),
            series("ooma_moh_fallbacks_total", "0+12x60", route="agi", reason="unknown_tenant", **AGI),
        ],
        "alert_rule_test": [
            expect("OomaMohHoldsFallingBackToDefault", "10m"),  # pending: for 15m
            expect("OomaMohHoldsFallingBackToDefault", "40m", {**ARI, **WARN, "reason": "catalog_unavailable"}),
            expect("OomaMohDialplanFallingBackToDefault", "40m", {**AGI, **WARN, "reason": "unknown_tenant"}),
            expect("OomaMohCatalogUnavailableForCalls", "40m", {**ARI, **CRIT, "route": "ari"}),
        ],
    },
    {  # a process down; another exporter down; an ooma-moh process up
        "input_series": [
            series("up", "0x20", **AGI),
            series("up", "0x20", job="node", instance="node-1.example:9100"),
            series("up", "1x20", **ARI),
        ],
        "alert_rule_test": [expect("OomaMohProcessDown", "10m", {**AGI, **CRIT})],
    },
    {  # the agent on node 1 restarting every 2 min; node 2 started once
        "input_series": [
            series("ooma_moh_process_start_time_seconds", "100 100 220 220 340 340 460 460", **AGENT),
            series("ooma_moh_process_start_time_seconds", "100x7", **AGENT2),
        ],
        "alert_rule_test": [expect("OomaMohProcessRestarting", "7m", {**AGENT, **WARN})],
    },
    {  # ARI lost on node 1; serve agi's gauge is 0 by nature; node 2 connected
        "input_series": [
            series("ooma_moh_ari_connected", "0x20", **ARI),
            series("ooma_moh_ari_connected", "0x20", **AGI),
            series("ooma_moh_ari_connected", "1x20", **ARI2),
        ],
        "alert_rule_test": [
            expect("OomaMohAriNotConnected", "3m"),  # pending: for 5m
            expect("OomaMohAriNotConnected", "10m", {**ARI, **CRIT}),
        ],
    },
    {  # node 1's agent not ready and its last success stuck at 60 s; node 2 syncing every minute;
        # serve http's gauges (never an agent's) stay 0
        "input_series": [
            series("ooma_moh_agent_ready", "0x40", **AGENT),
            series("ooma_moh_agent_ready", "1x40", **AGENT2),
            series("ooma_moh_agent_ready", "0x40", **HTTP),
            series("ooma_moh_sync_last_success_timestamp_seconds", "60x40", **AGENT),
            series("ooma_moh_sync_last_success_timestamp_seconds", "0+60x40", **AGENT2),
            series("ooma_moh_sync_last_success_timestamp_seconds", "0x40", **HTTP),
        ],
        "alert_rule_test": [
            expect("OomaMohNodeNotReady", "30m", {**AGENT, **WARN}),
            expect("OomaMohNodeSyncStale", "15m"),  # 900 s not passed yet
            expect("OomaMohNodeSyncStale", "30m", {**AGENT, **WARN}),
        ],
    },
    {  # node 1's syncs fail every minute; node 2 failed once
        "input_series": [
            series("ooma_moh_sync_errors_total", "0+1x30", reason="asterisk", **AGENT),
            series("ooma_moh_sync_errors_total", "0 0 0 1x27", reason="blob_store_unreachable", **AGENT2),
        ],
        "alert_rule_test": [expect("OomaMohSyncFailing", "20m", {**AGENT, **WARN, "reason": "asterisk"})],
    },
    {  # one upload failed on the server's side at 5 min; files refused every minute are not a failure
        "input_series": [
            series("ooma_moh_uploads_total", "0x4 1x60", result="server_error", **HTTP),
            series("ooma_moh_uploads_total", "0+1x64", result="rejected", **HTTP),
        ],
        "alert_rule_test": [
            expect("OomaMohUploadsFailing", "3m"),
            expect("OomaMohUploadsFailing", "10m", {**HTTP, **WARN}),
            expect("OomaMohUploadsFailing", "50m"),  # 30 min later, over
        ],
    },
]


def test_each_alert_fires_for_the_sick_process_only(tmp_path: Path) -> None:
    document = yaml.safe_load(deploy_text(RULES))
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(document))
    tested = {test["alertname"] for case in CASES for test in case["alert_rule_test"]}
    assert tested == {rule["alert"] for group in document["groups"] for rule in group["rules"]}  # each alert
    cases = [{"interval": "1m", **case} for case in CASES]
    (tmp_path / "tests.yml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": cases})
    )
    result = run("test", "rules", "tests.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_would_catch_a_wrong_expectation(tmp_path: Path) -> None:
    """The test above can fail: expecting the healthy node 2 to alert too is refused."""
    document = yaml.safe_load(deploy_text(RULES))
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(document))
    wrong = {
        **CASES[3],
        "alert_rule_test": [expect("OomaMohAriNotConnected", "10m", {**ARI, **CRIT}, {**ARI2, **CRIT})],
    }
    (tmp_path / "tests.yml").write_text(
        yaml.safe_dump(
            {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{"interval": "1m", **wrong}]}
        )
    )
    result = run("test", "rules", "tests.yml", cwd=tmp_path)
    assert result.returncode != 0 and "OomaMohAriNotConnected" in result.stdout + result.stderr
