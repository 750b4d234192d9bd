-- The cluster: what each node's agent has published, and a notification on every tenant change.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    last_seen TIMESTAMPTZ NOT NULL,
    last_success TIMESTAMPTZ,
    last_error TEXT,
    last_error_at TIMESTAMPTZ
);
CREATE TABLE node_classes (
    node_id TEXT NOT NULL REFERENCES nodes(node_id) ON DELETE CASCADE,
    moh_class TEXT NOT NULL,
    version TEXT NOT NULL,
    published_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (node_id, moh_class)
);
CREATE FUNCTION ooma_moh_tenant_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ooma_moh_changes', CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END);
    RETURN NULL;
END $$;
CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION ooma_moh_tenant_changed();
