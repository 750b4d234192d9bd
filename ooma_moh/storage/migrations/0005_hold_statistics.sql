-- Issue 22: hold statistics per tenant and UTC day (rules in ooma_moh/holdstats.py; written by
-- every node's `serve ari`, only ever added to: ooma_moh/storage/sql_holdstats.py).
CREATE TABLE hold_days (
    tenant_id TEXT NOT NULL,
    day TEXT NOT NULL,
    holds BIGINT NOT NULL,
    milliseconds BIGINT NOT NULL,
    hung_up BIGINT NOT NULL,
    fallback BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, day)
);
CREATE INDEX hold_days_day ON hold_days (day);
CREATE TABLE hold_buckets (
    tenant_id TEXT NOT NULL,
    day TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    holds BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, day, bucket)
);
CREATE INDEX hold_buckets_day ON hold_buckets (day);
