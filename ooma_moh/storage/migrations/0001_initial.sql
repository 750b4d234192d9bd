-- The catalog on PostgreSQL: the same tables as the embedded SQLite catalog, native types.
CREATE TABLE uploads (
    id BIGSERIAL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    original_name TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    container TEXT NOT NULL,
    uploaded_at TIMESTAMPTZ NOT NULL,
    accepted_by TEXT NOT NULL,
    accepted_at TIMESTAMPTZ NOT NULL,
    disclaimer_sha256 TEXT NOT NULL,
    disclaimer_version TEXT
);
CREATE TABLE renditions (
    upload_id BIGINT NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    extension TEXT NOT NULL,
    sample_rate INTEGER NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (upload_id, extension)
);
CREATE TABLE tenants (
    tenant_id TEXT PRIMARY KEY,
    setting TEXT NOT NULL CHECK (setting IN ('default', 'file')),
    upload_id BIGINT REFERENCES uploads(id),
    updated_at TIMESTAMPTZ NOT NULL,
    CHECK ((setting = 'file') = (upload_id IS NOT NULL))
);
CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    tenant_id TEXT NOT NULL,
    action TEXT NOT NULL,
    detail JSONB NOT NULL
);
CREATE INDEX audit_tenant ON audit (tenant_id, id);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL CHECK (scope IN ('tenant', 'operator')),
    tenant_id TEXT,
    secret_sha256 TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    CHECK ((scope = 'tenant') = (tenant_id IS NOT NULL))
);
CREATE TABLE endpoints (
    endpoint TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL
);
CREATE TABLE login_links (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    label TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE TABLE browser_sessions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    label TEXT NOT NULL,
    link_id TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ
);
