-- Repositories to read again because a fact their controls need got no answer from AWS after
-- the retries (an API outage): those controls are UNKNOWN meanwhile, and this schedule, not the
-- next event or sweep, is what brings them back (src/pipeline/rereads.rs). A row lives while the
-- repository's last applied read had an unavailable fact; a complete read deletes it.
CREATE TABLE repository_rechecks (
    account    text        NOT NULL,
    region     text        NOT NULL,
    repository text        NOT NULL,
    due_at     timestamptz NOT NULL,
    -- Re-reads made so far: the delay doubles with each (src/store/rereads.rs).
    attempts   integer     NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, region, repository)
);

CREATE INDEX repository_rechecks_due ON repository_rechecks (due_at);
