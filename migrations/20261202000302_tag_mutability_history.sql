-- The ordered history of each repository's tag mutability, as ecr-audit learnt it: the state a
-- request asked for, dated at the request (source 'request', recorded even when a newer state
-- was already stored), and each repository read that was written (source 'read'). A push's
-- settings at push are derived from it when a recorded change lies between the push and the
-- read its settings came from (src/store/history.rs).
CREATE TABLE tag_mutability_history (
    id bigserial PRIMARY KEY,
    account text NOT NULL,
    region text NOT NULL,
    repository text NOT NULL,
    changed_at timestamptz NOT NULL,
    mode text NOT NULL,
    exclusion_filters jsonb NOT NULL DEFAULT '[]'::jsonb,
    changed_by text,
    source text NOT NULL CHECK (source IN ('request', 'read')),
    UNIQUE (account, region, repository, changed_at, mode)
);
CREATE INDEX tag_mutability_history_by_time
    ON tag_mutability_history (account, region, repository, changed_at);

-- When the repository state an image row's settings at push describe was observed.
ALTER TABLE images ADD COLUMN settings_observed_at timestamptz;
