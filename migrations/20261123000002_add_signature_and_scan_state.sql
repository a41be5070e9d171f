-- Per-digest signature and scan state, and the re-checks that make "signed" a state that
-- evolves: a push is PENDING until a signature appears or the grace window ends.
ALTER TABLE images
    ADD COLUMN artifact_kind         text,
    ADD COLUMN signature_status      text CHECK (signature_status IN ('SIGNED', 'PENDING', 'UNSIGNED', 'FAILED', 'UNTRUSTED')),
    ADD COLUMN signature_sources     jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN signature_reason      text,
    ADD COLUMN signature_checked_at  timestamptz,
    ADD COLUMN signed_at             timestamptz,
    -- Set once, by the transaction that first saw the digest UNSIGNED: the unsigned-push
    -- counter and alert fire exactly once per digest, whatever the redeliveries and replicas.
    ADD COLUMN first_unsigned_at     timestamptz,
    ADD COLUMN scan_status           text CHECK (scan_status IN ('SCANNED', 'PENDING', 'FAILED', 'UNSUPPORTED', 'EXPIRED', 'UNAVAILABLE', 'NOT_SCANNED')),
    ADD COLUMN scan_raw_status       text,
    ADD COLUMN scan_critical         integer,
    ADD COLUMN scan_high             integer,
    ADD COLUMN scan_medium           integer,
    ADD COLUMN scan_low              integer,
    ADD COLUMN scan_checked_at       timestamptz;

-- Due signature re-checks, claimed with FOR UPDATE SKIP LOCKED so several workers share them
-- and a crash (which rolls the claim back) loses none.
CREATE TABLE signature_rechecks (
    account     text        NOT NULL,
    region      text        NOT NULL,
    repository  text        NOT NULL,
    digest      text        NOT NULL,
    pushed_at   timestamptz NOT NULL,
    due_at      timestamptz NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (account, region, repository, digest)
);
CREATE INDEX signature_rechecks_due ON signature_rechecks (due_at);
