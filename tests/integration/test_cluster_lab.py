"""The cluster with real Asterisks: two lab Asterisk nodes, each with its own agent, one shared
PostgreSQL catalog and S3 bucket. A caller on each node hears what the tenant uploaded, a caller
already listening on node 2 during a replacement hears the old file whole, and after a delete
both nodes play ``default``."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ooma_moh.config import Settings
from ooma_moh.lab import DEFAULT_TONE, LabAsterisk, free_port
from ooma_moh.lab.ari import AriHarness, Call
from tests.integration.conftest import (
    hold_figures,
    longest_silence,
    reset_lab,
    running_lab,
    tones_heard,
    wait_for_port,
)
from tests.integration.test_agi_asterisk import A, assert_hold_music, held_call
from tests.integration.test_agi_protocol import run_classic_agi
from tests.integration.test_blob_backends import upload_tone
from tests.integration.test_cluster import Node, delete
from tests.integration.test_http_lab import start_listener
from tests.integration.test_metrics import get, scrape, start, stop, total, wait_until
from tests.integration.test_sync_asterisk import assert_hears
from tests.postgres import PostgresServer, wait_until_down

FIRST, SECOND = 520.0, 780.0


@pytest.fixture(scope="module")
def second_lab(lab_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabAsterisk]:
    """A second lab Asterisk (own ports, MOH directory, realtime database), for this module."""
    with running_lab(tmp_path_factory.mktemp("lab2")) as instance:
        yield instance


@pytest.fixture
def nodes(lab: LabAsterisk, second_lab: LabAsterisk, s3_settings: Settings) -> Iterator[tuple[Node, Node]]:
    """An agent on each lab, both on the shared catalog and bucket."""
    started = []
    for name, instance in (("node-1", lab), ("node-2", second_lab)):
        reset_lab(instance)
        settings = Settings(
            **instance.settings_overrides(),
            publish_mode="realtime",
            retain_old_s=0,
            node_id=name,
            database_url=s3_settings.database_url,
            blob_url=s3_settings.blob_url,
            s3_endpoint_url=s3_settings.s3_endpoint_url,
            agent_reconcile_s=5.0,
        )
        node = Node(settings)
        node.start()
        started.append(node)
    try:
        yield started[0], started[1]
    finally:
        for node in started:
            node.stop()
        for instance in (lab, second_lab):
            reset_lab(instance)
    for node in started:
        assert "Traceback" not in node.log.read_text(), node.log.read_text()


def test_each_node_plays_the_upload_whole_and_default_after_delete(
    lab: LabAsterisk, second_lab: LabAsterisk, nodes: tuple[Node, Node], s3_settings: Settings, tmp_path: Path
) -> None:
    node1, node2 = nodes
    labs = {"node-1": lab, "node-2": second_lab}
    first = upload_tone(s3_settings, "acme", FIRST, tmp_path)
    committed = time.monotonic()
    lag = {
        n.settings.node_id: round(n.wait_for({"tenant-acme": first.version}, since=committed), 3)
        for n in (node1, node2)
    }
    print(f"catalog commit -> published on each Asterisk node (s): {lag}")
    for name, instance in labs.items():
        assert_hears(
            tones_heard(instance.record(f"cluster_{name.replace('-', '')}_first", 2, "tenant-acme"), [FIRST, SECOND]),
            FIRST,
        )

    listening = start_listener(second_lab, "cluster_listener")  # on hold on node 2 during the change
    second = upload_tone(s3_settings, "acme", SECOND, tmp_path)
    for node in (node1, node2):
        node.wait_for({"tenant-acme": second.version})
    for name, instance in labs.items():
        assert_hears(
            tones_heard(instance.record(f"cluster_{name.replace('-', '')}_second", 2, "tenant-acme"), [FIRST, SECOND]),
            SECOND,
        )
    old = tones_heard(second_lab.wait_recording(listening), [FIRST, SECOND])
    assert longest_silence(old) <= 1, old
    assert all(w == FIRST for w in old[1:]), old  # the old file to the end: no gap, no mix

    delete(s3_settings, "acme")
    for node in (node1, node2):
        node.wait_for({"tenant-acme": None})
    for name, instance in labs.items():
        assert_hears(
            tones_heard(instance.record(f"cluster_{name.replace('-', '')}_deleted", 2, "tenant-acme"), [FIRST, SECOND]),
            DEFAULT_TONE,
        )


def test_a_node_restarted_agent_and_asterisk_keep_playing(
    lab: LabAsterisk, second_lab: LabAsterisk, nodes: tuple[Node, Node], s3_settings: Settings, tmp_path: Path
) -> None:
    """Node 2's agent is killed: node 2's callers keep hearing the last published file (it is on
    its own disk), and a change made meanwhile reaches node 2 when its agent is back."""
    node1, node2 = nodes
    first = upload_tone(s3_settings, "acme", FIRST, tmp_path)
    for node in (node1, node2):
        node.wait_for({"tenant-acme": first.version})
    node2.stop(signal.SIGKILL)
    second = upload_tone(s3_settings, "acme", SECOND, tmp_path)
    node1.wait_for({"tenant-acme": second.version})
    assert_hears(tones_heard(second_lab.record("cluster_agent_down", 2, "tenant-acme"), [FIRST, SECOND]), FIRST)
    node2.start()
    node2.wait_for({"tenant-acme": second.version})
    assert_hears(tones_heard(second_lab.record("cluster_agent_back", 2, "tenant-acme"), [FIRST, SECOND]), SECOND)


def test_a_restarted_asterisk_plays_what_its_agent_rechecked(
    lab: LabAsterisk, second_lab: LabAsterisk, nodes: tuple[Node, Node], s3_settings: Settings, tmp_path: Path
) -> None:
    """Node 2's Asterisk is down while the tenant's music changes, and its files are lost
    meanwhile (a disk restored from an old image): the agent publishes the change without it, its
    next reconcile rebuilds the lost version directory, and once Asterisk is back its callers hear
    the new file."""
    node1, node2 = nodes
    first = upload_tone(s3_settings, "acme", FIRST, tmp_path)
    for node in (node1, node2):
        node.wait_for({"tenant-acme": first.version})
    second_lab.halt()
    try:
        second = upload_tone(s3_settings, "acme", SECOND, tmp_path)
        for node in (node1, node2):
            node.wait_for({"tenant-acme": second.version})
        published = node2.settings.moh_dir / "tenant-acme" / second.version
        shutil.rmtree(node2.settings.moh_dir / "tenant-acme")
    finally:
        second_lab.boot()
    deadline = time.monotonic() + 3 * node2.settings.agent_reconcile_s + 10
    while not (published.is_dir() and len(list(published.iterdir())) == len(second.renditions)):
        assert time.monotonic() < deadline, f"node 2's agent did not rebuild {published}"
        assert node2.alive(), node2.log.read_text()[-3000:]
        time.sleep(0.1)
    assert_hears(tones_heard(second_lab.record("cluster_asterisk_back", 2, "tenant-acme"), [FIRST, SECOND]), SECOND)
    assert_hears(tones_heard(lab.record("cluster_other_node", 2, "tenant-acme"), [FIRST, SECOND]), SECOND)


def test_with_the_catalog_down_every_hold_path_plays_the_tenants_file(
    lab: LabAsterisk,
    ari_lab: AriHarness,
    second_lab: LabAsterisk,
    nodes: tuple[Node, Node],
    s3_settings: Settings,
    postgres: PostgresServer,
    tmp_path: Path,
) -> None:
    """PostgreSQL stops: node 1's `serve agi` and `serve ari`, started during the outage, serve
    holds from the classes node 1 publishes — a dialplan hold through FastAGI, a Stasis bridge
    hold and the classic AGI script all give the tenant's file, not ``default`` — and `/readyz`
    says they are degraded and why. PostgreSQL back: they are ready again at the first probe and
    a change reaches the nodes. The hold statistics (issue 22) counted during the outage are
    written once PostgreSQL is back, and node 2's handler adds its own holds to the same days."""
    node1, node2 = nodes
    alpha = upload_tone(s3_settings, "alpha", A, tmp_path)
    for node in (node1, node2):
        node.wait_for({"tenant-alpha": alpha.version})
    settings = node1.settings
    agi_port, agi_metrics, ari_metrics = free_port(), free_port(), free_port()
    log = tmp_path / "hold-paths.log"
    started: list[subprocess.Popen[bytes]] = []  # stopped whatever happens: none may outlive the test
    try:
        postgres.stop_server("immediate")
        try:
            wait_until_down(settings.database_url)
            agi_listen = ("--listen", f"127.0.0.1:{agi_port}", "--metrics-listen", f"127.0.0.1:{agi_metrics}")
            started.append(start(settings, log, "serve", "agi", *agi_listen))
            started.append(start(settings, log, "serve", "ari", "--metrics-listen", f"127.0.0.1:{ari_metrics}"))
            agi, ari = started
            for port, proc in ((agi_port, agi), (agi_metrics, agi), (ari_metrics, ari)):
                wait_for_port(port, proc)
            for port in (agi_metrics, ari_metrics):
                wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, "ready")  # noqa: B023
                status, said = get(f"http://127.0.0.1:{port}/readyz")
                assert said.startswith("ready, degraded: holds served from this node's 1 published classes"), said

            lab.cli(f"dialplan set global OOMA_MOH_AGI agi://127.0.0.1:{agi_port}")
            windows, hold_t, unhold_t = held_call(lab, ari_lab, "pgdown_fastagi", "arg-alpha@ooma-lab-agi-call")
            assert_hold_music(windows, hold_t, unhold_t, A)
            # serve ari saw that dialplan bridge's hold too: not its to play, not an error, not a fallback
            wait_until(lambda: "hold action=outside-stasis" in log.read_text(), "the dialplan hold seen by serve ari")
            quiet = scrape(ari_metrics)
            assert total(quiet, "ooma_moh_ari_event_errors_total") == 0
            assert total(quiet, "ooma_moh_fallbacks_total") == 0

            held_for = unhold_t - hold_t  # the FastAGI dialplan hold
            call = Call(ari_lab, lab, "pgdown_ari", "alpha", 4)
            call.record_bridge()
            call.at(1.0)
            ari_hold = call.hold()
            call.at(2.5)
            held_for += call.unhold() - ari_hold
            heard = tones_heard(call.finish(), [A])
            assert heard.count(A) >= 10, heard  # the tenant's tone, not default, for the 1.5 s of the hold

            values, said = run_classic_agi(settings, "alpha")
            assert values["CHANNEL(musicclass)"] == "tenant-alpha", said
        finally:
            postgres.start_server()
        for port in (agi_metrics, ari_metrics):  # the first probe after the restart finds the catalog
            assert get(f"http://127.0.0.1:{port}/readyz") == (200, "ready\n")
        second = upload_tone(s3_settings, "alpha", SECOND, tmp_path)
        for node in (node1, node2):
            node.wait_for({"tenant-alpha": second.version}, timeout=60)
        figures = hold_figures(settings, "alpha", 2)  # kept in memory through the outage
        assert (figures.holds, figures.hung_up, figures.fallback) == (2, 0, 0), figures
        assert abs(figures.seconds - held_for) <= 0.5, (figures.seconds, held_for)
        started.append(start(node2.settings, log, "serve", "ari"))  # node 2's handler, same catalog
        wait_until(lambda: log.read_text().count("resynced") >= 2, "node 2's handler connected")
        harness = AriHarness(second_lab).start()
        try:
            on_node2 = Call(harness, second_lab, "node2_ari", "alpha", 3)
            on_node2.at(1.0)
            node2_hold = on_node2.hold()
            on_node2.at(2.0)
            held_for += on_node2.unhold() - node2_hold
            on_node2.finish()
        finally:
            harness.stop()
        figures = hold_figures(settings, "alpha", 3)
        assert (figures.holds, figures.fallback) == (3, 0) and abs(figures.seconds - held_for) <= 0.5, figures
    finally:
        for proc in started:
            stop(proc, log)
    assert " WARNING " not in log.read_text() and " ERROR " not in log.read_text(), log.read_text()
