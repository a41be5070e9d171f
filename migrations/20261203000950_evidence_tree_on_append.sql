-- The Merkle tree grows inside the database's append function (migration 20261203000200), so
-- the worker's role, which may not write the evidence tables, needs no write on evidence_tree
-- either: evidence_append_checked calls this with the seqs it just appended, under the head
-- lock, with the owner's rights. Only the new leaves and their new ancestors are written
-- (O(log n) statements per batch), the same nodes src/evidence/tree.rs reads and
-- migrations/20261203000100_evidence_merkle_tree.sql defines: leaf = SHA-256(0x00 || the 32
-- bytes of the record's chain hash), node = SHA-256(0x01 || left || right), a node at
-- (level, idx) covering the leaves idx * 2^level .. (idx + 1) * 2^level - 1.
CREATE OR REPLACE FUNCTION evidence_after_append(first_seq bigint, last_seq bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    base    bigint;
    have    bigint;
    lo      bigint;
    hi      bigint;
    lvl     integer := 0;
BEGIN
    SELECT l.tree_base INTO base FROM public.evidence_log l;
    SELECT coalesce(max(t.idx) + 1, 0) INTO have FROM public.evidence_tree t WHERE t.level = 0;
    IF first_seq <> base + have + 1 THEN
        -- A tree that does not end right before these records (adoption never ran, or a
        -- prefix was archived before the tree existed): catch up the set-based way.
        PERFORM public.evidence_tree_adopt();
        RETURN;
    END IF;
    INSERT INTO public.evidence_tree (level, idx, hash)
        SELECT 0, e.seq - 1 - base, sha256('\x00'::bytea || decode(e.hash, 'hex'))
          FROM public.evidence e
         WHERE e.seq BETWEEN first_seq AND last_seq;
    lo := first_seq - 1 - base;
    hi := last_seq - 1 - base;
    LOOP
        -- Parents at lvl + 1 that the new nodes [lo, hi] complete: p with its right child
        -- 2p + 1 at most hi and at least one child new (2p + 1 >= lo).
        lo := lo / 2;
        hi := (hi + 1) / 2 - 1;
        EXIT WHEN lo > hi;
        INSERT INTO public.evidence_tree (level, idx, hash)
            SELECT lvl + 1, l.idx / 2, sha256('\x01'::bytea || l.hash || r.hash)
              FROM public.evidence_tree l
              JOIN public.evidence_tree r ON r.level = lvl AND r.idx = l.idx + 1
             WHERE l.level = lvl AND l.idx BETWEEN 2 * lo AND 2 * hi AND l.idx % 2 = 0;
        lvl := lvl + 1;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION evidence_after_append(bigint, bigint) FROM PUBLIC;

-- evidence_tree_adopt runs as its caller: the append function's owner here, the migrating
-- owner at migration time. The worker's role never calls it.
REVOKE EXECUTE ON FUNCTION evidence_tree_adopt() FROM PUBLIC;
