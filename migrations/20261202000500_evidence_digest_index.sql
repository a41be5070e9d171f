-- One digest's records (`ecr-audit explain`, `export --digest`) without a full scan of the
-- chain when the account and region are not given.
CREATE INDEX evidence_digest ON evidence (digest, seq) WHERE digest IS NOT NULL;
