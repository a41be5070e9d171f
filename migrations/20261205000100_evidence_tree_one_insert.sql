-- The Merkle tree's new nodes in one insert (docs/PERFORMANCE.md, "A shorter hold"). The body of
-- 20261203000950 wrote one INSERT … SELECT per level, each joining the level below, under the
-- head lock every appender waits for: a quarter of the append's time. The same nodes are now
-- computed in memory from the new leaves and at most one stored node per level (the left
-- sibling of a level's first new node, when that node is a right child), and written at once.
-- Which nodes are written is unchanged: a parent whenever both its children exist, so a missing
-- stored sibling (a damaged tree) still leaves its parent unwritten rather than failing the
-- append, as the join did; the hashes are those of 20261203000100 (leaf = SHA-256(0x00 || the
-- 32 bytes of the record's chain hash), node = SHA-256(0x01 || left || right)).
CREATE OR REPLACE FUNCTION evidence_after_append(first_seq bigint, last_seq bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    base      bigint;
    have      bigint;
    lo        bigint;     -- the new nodes of level lvl are idx lo .. hi,
    hi        bigint;
    cur       bytea[];    -- with hashes cur[1 .. hi - lo + 1]
    lvl       integer := 0;
    parent_lo bigint;
    parent_hi bigint;
    stored    bytea;      -- the stored left sibling of node lo, when lo is a right child
    left_hash bytea;
    node_hash bytea;
    nxt       bytea[];
    levels    integer[] := '{}';
    idxs      bigint[];
    hashes    bytea[];
BEGIN
    SELECT l.tree_base INTO base FROM public.evidence_log l;
    SELECT coalesce(max(t.idx) + 1, 0) INTO have FROM public.evidence_tree t WHERE t.level = 0;
    IF first_seq <> base + have + 1 THEN
        -- A tree that does not end right before these records (adoption never ran, or a
        -- prefix was archived before the tree existed): catch up the set-based way.
        PERFORM public.evidence_tree_adopt();
        RETURN;
    END IF;
    SELECT array_agg(sha256('\x00'::bytea || decode(e.hash, 'hex')) ORDER BY e.seq),
           array_agg(e.seq - 1 - base ORDER BY e.seq)
      INTO cur, idxs
      FROM public.evidence e
     WHERE e.seq BETWEEN first_seq AND last_seq;
    IF cur IS NULL THEN
        RETURN;
    END IF;
    hashes := cur;
    levels := array_fill(0, ARRAY[cardinality(cur)]);
    lo := first_seq - 1 - base;
    hi := last_seq - 1 - base;
    LOOP
        -- Parents the new nodes complete: p with its right child 2p + 1 at most hi and at
        -- least one child new (2p + 1 >= lo).
        parent_lo := lo / 2;
        parent_hi := (hi + 1) / 2 - 1;
        EXIT WHEN parent_lo > parent_hi;
        stored := NULL;
        IF lo % 2 = 1 THEN
            SELECT t.hash INTO stored FROM public.evidence_tree t
             WHERE t.level = lvl AND t.idx = lo - 1;
        END IF;
        nxt := '{}';
        FOR p IN parent_lo .. parent_hi LOOP
            IF 2 * p < lo THEN
                left_hash := stored;
            ELSE
                left_hash := cur[2 * p - lo + 1];
            END IF;
            -- NULL when a child is missing: the parent is then not written (below).
            node_hash := sha256('\x01'::bytea || left_hash || cur[2 * p + 1 - lo + 1]);
            nxt := array_append(nxt, node_hash);
            levels := array_append(levels, lvl + 1);
            idxs := array_append(idxs, p);
            hashes := array_append(hashes, node_hash);
        END LOOP;
        cur := nxt;
        lo := parent_lo;
        hi := parent_hi;
        lvl := lvl + 1;
    END LOOP;
    INSERT INTO public.evidence_tree (level, idx, hash)
        SELECT n.level, n.idx, n.hash
          FROM unnest(levels, idxs, hashes) AS n(level, idx, hash)
         WHERE n.hash IS NOT NULL;
END;
$$;
REVOKE EXECUTE ON FUNCTION evidence_after_append(bigint, bigint) FROM PUBLIC;
