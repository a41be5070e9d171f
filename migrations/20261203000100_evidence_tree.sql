-- The Merkle tree over the evidence (docs/EVIDENCE.md, "The Merkle tree"): RFC 9162 hashes of
-- every complete subtree aligned to its size, so that roots and proofs need O(log n) rows.
-- Leaf i (level 0, idx i) is the record with seq tree_base + i + 1 (tree_base, in
-- evidence_log, is 0 unless retention archived a prefix before the tree existed); its hash is SHA-256(0x00 || the 32
-- bytes of the record's chain hash). A node at (level, idx) covers the 2^level leaves from
-- idx * 2^level; its hash is SHA-256(0x01 || left child || right child). Written in the
-- transaction that appends the records, under the chain head lock (src/evidence/tree.rs).

CREATE TABLE evidence_tree (
    level smallint NOT NULL CHECK (level BETWEEN 0 AND 62),
    idx   bigint   NOT NULL CHECK (idx >= 0),
    hash  bytea    NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- The tree outlives retention (archived records stay provable), so nothing is ever removed.
CREATE FUNCTION evidence_tree_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'evidence_tree is append-only: % refused', TG_OP;
END;
$$;
CREATE TRIGGER evidence_tree_no_change BEFORE UPDATE OR DELETE ON evidence_tree
    FOR EACH ROW EXECUTE FUNCTION evidence_tree_is_append_only();
CREATE TRIGGER evidence_tree_no_truncate BEFORE TRUNCATE ON evidence_tree
    FOR EACH STATEMENT EXECUTE FUNCTION evidence_tree_is_append_only();

-- The log's identity, named in every tree head, and the records before its first leaf: those
-- retention archived before the tree existed (their chain still links the first leaf's record
-- to them through its prev_hash). Set once, by the adoption below.
CREATE TABLE evidence_log (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    log_id    uuid    NOT NULL DEFAULT gen_random_uuid(),
    tree_base bigint  NOT NULL DEFAULT 0 CHECK (tree_base >= 0)
);
INSERT INTO evidence_log DEFAULT VALUES;

-- Adopts the records the tree does not hold yet (every record, when this migration runs on an
-- existing chain), level by level in set-based statements. A prefix archived before the tree
-- existed cannot be adopted (its records are gone): an empty tree then starts at the oldest
-- stored record, and tree_base says how many records came before it. Once the tree holds
-- leaves, the records must follow it without a gap.
CREATE FUNCTION evidence_tree_adopt() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    have   bigint;
    base   bigint;
    oldest bigint;
    lvl    integer := 0;
BEGIN
    PERFORM 1 FROM evidence_chain_head WHERE id = 1 FOR UPDATE;
    SELECT coalesce(max(idx) + 1, 0) INTO have FROM evidence_tree WHERE level = 0;
    SELECT tree_base INTO base FROM evidence_log;
    SELECT min(seq) INTO oldest FROM evidence WHERE seq > base + have;
    IF oldest IS NULL THEN
        RETURN have;
    END IF;
    IF have = 0 AND oldest > 1 THEN
        base := oldest - 1;
        UPDATE evidence_log SET tree_base = base;
    ELSIF oldest <> base + have + 1 THEN
        RAISE EXCEPTION 'evidence_tree: the tree holds % leaves from seq % but the next stored record is seq %',
            have, base + 1, oldest;
    END IF;
    INSERT INTO evidence_tree (level, idx, hash)
        SELECT 0, seq - 1 - base, sha256(decode('00', 'hex') || decode(hash, 'hex'))
          FROM evidence WHERE seq > base + have;
    LOOP
        INSERT INTO evidence_tree (level, idx, hash)
            SELECT lvl + 1, l.idx / 2, sha256(decode('01', 'hex') || l.hash || r.hash)
              FROM evidence_tree l
              JOIN evidence_tree r ON r.level = lvl AND r.idx = l.idx + 1
             WHERE l.level = lvl AND l.idx % 2 = 0
            ON CONFLICT (level, idx) DO NOTHING;
        EXIT WHEN NOT EXISTS (SELECT 1 FROM evidence_tree WHERE level = lvl + 1);
        lvl := lvl + 1;
    END LOOP;
    SELECT max(idx) + 1 INTO have FROM evidence_tree WHERE level = 0;
    RETURN have;
END;
$$;

SELECT evidence_tree_adopt();
