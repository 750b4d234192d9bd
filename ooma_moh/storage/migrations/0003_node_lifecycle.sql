-- Node lifecycle: each agent's heartbeat (server time) and interval, the process that holds the
-- node id (a random id per process; its pid, and the boot and pid namespace the pid belongs to),
-- and what its checks of the published version directories found and repaired.
ALTER TABLE nodes
    ADD COLUMN heartbeat_at TIMESTAMPTZ,
    ADD COLUMN heartbeat_s DOUBLE PRECISION,
    ADD COLUMN instance_id TEXT,
    ADD COLUMN holder TEXT,
    ADD COLUMN holder_pid INTEGER,
    ADD COLUMN holder_where TEXT,
    ADD COLUMN damage TEXT,
    ADD COLUMN damaged_classes TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN damage_at TIMESTAMPTZ,
    ADD COLUMN repaired TEXT,
    ADD COLUMN repaired_at TIMESTAMPTZ;
