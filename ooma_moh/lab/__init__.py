"""The lab: a real Asterisk in a chroot, and the tools that use it — not part of the runtime.

Nothing in ooma-moh's runtime (catalog, media, sync, the ARI and AGI servers) imports this
package; the tests, the benchmarks and ``ooma-moh demo`` do.

- :mod:`ooma_moh.lab.provision`: builds and caches the chroot with Debian's Asterisk 22;
- :mod:`ooma_moh.lab.asterisk`: :class:`LabAsterisk`, one running lab Asterisk;
- :mod:`ooma_moh.lab.config`: its configuration, from the operators' files plus the templates in
  ``conf/``, and free ports;
- :mod:`ooma_moh.lab.ari`: the lab's own ARI application (callers, SIP phones, holds);
- :mod:`ooma_moh.lab.tones`: which known tone a recording carries (pure Python);
- :mod:`ooma_moh.lab.demo`: the main job end to end (``ooma-moh demo``).
"""

from __future__ import annotations

from .asterisk import LabAsterisk
from .config import DEFAULT_TONE, LAB_ARI_USER, OPERATOR_HOME, TALK_TONE, free_port, render_config
from .provision import debian_mirror, default_root, provision

__all__ = [
    "DEFAULT_TONE",
    "LAB_ARI_USER",
    "OPERATOR_HOME",
    "TALK_TONE",
    "LabAsterisk",
    "debian_mirror",
    "default_root",
    "free_port",
    "provision",
    "render_config",
]
