-- Tree heads (docs/EVIDENCE.md, "Signed tree heads"): {log_id, first_seq, tree_size,
-- root_hash, timestamp} as canonical JSON (head_json, the exact bytes signed), with the KMS key
-- and the ECDSA P-256 signature of SHA-256(head_json); both null when no key is configured
-- (an unsigned head, reported as unanchored by every verification).

CREATE TABLE evidence_heads (
    tree_size bigint      PRIMARY KEY CHECK (tree_size > 0),
    root_hash text        NOT NULL CHECK (root_hash ~ '^[0-9a-f]{64}$'),
    signed_at timestamptz NOT NULL,
    head_json text        NOT NULL,
    key_id    text,
    signature bytea,
    CHECK ((key_id IS NULL) = (signature IS NULL))
);

CREATE FUNCTION evidence_heads_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'evidence_heads is append-only: % refused', TG_OP;
END;
$$;
CREATE TRIGGER evidence_heads_no_change BEFORE UPDATE OR DELETE ON evidence_heads
    FOR EACH ROW EXECUTE FUNCTION evidence_heads_are_append_only();
CREATE TRIGGER evidence_heads_no_truncate BEFORE TRUNCATE ON evidence_heads
    FOR EACH STATEMENT EXECUTE FUNCTION evidence_heads_are_append_only();
