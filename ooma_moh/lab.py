"""The lab Asterisk: a real Asterisk 22 from Debian's packages, in a chroot, for tests and the demo.

Provisioned once into a cache directory (``OOMA_MOH_LAB_ROOT``, default
``~/.cache/ooma-moh/lab-root``): ``debootstrap --variant=minbase sid`` from the Debian mirror this
machine's apt already uses, then ``apt-get install asterisk asterisk-modules`` inside. About a
minute and 700 MB. The build goes to ``<root>.partial`` and is renamed when complete, so an
interrupted provisioning is simply redone.

Each :class:`LabAsterisk` gets a *shared* directory, bind-mounted into the chroot at the same
absolute path so paths written by Python are valid for Asterisk, holding its generated
configuration (from ``asterisk_conf/`` plus lab-only bits: ARI password, ports, a PJSIP loopback
endpoint, recording dialplan, a ``default`` class playing :data:`DEFAULT_TONE`), its run, log and
spool directories, and the ooma-moh home the tests use. Two lab classes play known tones:
``default`` (:data:`DEFAULT_TONE`) and ``lab-talk`` (:data:`TALK_TONE`, a called party talking). HTTP and SIP listen on free 127.0.0.1
ports, so a system Asterisk is never disturbed.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .asterisk_cli import AsteriskCli
from .errors import AsteriskError

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_SOURCE = PACKAGE_DIR.parent / "asterisk_conf"
DEFAULT_TONE = 300.0
TALK_TONE = 1000.0
LAB_ARI_USER = "ooma-moh"
OPERATOR_HOME = "/var/lib/ooma-moh"
NOLOAD = (
    # modules that bind ports of their own or need hardware/services the lab does not have
    "chan_iax2", "pbx_dundi", "chan_unistim", "chan_console", "chan_motif", "res_xmpp", "chan_mobile",
    "app_voicemail_odbc", "app_voicemail_imap", "res_config_ldap", "cdr_radius", "cel_radius",
    "res_hep", "res_hep_pjsip", "res_hep_rtcp", "res_phoneprov", "res_pjsip_phoneprov_provider",
    "res_stir_shaken", "res_pjsip_stir_shaken", "res_fax_spandsp", "res_smdi", "res_prometheus",
    "res_calendar", "res_calendar_caldav", "res_calendar_ews", "res_calendar_exchange",
    "res_calendar_icalendar", "chan_audiosocket", "res_audiosocket", "app_jack",
)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (never hard-coded in the repository)."""
    files = sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list"]
    for name in files:
        try:
            text = Path(name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("URIs:"):
                for uri in line.split()[1:]:
                    if "security" not in uri:
                        return uri
            match = re.match(r"deb\s+(?:\[[^\]]*\]\s+)?(\S+)", line)
            if match and "security" not in match.group(1):
                return match.group(1)
    raise AsteriskError("no Debian mirror found in /etc/apt: cannot provision the lab Asterisk")


def default_root() -> Path:
    """Where the provisioned chroot is cached."""
    env = os.environ.get("OOMA_MOH_LAB_ROOT")
    return Path(env) if env else Path.home() / ".cache" / "ooma-moh" / "lab-root"


def _run(argv: list[str], what: str, timeout: float = 900) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AsteriskError(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise AsteriskError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc.stdout


def _mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mounts") as fh:
        return any(line.split()[1] == target for line in fh)


def _umount(path: Path) -> None:
    if _mounted(path):
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def provision(root: Path | None = None, log=print) -> Path:  # type: ignore[no-untyped-def]
    """Build the chroot with Asterisk if it is not cached yet; return its path."""
    root = root or default_root()
    if (root / "usr/sbin/asterisk").exists():
        return root
    if os.geteuid() != 0:
        raise AsteriskError("the lab Asterisk needs root (debootstrap, chroot, mount)")
    if shutil.which("debootstrap") is None:
        raise AsteriskError("debootstrap is not installed: run scripts/bootstrap")
    partial = root.with_name(root.name + ".partial")
    _umount(partial / "proc")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    log(f"lab: debootstrap sid into {partial} (about a minute)")
    _run(["debootstrap", "--variant=minbase", "sid", str(partial), mirror], "debootstrap")
    subprocess.run(["mount", "-t", "proc", "proc", str(partial / "proc")], check=True)
    try:
        log("lab: apt-get install asterisk asterisk-modules")
        env = "DEBIAN_FRONTEND=noninteractive"
        _run(["chroot", str(partial), "sh", "-c",
              "apt-get -q -o Acquire::Check-Valid-Until=false update && "
              f"{env} apt-get install -y -q --no-install-recommends asterisk asterisk-modules && apt-get clean"],
             "apt-get install asterisk")
    finally:
        _umount(partial / "proc")
    os.rename(partial, root)
    return root


def free_port() -> int:
    """A TCP/UDP port on 127.0.0.1 that nothing uses right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", port))
        return port


LAB_PJSIP = """
; ---- lab only: a loopback endpoint, so one Asterisk can place a SIP call to itself and a
; re-INVITE a=sendonly (a real SIP hold) reaches the other leg.
[lab-loop]
type=endpoint
transport=transport-udp
context=ooma-lab-from-loop
disallow=all
allow=ulaw
aors=lab-loop
moh_passthrough=yes
direct_media=no
rtp_symmetric=yes

[lab-loop]
type=aor
contact=sip:lab-loop@127.0.0.1:{sip_port}

[lab-loop-identify]
type=identify
endpoint=lab-loop
match=127.0.0.1
"""

LAB_MOH = """
; ---- lab only: what a called party "says" in tests (a steady tone), started on it through ARI.
[lab-talk]
mode=files
directory={talk}
"""

LAB_DIALPLAN = """
; ---- lab only: Local/rec-<seconds>-<name>@ooma-lab-record answers, records <seconds> s of what
; it hears into {recordings}/<name>.wav, then marks it done and hangs up.
[ooma-lab-record]
exten => _rec-X.,1,Answer()
 same => n,Set(NAME=${{CUT(EXTEN,-,3-)}})
 same => n,Record({recordings}/${{NAME}}.wav,0,${{CUT(EXTEN,-,2)}},qxk)
 same => n,Hangup()
; also when the call ends early (the recording is kept: option k)
exten => h,1,System(touch {recordings}/${{NAME}}.done)

; ---- lab only: dialplan calls for the AGI route. Local/rec-...@ooma-lab-record/n with extension
; <how>-<tenant>@ooma-lab-agi-call: attach the class through AGI (tenant given as argument, as
; variable, as accountcode, or not at all), then Dial the loopback endpoint; its far leg enters
; Stasis(ooma-lab), where a test can hold it (a real SIP re-INVITE a=sendonly). OOMA_MOH_AGI comes
; from the [globals] of asterisk_conf/extensions.conf; tests point it at their server.
[ooma-lab-agi-call]
exten => _arg-.,1,AGI(${{OOMA_MOH_AGI}}/moh,${{CUT(EXTEN,-,2-)}})
 same => n,Goto(dial,1)
exten => _query-.,1,AGI(${{OOMA_MOH_AGI}}/moh?tenant=${{CUT(EXTEN,-,2-)}})
 same => n,Goto(dial,1)
exten => _var-.,1,Set(OOMA_MOH_TENANT=${{CUT(EXTEN,-,2-)}})
 same => n,AGI(${{OOMA_MOH_AGI}}/moh)
 same => n,Goto(dial,1)
exten => _acct-.,1,Set(CHANNEL(accountcode)=${{CUT(EXTEN,-,2-)}})
 same => n,AGI(${{OOMA_MOH_AGI}}/moh)
 same => n,Goto(dial,1)
exten => none,1,AGI(${{OOMA_MOH_AGI}}/moh)
 same => n,Goto(dial,1)
exten => dial,1,Verbose(1,ooma-lab: class ${{CHANNEL(musicclass)}} OOMA_MOH_CLASS=${{OOMA_MOH_CLASS}} AGISTATUS=${{AGISTATUS}})
 same => n,Dial(PJSIP/lab-loop,20)
 same => n,Hangup()

[ooma-lab-from-loop]
exten => lab-loop,1,Answer()
 same => n,Stasis(ooma-lab,phone-${{PJSIP_HEADER(read,X-Lab-Call)}})
 same => n,Hangup()

; ---- lab only: Local/rec-...@ooma-lab-record/n with extension caller-<name>@ooma-lab-stasis: a
; recorded caller handed to the ooma-lab Stasis application (tests bridge it with a "phone").
[ooma-lab-stasis]
exten => _caller-.,1,Stasis(ooma-lab,${{EXTEN}})
 same => n,Hangup()

; ---- lab only: a third party that only talks (Local/talk@ooma-lab-talker, its ;1 put into an
; ARI bridge by a test): a 1004 Hz milliwatt tone, close enough to TALK_TONE to count as talk.
; (Not MusicOnHold: observed to play the class the handler presets on ;1, not lab-talk.)
[ooma-lab-talker]
exten => talk,1,Answer()
 same => n,Milliwatt()

; ---- lab only: device-state churn, as a busy PBX has (every call start and end changes one):
; Local/churn@ooma-lab-churn flips Custom:lab-churn about 50 times a second until hung up.
[ooma-lab-churn]
exten => churn,1,Answer()
 same => n(flip),Set(DEVICE_STATE(Custom:lab-churn)=INUSE)
 same => n,Set(DEVICE_STATE(Custom:lab-churn)=NOT_INUSE)
 same => n,Wait(0.02)
 same => n,Goto(flip)

; ---- lab only: Local/mohstart-<class>@ooma-lab-mohstart times StartMusicOnHold(<class>) (the
; class lookup, realtime or not, and its directory scan) into {recordings}/<class>.start.
[ooma-lab-mohstart]
exten => _mohstart-.,1,Set(CLASS=${{CUT(EXTEN,-,2-)}})
 same => n,Set(T0=${{STRFTIME(,,%s.%6q)}})
 same => n,StartMusicOnHold(${{CLASS}})
 same => n,Set(T1=${{STRFTIME(,,%s.%6q)}})
 same => n,System(echo ${{T0}} ${{T1}} > {recordings}/${{CLASS}}.start)
 same => n,Hangup()
"""


class LabAsterisk:
    """One running lab Asterisk. Use as a context manager, or call start() and stop()."""

    def __init__(self, shared: Path, root: Path | None = None) -> None:
        self.root = (root or default_root()).resolve()
        self.shared = shared.resolve()
        self.etc = self.shared / "etc"
        self.home = self.shared / "home"
        self.recordings = self.shared / "recordings"
        self.default_moh = self.shared / "moh-default"
        self.talk_moh = self.shared / "moh-talk"
        self.http_port = free_port()
        self.sip_port = free_port()
        self.ari_user = LAB_ARI_USER
        self.ari_password = secrets.token_hex(12)
        self._process: subprocess.Popen[bytes] | None = None
        self._mounted: list[Path] = []

    # -- configuration ---------------------------------------------------------------------
    @property
    def ari_url(self) -> str:
        """Base URL of the lab's ARI (``/ari`` is appended by the client)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def cli_argv(self) -> list[str]:
        """argv prefix that runs one Asterisk CLI command (append the command)."""
        return ["chroot", str(self.root), "asterisk", "-C", str(self.etc / "asterisk.conf"), "-rx"]

    @property
    def asterisk_cli(self) -> str:
        """:attr:`cli_argv` as the string ``OOMA_MOH_ASTERISK_CLI`` expects."""
        return shlex.join(self.cli_argv)

    def settings_overrides(self) -> dict[str, object]:
        """Settings that point ooma-moh at this lab."""
        return {"home": self.home, "ari_url": self.ari_url, "ari_user": self.ari_user,
                "ari_password": self.ari_password, "asterisk_cli": self.asterisk_cli}

    def _write_config(self) -> None:
        for sub in ("etc", "run", "log", "spool/recording", "db", "recordings", "moh-default", "moh-talk", "home"):
            (self.shared / sub).mkdir(parents=True, exist_ok=True)
        moddir = next(iter(glob.glob(str(self.root / "usr/lib/*/asterisk/modules"))), None)
        if moddir is None:
            raise AsteriskError(f"no Asterisk modules under {self.root}")
        s = self.shared
        files = {
            "asterisk.conf": (
                "[directories]\n"
                f"astetcdir => {self.etc}\nastmoddir => {moddir[len(str(self.root)):]}\n"
                "astvarlibdir => /var/lib/asterisk\nastdatadir => /usr/share/asterisk\n"
                "astkeydir => /var/lib/asterisk\nastagidir => /usr/share/asterisk/agi-bin\n"
                f"astdbdir => {s / 'db'}\nastspooldir => {s / 'spool'}\nastrundir => {s / 'run'}\n"
                f"astlogdir => {s / 'log'}\nastsbindir => /usr/sbin\n"
                "[options]\nverbose = 3\nnocolor = yes\ndocumentation_language = en_US\n"
            ),
            "modules.conf": "[modules]\nautoload = yes\n" + "".join(f"noload => {m}.so\n" for m in NOLOAD),
            "logger.conf": "[general]\n[logfiles]\nmessages.log => notice,warning,error,verbose(3)\n",
        }
        for name in ("musiconhold.conf", "extconfig.conf", "res_config_sqlite3.conf", "ari.conf",
                     "http.conf", "pjsip.conf", "extensions.conf"):
            text = (CONF_SOURCE / name).read_text()
            text = text.replace(OPERATOR_HOME, str(self.home))
            text = text.replace("directory=/var/lib/asterisk/moh", f"directory={self.default_moh}")
            text = text.replace("password=CHANGE_ME", f"password={self.ari_password}")
            text = text.replace("bindport=8088", f"bindport={self.http_port}")
            text = text.replace("bind=127.0.0.1:5060", f"bind=127.0.0.1:{self.sip_port}")
            files[name] = text
        files["pjsip.conf"] += LAB_PJSIP.format(sip_port=self.sip_port)
        files["musiconhold.conf"] += LAB_MOH.format(talk=self.talk_moh)
        files["extensions.conf"] += LAB_DIALPLAN.format(recordings=self.recordings)
        for name, text in files.items():
            (self.etc / name).write_text(text)

    def _write_tone_classes(self) -> None:
        """Music for the lab's own classes: ``default`` (:data:`DEFAULT_TONE`) and ``lab-talk``
        (:data:`TALK_TONE`, what a called party "says" in tests), in every rendition."""
        from .config import Settings
        from .media import FfmpegConverter, synth_sample

        settings = Settings(home=self.home)
        for directory, freq in ((self.default_moh, DEFAULT_TONE), (self.talk_moh, TALK_TONE)):
            if len(list(directory.glob("tone.*"))) == 5:
                continue
            work = self.shared / f"tone-work-{int(freq)}"
            work.mkdir(exist_ok=True)
            sample = synth_sample(settings, work / "tone.mp3", freq, 20.0)
            for ext, path in FfmpegConverter(settings).convert(sample, work).files.items():
                os.replace(path, directory / f"tone.{ext}")
            shutil.rmtree(work)

    # -- lifecycle -------------------------------------------------------------------------
    def _mount(self, source: str, target: Path, *options: str) -> None:
        target.mkdir(parents=True, exist_ok=True)
        if _mounted(target):
            return
        _run(["mount", *options, source, str(target)], f"mount {target}", timeout=30)
        self._mounted.append(target)

    def start(self, timeout: float = 90.0) -> "LabAsterisk":
        """Provision if needed, mount, configure and boot Asterisk; wait until fully booted."""
        provision(self.root)
        self.shared.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._write_tone_classes()
        self._mount("proc", self.root / "proc", "-t", "proc")
        self._mount(str(self.shared), self.root / str(self.shared).lstrip("/"), "--bind")
        self.boot(timeout)
        return self

    def boot(self, timeout: float = 90.0) -> None:
        """Start the Asterisk process (mounts and config already in place) and wait for it."""
        log = open(self.shared / "log" / "console.log", "ab")
        self._process = subprocess.Popen(
            ["chroot", str(self.root), "asterisk", "-C", str(self.etc / "asterisk.conf"), "-f", "-n", "-g"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AsteriskError(f"lab Asterisk exited during boot (code {self._process.returncode});"
                                    f" see {self.shared / 'log' / 'console.log'}")
            probe = subprocess.run([*self.cli_argv, "core waitfullybooted"], capture_output=True, timeout=60,
                                   check=False)
            if probe.returncode == 0 and b"fully booted" in probe.stdout:
                return
            time.sleep(0.2)
        self.halt()
        raise AsteriskError(f"lab Asterisk did not boot within {timeout:.0f} s")

    def halt(self, timeout: float = 20.0) -> None:
        """Stop the Asterisk process (mounts stay, so :meth:`boot` can start it again)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            subprocess.run([*self.cli_argv, "core stop now"], capture_output=True, timeout=30, check=False)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def stop(self) -> None:
        """Stop Asterisk and unmount what :meth:`start` mounted."""
        self.halt()
        while self._mounted:
            _umount(self._mounted.pop())

    def __enter__(self) -> "LabAsterisk":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the Asterisk process is alive."""
        return self._process is not None and self._process.poll() is None

    # -- using it --------------------------------------------------------------------------
    def cli(self, command: str) -> str:
        """Run one Asterisk CLI command; its output."""
        return AsteriskCli(self.cli_argv, timeout=60).run(command)

    def start_recording(self, name: str, seconds: int, moh_class: str | None) -> Path:
        """Originate a Local channel that plays MOH (``moh_class``, or the channel default when
        None) into a recorder for ``seconds`` s; return the WAV path (complete when
        :meth:`wait_recording` returns)."""
        app = f"MusicOnHold {moh_class}" if moh_class else "MusicOnHold"
        return self._originate_recorder(name, seconds, "n", f"application {app}")

    def start_call_recording(self, name: str, seconds: int, destination: str) -> Path:
        """Originate a caller whose audio is recorded for ``seconds`` s and who runs the dialplan
        at ``destination`` (``exten@context``). The caller's Local channel plays MOH itself when
        held (Local channels intercept hold unless given ``/m``), as a trunk channel would;
        returns the WAV path."""
        if not re.fullmatch(r"[A-Za-z0-9_-]+@[A-Za-z0-9_-]+", destination):
            raise ValueError(f"destination {destination!r}")
        return self._originate_recorder(name, seconds, "n", f"extension {destination}")

    def _originate_recorder(self, name: str, seconds: int, options: str, what: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise ValueError(f"recording name {name!r}")
        for stale in (self.recordings / f"{name}.wav", self.recordings / f"{name}.done"):
            stale.unlink(missing_ok=True)
        self.cli(f"channel originate Local/rec-{seconds}-{name}@ooma-lab-record/{options} {what}")
        return self.recordings / f"{name}.wav"

    def wait_recording(self, wav: Path, timeout: float = 60.0) -> Path:
        """Wait until the recorder behind ``wav`` has finished; return ``wav``."""
        done = wav.with_suffix(".done")
        deadline = time.monotonic() + timeout
        while not done.exists():
            if time.monotonic() > deadline:
                raise AsteriskError(f"recording {wav.name} did not finish within {timeout:.0f} s")
            time.sleep(0.1)
        return wav

    def start_churn(self, seconds: int = 600) -> None:
        """Keep device states changing (about 50 a second) for ``seconds`` s."""
        self.cli(f"channel originate Local/churn@ooma-lab-churn/n application Wait {int(seconds)}")

    def moh_start_seconds(self, moh_class: str, timeout: float = 30.0) -> float:
        """How long Asterisk's StartMusicOnHold(``moh_class``) took on a fresh channel."""
        if not re.fullmatch(r"[A-Za-z0-9_-]+", moh_class):
            raise ValueError(f"class name {moh_class!r}")
        result = self.recordings / f"{moh_class}.start"
        result.unlink(missing_ok=True)
        self.cli(f"channel originate Local/mohstart-{moh_class}@ooma-lab-mohstart/n application Wait 1")
        deadline = time.monotonic() + timeout
        while not result.exists() or not result.read_text().strip():
            if time.monotonic() > deadline:
                raise AsteriskError(f"StartMusicOnHold({moh_class}) timing did not arrive")
            time.sleep(0.05)
        t0, t1 = (float(x) for x in result.read_text().split())
        return t1 - t0

    def record(self, name: str, seconds: int, moh_class: str | None) -> Path:
        """Record ``seconds`` s of ``moh_class`` as heard by a channel; the WAV path."""
        return self.wait_recording(self.start_recording(name, seconds, moh_class), timeout=seconds + 30)
