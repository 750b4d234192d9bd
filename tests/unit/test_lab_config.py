"""The lab's Asterisk configuration: the operators' files adjusted, plus the lab templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from ooma_moh.asterisk_conf import sample_names, sample_text
from ooma_moh.lab import OPERATOR_HOME, render_config
from ooma_moh.lab.config import ConfTemplate, lab_templates

SHARED = Path("/srv/lab")


def rendered() -> dict[str, str]:
    return render_config(
        shared=SHARED,
        etc=SHARED / "etc",
        moddir="/usr/lib/x86_64-linux-gnu/asterisk/modules",
        home=SHARED / "home",
        default_moh=SHARED / "moh-default",
        talk_moh=SHARED / "moh-talk",
        recordings=SHARED / "recordings",
        ari_password="s3cret",
        http_port=18088,
        sip_port=15060,
    )


def test_operator_files_are_adjusted_and_lab_parts_appended() -> None:
    config = rendered()
    assert set(config) == set(sample_names()) | {
        "asterisk.conf",
        "modules.conf",
        "logger.conf",
        "res_parking.conf",
        "queues.conf",
        "features.conf",
    }
    adjusted = (
        OPERATOR_HOME,
        "directory=/var/lib/asterisk/moh",
        "password=CHANGE_ME",
        "bindport=8088",
        "bind=127.0.0.1:5060",
    )
    for name in sample_names():  # each operator file comes first, changed only where the lab differs
        sample = sample_text(name).splitlines()
        changed = [(a, b) for a, b in zip(sample, config[name].splitlines(), strict=False) if a != b]
        assert all(any(token in a for token in adjusted) for a, _ in changed), (name, changed)
        assert len(config[name].splitlines()) >= len(sample)
    assert not any(OPERATOR_HOME in text or "CHANGE_ME" in text or "@{" in text for text in config.values())
    assert "password=s3cret" in config["ari.conf"] and "bindport=18088" in config["http.conf"]
    assert "bind=127.0.0.1:15060" in config["pjsip.conf"]
    assert config["pjsip.conf"].index("bind=127.0.0.1:15060") < config["pjsip.conf"].index("[lab-loop]")
    assert "contact=sip:lab-loop@127.0.0.1:15060" in config["pjsip.conf"]
    assert f"directory={SHARED / 'moh-default'}" in config["musiconhold.conf"]
    assert f"[lab-talk]\nmode=files\ndirectory={SHARED / 'moh-talk'}\n" in config["musiconhold.conf"]
    assert f"{SHARED / 'home'}/realtime.sqlite3" in config["res_config_sqlite3.conf"]


def test_templates_fill_paths_and_keep_asterisk_syntax() -> None:
    config = rendered()
    expected = "astetcdir => /srv/lab/etc\nastmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules\n"
    assert expected in config["asterisk.conf"]
    assert "astlogdir => /srv/lab/log\n" in config["asterisk.conf"]
    # ${...} is Asterisk's own syntax and @ is part of dial strings: both pass through untouched.
    assert " same => n,Record(/srv/lab/recordings/${NAME}.wav,0,${CUT(EXTEN,-,2)},qxk)\n" in config["extensions.conf"]
    assert "; ---- lab only: Local/rec-<seconds>-<name>@ooma-lab-record answers" in config["extensions.conf"]
    assert "noload => chan_iax2.so\n" in config["modules.conf"] and "autoload = yes\n" in config["modules.conf"]
    assert set(lab_templates()) == {
        "asterisk.conf",
        "modules.conf",
        "logger.conf",
        "pjsip.conf",
        "musiconhold.conf",
        "extensions.conf",
        "res_parking.conf",
        "queues.conf",
        "features.conf",
    }


def test_template_placeholders_must_be_known_and_well_formed() -> None:
    assert ConfTemplate("a=@{port} b=${X} c=x@ctx").substitute(port="1") == "a=1 b=${X} c=x@ctx"
    with pytest.raises(KeyError):
        ConfTemplate("contact=sip:x@127.0.0.1:@{sip_prot}").substitute(sip_port="1")
    with pytest.raises(ValueError):
        ConfTemplate("contact=@{sip-port}").substitute(sip_port="1")


def test_free_port_passes_over_a_port_some_udp_socket_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """With labs side by side, the TCP port the kernel offers can be another lab's UDP port:
    free_port tries the next one instead of failing the test that asked (seen once in 3 runs)."""
    import socket

    from ooma_moh.lab import config

    offered = iter([40001, 40002])
    held_by_udp = {40001}

    class FakeSocket:
        def __init__(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> None:
            self.kind, self.port = kind, 0

        def bind(self, address: tuple[str, int]) -> None:
            if self.kind == socket.SOCK_STREAM:
                self.port = next(offered)
            elif address[1] in held_by_udp:
                raise OSError(98, "Address already in use")

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

        def __enter__(self) -> FakeSocket:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr("ooma_moh.lab.config.socket.socket", FakeSocket)
    assert config.free_port() == 40002
