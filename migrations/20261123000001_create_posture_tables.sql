-- Repository state as last read from ECR; `observed_at` is the read time and decides which
-- write wins, so a slower worker holding older facts never overwrites newer ones.
CREATE TABLE repositories (
    account                    text        NOT NULL,
    region                     text        NOT NULL,
    name                       text        NOT NULL,
    arn                        text        NOT NULL,
    present                    boolean     NOT NULL,
    tag_mutability             text,
    tag_mutability_exclusions  jsonb       NOT NULL DEFAULT '[]',
    scan_frequency             text,
    scan_on_push               boolean,
    lifecycle_policy           boolean,
    encryption_type            text,
    kms_key                    text,
    kms_key_manager            text,
    facts                      jsonb       NOT NULL,
    observed_at                timestamptz NOT NULL,
    first_seen_at              timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, region, name)
);

-- The current verdict of each control for each repository.
CREATE TABLE control_results (
    account      text        NOT NULL,
    region       text        NOT NULL,
    repository   text        NOT NULL,
    control      text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('PASS', 'FAIL', 'UNKNOWN')),
    reason       text        NOT NULL,
    observed_at  timestamptz NOT NULL,
    changed_at   timestamptz NOT NULL,
    PRIMARY KEY (account, region, repository, control),
    FOREIGN KEY (account, region, repository) REFERENCES repositories (account, region, name)
);

-- One row per digest ever seen. `state_changed_at` is the event time of the last push or
-- delete applied, so an older event cannot undo a newer one; the settings columns are the
-- repository's as first recorded for the digest, i.e. at push time.
CREATE TABLE images (
    account               text        NOT NULL,
    region                text        NOT NULL,
    repository            text        NOT NULL,
    digest                text        NOT NULL,
    present               boolean     NOT NULL,
    state_changed_at      timestamptz NOT NULL,
    tags                  text[]      NOT NULL DEFAULT '{}',
    tags_observed_at      timestamptz,
    push_tag              text,
    pushed_at             timestamptz,
    pushed_by             text,
    pushed_by_type        text,
    -- Event time of the PutImage record that named the pusher: the earliest one wins, so a
    -- later re-tag of the same digest by someone else does not rewrite who introduced it.
    pushed_by_at          timestamptz,
    manifest_media_type   text,
    artifact_media_type   text,
    artifact_of           text,
    size_bytes            bigint,
    storage_class         text,
    tag_immutability      text,
    tag_protected         boolean,
    encryption_type       text,
    kms_key               text,
    kms_customer_managed  boolean,
    first_seen_at         timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, region, repository, digest)
);
CREATE INDEX images_pushed_at ON images (pushed_at);

-- The append-only evidence log. `seq` orders the hash chain; `hash` is SHA-256 over the
-- canonical serialisation of the record including `prev_hash` (see docs/EVIDENCE.md).
CREATE TABLE evidence (
    seq          bigint      PRIMARY KEY,
    recorded_at  timestamptz NOT NULL,
    event_id     text        NOT NULL UNIQUE,
    event_time   timestamptz NOT NULL,
    kind         text        NOT NULL,
    outcome      text        NOT NULL,
    account      text,
    region       text,
    repository   text,
    digest       text,
    tag          text,
    actor        text,
    detail       jsonb       NOT NULL,
    prev_hash    text        NOT NULL,
    hash         text        NOT NULL UNIQUE
);
CREATE INDEX evidence_repository ON evidence (account, region, repository, seq);
CREATE INDEX evidence_event_time ON evidence (event_time);

-- The head of the chain. Appenders lock this single row, which orders every append and makes
-- a fork impossible: two transactions cannot both extend the same head.
CREATE TABLE evidence_chain_head (
    id    smallint PRIMARY KEY CHECK (id = 1),
    seq   bigint   NOT NULL,
    hash  text     NOT NULL
);
INSERT INTO evidence_chain_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION evidence_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'evidence is append-only: % is not allowed', TG_OP;
END;
$$;
CREATE TRIGGER evidence_no_update BEFORE UPDATE OR DELETE ON evidence
    FOR EACH ROW EXECUTE FUNCTION evidence_is_append_only();
CREATE TRIGGER evidence_no_truncate BEFORE TRUNCATE ON evidence
    FOR EACH STATEMENT EXECUTE FUNCTION evidence_is_append_only();

-- Messages that can never be processed, kept verbatim with the reason. One row per distinct
-- body, so a redelivered poison message is stored once.
CREATE TABLE rejected_messages (
    id           bigserial   PRIMARY KEY,
    body_sha256  text        NOT NULL UNIQUE,
    source       text        NOT NULL,
    message_id   text,
    code         text        NOT NULL,
    reason       text        NOT NULL,
    body         bytea       NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
