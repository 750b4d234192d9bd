"""The lab Asterisk: a real Asterisk 22 from Debian's packages, in a chroot, for tests and the demo.

The chroot is provisioned once and cached (:mod:`ooma_moh.lab.provision`). Each
:class:`LabAsterisk` gets a *shared* directory, bind-mounted into the chroot at the same absolute
path so paths written by Python are valid for Asterisk, holding its generated configuration, its
run, log and spool directories, and the ooma-moh home the tests use. HTTP and SIP listen on free
127.0.0.1 ports, so a system Asterisk is never disturbed.

The configuration (:func:`render_config`) is the operators' own files from
:mod:`ooma_moh.asterisk_conf`, with paths, ports and the ARI password replaced, plus the
templates in ``conf/`` beside this module: a file there named like an operator file is appended
to it (a PJSIP loopback endpoint, the ``lab-talk`` class, the recording dialplan), any other is
written whole (``asterisk.conf``, ``modules.conf``, ``logger.conf``). Two lab classes play known
tones: ``default`` (:data:`DEFAULT_TONE`) and ``lab-talk`` (:data:`TALK_TONE`, a called party
talking).
"""

from __future__ import annotations

import glob
import os
import re
import resource
import secrets
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ..asterisk_cli import AsteriskCli
from ..errors import AsteriskError
from .config import DEFAULT_TONE, LAB_ARI_USER, TALK_TONE, free_port, render_config
from .provision import RootProc, default_root, is_mounted, provision, run_step, unmount


class LabAsterisk:
    """One running lab Asterisk. Use as a context manager, or call start() and stop()."""

    def __init__(self, shared: Path, root: Path | None = None, run_as: str | None = None) -> None:
        self.root = (root or default_root()).resolve()
        #: a user of the chroot (Debian's ``asterisk``) Asterisk switches to (``-U``, ``-G`` its group)
        #: once started, as a production Asterisk does; None: it stays root
        self.run_as = run_as
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
        self._proc = RootProc(self.root)

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

    def settings_overrides(self) -> dict[str, Any]:
        """Settings that point ooma-moh at this lab."""
        return {
            "home": self.home,
            "ari_url": self.ari_url,
            "ari_user": self.ari_user,
            "ari_password": self.ari_password,
            "asterisk_cli": self.asterisk_cli,
        }

    def _write_config(self) -> None:
        for sub in ("etc", "run", "log", "spool/recording", "db", "recordings", "moh-default", "moh-talk", "home"):
            (self.shared / sub).mkdir(parents=True, exist_ok=True)
        moddir = next(iter(glob.glob(str(self.root / "usr/lib/*/asterisk/modules"))), None)
        if moddir is None:
            raise AsteriskError(f"no Asterisk modules under {self.root}")
        config = render_config(
            shared=self.shared,
            etc=self.etc,
            moddir=moddir[len(str(self.root)) :],
            home=self.home,
            default_moh=self.default_moh,
            talk_moh=self.talk_moh,
            recordings=self.recordings,
            ari_password=self.ari_password,
            http_port=self.http_port,
            sip_port=self.sip_port,
        )
        for name, text in config.items():
            (self.etc / name).write_text(text)

    def _write_tone_classes(self) -> None:
        """Music for the lab's own classes: ``default`` (:data:`DEFAULT_TONE`) and ``lab-talk``
        (:data:`TALK_TONE`, what a called party "says" in tests), in every rendition."""
        from ..config import Settings
        from ..media import FfmpegConverter, synth_sample

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

    def user_ids(self, name: str) -> tuple[int, int]:
        """uid and gid of the chroot's user ``name`` (its own /etc/passwd, not the host's)."""
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2]), int(fields[3])
        raise AsteriskError(f"no user {name!r} in {self.root / 'etc' / 'passwd'}")

    def _hand_over(self, uid: int, gid: int) -> None:
        """What Asterisk writes (control socket, logs, spool, astdb, recordings) becomes the run-as
        user's, as Debian's package does for /var/{run,log,spool,lib}/asterisk; the rest stays
        root's and readable. The data home is not touched: who owns it is what tests check."""
        self.shared.chmod(0o755)
        for sub in ("run", "log", "spool", "db", "recordings"):
            for directory, _, names in os.walk(self.shared / sub):
                os.chown(directory, uid, gid)
                for name in names:
                    os.chown(os.path.join(directory, name), uid, gid)

    # -- lifecycle -------------------------------------------------------------------------
    def _mount(self, source: str, target: Path, *options: str) -> None:
        target.mkdir(parents=True, exist_ok=True)
        if is_mounted(target):
            return
        run_step(["mount", *options, source, str(target)], f"mount {target}", timeout=30)
        self._mounted.append(target)

    def start(self, timeout: float = 90.0) -> LabAsterisk:
        """Provision if needed, mount, configure and boot Asterisk; wait until fully booted."""
        provision(self.root)
        self.shared.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._write_tone_classes()
        if self.run_as is not None:
            self._hand_over(*self.user_ids(self.run_as))
        self._proc.enter()
        self._mount(str(self.shared), self.root / str(self.shared).lstrip("/"), "--bind")
        self.boot(timeout)
        return self

    def boot(self, timeout: float = 90.0) -> None:
        """Start the Asterisk process (mounts and config already in place) and wait for it.
        ``-g`` and an unlimited core size: if it crashes, :meth:`post_mortem` finds the core."""
        user = ["-U", self.run_as, "-G", self.run_as] if self.run_as is not None else []
        with open(self.shared / "log" / "console.log", "ab") as log:  # Asterisk keeps its own descriptor
            self._process = subprocess.Popen(
                ["chroot", str(self.root), "asterisk", "-C", str(self.etc / "asterisk.conf"), "-f", "-n", "-g", *user],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AsteriskError(
                    f"lab Asterisk exited during boot (code {self._process.returncode});"
                    f" see {self.shared / 'log' / 'console.log'}"
                )
            probe = subprocess.run(
                [*self.cli_argv, "core waitfullybooted"], capture_output=True, timeout=60, check=False
            )
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
            unmount(self._mounted.pop())
        self._proc.leave()

    def __enter__(self) -> LabAsterisk:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the Asterisk process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The running Asterisk's process id."""
        if self._process is None:
            raise AsteriskError("the lab Asterisk is not running")
        return self._process.pid

    @property
    def log_dir(self) -> Path:
        """Where this lab's Asterisk writes ``messages.log`` and ``console.log``."""
        return self.shared / "log"

    def post_mortem(self, keep: Path | None = None) -> str:
        """Say what became of Asterisk and where its traces are: exit status, the log files, a
        core file (moved beside the logs). With ``keep``, copy them there first (for runs whose
        directory is temporary, like the benchmarks). Returns one paragraph for the operator."""
        status = (
            "running"
            if self.running
            else ("never started" if self._process is None else f"exited with code {self._process.returncode}")
        )
        for core in (*self.root.glob("core*"), *self.shared.glob("core*")):  # chroot's cwd is its /
            if core.is_file():
                shutil.move(str(core), self.log_dir / core.name)
        where = self.log_dir
        if keep is not None:
            shutil.copytree(self.log_dir, keep, dirs_exist_ok=True)
            where = keep
        cores = sorted(p.name for p in where.glob("core*"))
        tail = ""
        messages = where / "messages.log"
        if messages.exists():
            lines = messages.read_text(errors="replace").splitlines()[-5:]
            tail = "; last log lines:\n  " + "\n  ".join(lines)
        return (
            f"lab Asterisk {status}; logs in {where} (messages.log, console.log)"
            f"{'; core: ' + ', '.join(cores) if cores else '; no core file'}{tail}"
        )

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
