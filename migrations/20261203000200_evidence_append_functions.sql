-- Least privilege (docs/EVIDENCE.md, "Database roles"): the worker's role may read the evidence
-- tables but never write them. Evidence enters only through the SECURITY DEFINER functions
-- below, owned by the role that runs migrations, and leaves only through retention's function.
-- The grants to the worker's role (ecr_audit_worker) are made by `ecr-audit migrate` after the
-- migrations (src/store/roles.rs), so that tables added later are covered the same way.

-- Records carry their format version (docs/UPGRADES.md); NULL is version 1, every record
-- written before versions existed, whose canonical form has no such member.
ALTER TABLE evidence ADD COLUMN format_version smallint;

-- What only the owner may change. retention_min_age: the youngest cut-off retention accepts.
CREATE TABLE evidence_settings (
    id                 smallint PRIMARY KEY CHECK (id = 1),
    retention_min_age  interval NOT NULL CHECK (retention_min_age >= interval '0')
);
INSERT INTO evidence_settings (id, retention_min_age) VALUES (1, interval '90 days');

-- Runs after every append with the seqs just appended; it does nothing yet. A table that must
-- be written beside each append (a Merkle tree over the leaves) replaces this body in a later
-- migration, and evidence_append_checked needs no change.
CREATE FUNCTION evidence_after_append(first_seq bigint, last_seq bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    RETURN;
END;
$$;

-- The head lock for appenders: the row lock belongs to the caller's transaction, so it orders
-- every append until that transaction ends, as SELECT … FOR UPDATE did when the worker owned
-- the table.
CREATE FUNCTION evidence_lock_head(OUT seq bigint, OUT hash text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT h.seq, h.hash FROM public.evidence_chain_head h WHERE h.id = 1 FOR UPDATE;
$$;

-- Appends records given as their canonical JSON text (src/evidence/chain.rs) and hash. Under
-- the head lock each must be the SHA-256 of its text, carry the next seq and name the head's
-- hash as prev_hash. The columns are read from that same text, so a record is stored exactly
-- as hashed; whether the text is the canonical form of its fields is what `verify` checks.
CREATE FUNCTION evidence_append_checked(canonical text[], hashes text[], allow_checkpoint boolean)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    head_seq   bigint;
    head_hash  text;
    first_seq  bigint;
    rec        jsonb;
    parsed     jsonb[] := '{}';
    computed   text;
    n          integer := coalesce(array_length(canonical, 1), 0);
BEGIN
    IF n <> coalesce(array_length(hashes, 1), 0) THEN
        RAISE EXCEPTION 'evidence append refused: % records but % hashes', n, coalesce(array_length(hashes, 1), 0);
    END IF;
    SELECT h.seq, h.hash INTO head_seq, head_hash
      FROM public.evidence_chain_head h WHERE h.id = 1 FOR UPDATE;
    first_seq := head_seq + 1;
    FOR i IN 1 .. n LOOP
        rec := canonical[i]::jsonb;
        computed := encode(sha256(convert_to(canonical[i], 'UTF8')), 'hex');
        IF computed IS DISTINCT FROM hashes[i] THEN
            RAISE EXCEPTION 'evidence append refused: record seq % (event %): its hash is not the SHA-256 of its canonical form',
                rec->>'seq', rec->>'event_id';
        END IF;
        IF (rec->>'seq')::bigint IS DISTINCT FROM head_seq + 1 THEN
            RAISE EXCEPTION 'evidence append refused: record seq % (event %) is out of order: the next seq is %',
                rec->>'seq', rec->>'event_id', head_seq + 1;
        END IF;
        IF rec->>'prev_hash' IS DISTINCT FROM head_hash THEN
            RAISE EXCEPTION 'evidence append refused: record seq % (event %) does not link to the record before it (prev_hash %, expected %)',
                rec->>'seq', rec->>'event_id', rec->>'prev_hash', head_hash;
        END IF;
        IF rec->>'kind' = 'checkpoint' AND NOT allow_checkpoint THEN
            RAISE EXCEPTION 'evidence append refused: a checkpoint is written by retention only (evidence_retire)';
        END IF;
        head_seq := head_seq + 1;
        head_hash := computed;
        parsed := parsed || rec;
    END LOOP;
    IF n = 0 THEN
        RETURN head_seq;
    END IF;
    INSERT INTO public.evidence (seq, recorded_at, event_id, event_time, kind, outcome, account,
           region, repository, digest, tag, actor, detail, prev_hash, hash, format_version)
    SELECT (j->>'seq')::bigint, (j->>'recorded_at')::timestamptz, j->>'event_id',
           (j->>'event_time')::timestamptz, j->>'kind', j->>'outcome', j->>'account',
           j->>'region', j->>'repository', j->>'digest', j->>'tag', j->>'actor', j->'detail',
           j->>'prev_hash', h, (j->>'format_version')::smallint
      FROM unnest(parsed, hashes) AS u(j, h);
    UPDATE public.evidence_chain_head SET seq = head_seq, hash = head_hash WHERE id = 1;
    PERFORM public.evidence_after_append(first_seq, head_seq);
    RETURN head_seq;
END;
$$;

-- The worker's way in: any record but a checkpoint.
CREATE FUNCTION evidence_append(canonical text[], hashes text[]) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT public.evidence_append_checked(canonical, hashes, false);
$$;

-- Retention's way out: appends the checkpoint record (canonical text and hash) and deletes the
-- prefix it archived, refusing a cut-off in the future or younger than retention_min_age, and
-- a prefix holding any record recorded at or after the cut-off. The delete trigger of
-- 20261123000010 still checks that the newest checkpoint covers exactly what is deleted.
CREATE FUNCTION evidence_retire(canonical text, record_hash text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    rec       jsonb := canonical::jsonb;
    cut_seq   bigint := (rec->'detail'->'continues_from'->>'seq')::bigint;
    cut_off   timestamptz := (rec->'detail'->'archived'->>'before')::timestamptz;
    min_age   interval;
    too_new   bigint;
    deleted   bigint;
BEGIN
    IF rec->>'kind' IS DISTINCT FROM 'checkpoint' OR cut_seq IS NULL OR cut_off IS NULL THEN
        RAISE EXCEPTION 'retention refused: the record is not a checkpoint naming continues_from.seq and archived.before';
    END IF;
    SELECT s.retention_min_age INTO min_age FROM public.evidence_settings s WHERE s.id = 1;
    IF cut_off > now() THEN
        RAISE EXCEPTION 'retention refused: the cut-off % is in the future', cut_off;
    END IF;
    IF cut_off > now() - min_age THEN
        RAISE EXCEPTION 'retention refused: the cut-off % is newer than the minimum age % (evidence_settings.retention_min_age)',
            cut_off, min_age;
    END IF;
    SELECT min(e.seq) INTO too_new FROM public.evidence e
     WHERE e.seq <= cut_seq AND e.recorded_at >= cut_off;
    IF too_new IS NOT NULL THEN
        RAISE EXCEPTION 'retention refused: record seq % was recorded at or after the cut-off %', too_new, cut_off;
    END IF;
    PERFORM public.evidence_append_checked(ARRAY[canonical], ARRAY[record_hash], true);
    DELETE FROM public.evidence e WHERE e.seq <= cut_seq;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END;
$$;

-- Functions are executable by PUBLIC unless revoked; the grants are made per role.
REVOKE EXECUTE ON FUNCTION evidence_after_append(bigint, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION evidence_lock_head() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION evidence_append_checked(text[], text[], boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION evidence_append(text[], text[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION evidence_retire(text, text) FROM PUBLIC;
