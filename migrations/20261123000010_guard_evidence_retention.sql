-- Retention (docs/EVIDENCE.md): evidence may leave the table only as a prefix of the chain
-- that the newest checkpoint record says was archived. The checkpoint is on the chain itself
-- (kind 'checkpoint', detail.continues_from = {seq, hash} of the last archived record), so the
-- permission to delete is as tamper-evident as the records. UPDATE and TRUNCATE stay forbidden.

CREATE INDEX evidence_checkpoints ON evidence (seq) WHERE kind = 'checkpoint';

-- The row trigger of the first migration refused DELETE outright; it now guards UPDATE only,
-- and the statement trigger below decides about DELETE.
DROP TRIGGER evidence_no_update ON evidence;
CREATE TRIGGER evidence_no_update BEFORE UPDATE ON evidence
    FOR EACH ROW EXECUTE FUNCTION evidence_is_append_only();

CREATE FUNCTION evidence_delete_only_archived() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    deleted_max  bigint;
    covered_seq  bigint;
    covered_hash text;
    actual_hash  text;
BEGIN
    SELECT max(seq) INTO deleted_max FROM deleted_rows;
    IF deleted_max IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT (detail->'continues_from'->>'seq')::bigint, detail->'continues_from'->>'hash'
      INTO covered_seq, covered_hash
      FROM evidence
     WHERE kind = 'checkpoint'
     ORDER BY seq DESC
     LIMIT 1;
    IF covered_seq IS NULL OR deleted_max > covered_seq THEN
        RAISE EXCEPTION 'evidence is append-only: DELETE is allowed only for records a checkpoint has archived (up to seq %, asked up to seq %)',
            coalesce(covered_seq, 0), deleted_max;
    END IF;
    -- The checkpoint must name the record actually at that position.
    SELECT hash INTO actual_hash FROM deleted_rows WHERE seq = covered_seq;
    IF actual_hash IS NULL THEN
        SELECT hash INTO actual_hash FROM evidence WHERE seq = covered_seq;
    END IF;
    IF actual_hash IS DISTINCT FROM covered_hash THEN
        RAISE EXCEPTION 'evidence is append-only: the newest checkpoint names hash % at seq %, but the record there is %',
            covered_hash, covered_seq, coalesce(actual_hash, 'missing');
    END IF;
    -- Only a prefix: nothing older than a deleted record may remain.
    IF EXISTS (SELECT 1 FROM evidence WHERE seq < deleted_max) THEN
        RAISE EXCEPTION 'evidence is append-only: retention removes the oldest records only (a prefix of the chain)';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER evidence_delete_archived AFTER DELETE ON evidence
    REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION evidence_delete_only_archived();
