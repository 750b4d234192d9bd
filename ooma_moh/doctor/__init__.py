"""``ooma-moh doctor``: is this host ready to give callers their tenant's music on hold?

Each check is a function that returns :class:`~.findings.Finding` (``ok``, ``warn`` or ``fail``,
what was found, what to do) and never raises: a check that cannot run says so as a finding.
Checked, in the order printed:

- ``ffmpeg``: found, runs, has the demuxers, decoders, filters, encoders and muxers the uploads and
  renditions need, and converts a generated WAV end to end under the configured limits;
- ``catalog``: present and readable, opened read-only (doctor never creates one: a missing catalog
  is a finding about ``OOMA_MOH_HOME`` / ``OOMA_MOH_DATABASE_URL``);
- ``blobs``: the blob store readable (object storage: reachable), the catalog's blobs present;
- on a cluster node (``OOMA_MOH_DATABASE_URL`` set) ``registry`` (the node registry answers),
  ``agent`` (this node's agent is live: heartbeat fresh, no damage left unrepaired) and
  ``behind`` (the node publishes every tenant's current music);
- ``ari``: Asterisk's REST interface answers with the configured user and password;
- ``modules``: the Asterisk modules music on hold, the realtime publication and the ARI handler
  need are running (``GET /asterisk/modules``);
- ``moh-dir``: the MOH directory and everything under it readable and traversable by the user
  Asterisk runs as, including every directory above it;
- ``realtime-db`` (realtime mode): the realtime SQLite file readable and writable by that user;
- ``realtime-mapping`` (realtime mode): Asterisk finds, through ``REALTIME(musiconhold,...)``
  evaluated on a channel of doctor's own, a probe row doctor wrote into ``OOMA_MOH_REALTIME_DB``;
- ``call`` (``--call``): Asterisk plays a class to a channel of doctor's own and the audio
  received is compared, sample for sample, with that class's ``.sln16`` file.

The modules:

- :mod:`.findings`: the Finding type and the rules, without I/O (ffmpeg's lists, permission
  bits, Asterisk's modules and ARI errors, the probe audio and its comparison);
- :mod:`.local`: ffmpeg, the catalog and the blob store;
- :mod:`.cluster`: the node registry, this node's agent and how far behind it is;
- :mod:`.permissions`: who Asterisk runs as, and whether it may read the MOH directory and
  read and write the realtime database;
- :mod:`.asterisk`: ARI, the modules and the realtime mapping;
- :mod:`.channel`: doctor's probe channel (ARI external media, RTP on a local UDP port);
- :mod:`.call`: the ``--call`` probe;
- :mod:`.command`: the runner and the click command.

Doctor's channel lives in a temporary Stasis application (``ooma-moh-doctor-<pid>``); the probe
row, the probe directory and the channel are removed before it exits, and so are the MOH directory
and the realtime table when doctor had to create them for its probes: it leaves nothing behind.
Where the advice is to publish the classes, it names ``ooma-moh sync --all`` on a single host and
the node's agent on a cluster (:func:`.findings.how_to_publish`).
"""

from .command import doctor_command

__all__ = ["doctor_command"]
