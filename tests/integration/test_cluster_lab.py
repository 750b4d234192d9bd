"""The cluster with real Asterisks: two lab Asterisk nodes, each with its own agent, one shared
PostgreSQL catalog and S3 bucket. A caller on each node hears what the tenant uploaded, a caller
already listening on node 2 during a replacement hears the old file whole, and after a delete
both nodes play ``default``."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ooma_moh.config import Settings
from ooma_moh.lab import DEFAULT_TONE, LabAsterisk
from tests.integration.conftest import longest_silence, reset_lab, running_lab, tones_heard
from tests.integration.test_blob_backends import upload_tone
from tests.integration.test_cluster import Node, delete
from tests.integration.test_http_lab import start_listener
from tests.integration.test_sync_asterisk import assert_hears

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
