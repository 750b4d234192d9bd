-- Issue 21: each upload's analysis, the previous file kept for "restore", and drafts (analysed
-- uploads not yet saved; rules in ooma_moh/storage/sql_history.py).
ALTER TABLE uploads ADD COLUMN analysis JSONB;
ALTER TABLE tenants ADD COLUMN previous_upload_id BIGINT REFERENCES uploads(id);
CREATE TABLE drafts (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    original_name TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    container TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    analysis JSONB,
    renditions JSONB NOT NULL
);
CREATE INDEX drafts_tenant ON drafts (tenant_id, expires_at);
