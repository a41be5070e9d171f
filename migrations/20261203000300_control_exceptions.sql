-- Exceptions: accepted risks with an approver, a reason and an expiry (docs/EXCEPTIONS.md).
-- A row is never deleted: it ends as 'revoked' or 'expired', and `settled_at` says when the
-- worker re-opened (and alerted on) the findings it had excepted.
CREATE TABLE control_exceptions (
    id                 text        PRIMARY KEY,
    source             text        NOT NULL CHECK (source IN ('cli', 'file')),
    account            text,
    region             text,
    repository_pattern text        NOT NULL,
    -- The pattern as `LIKE … ESCAPE '\'` (`*` → `%`, `_` escaped), so SQL matches as the glob.
    repository_like    text        NOT NULL,
    control            text        NOT NULL,
    reason             text        NOT NULL,
    approver           text        NOT NULL,
    expires_at         timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    state              text        NOT NULL DEFAULT 'active'
                                   CHECK (state IN ('active', 'revoked', 'expired')),
    ended_at           timestamptz,
    end_reason         text,
    ended_by           text,
    settled_at         timestamptz
);

CREATE INDEX control_exceptions_in_force ON control_exceptions (control) WHERE state = 'active';
CREATE INDEX control_exceptions_unsettled ON control_exceptions (ended_at)
    WHERE state <> 'active' AND settled_at IS NULL;

-- Numbers for exceptions added on the command line (`EX-1`, `EX-2`, …).
CREATE SEQUENCE control_exception_numbers;

-- The exceptions file last loaded (its SHA-256), so a restart with the same file records nothing.
CREATE TABLE exception_file_state (
    path      text        PRIMARY KEY,
    sha256    text        NOT NULL,
    loaded_at timestamptz NOT NULL
);

-- Every present repository's control results as reported: a FAIL under an exception in force
-- (active and not yet expired, whether or not the worker has marked it) is EXCEPTED, with the
-- exception expiring last when several apply. Set-based (failing rows joined to the exceptions
-- on the control, then one per row), not a lateral lookup per row, which took 4.5 s for the
-- gauges of 10,000 repositories with 100 exceptions against 0.8 s this way (docs/EXCEPTIONS.md,
-- "Cost"). `LIKE` without `ESCAPE` uses the backslash, as `repository_like` is written.
CREATE VIEW reported_controls AS
SELECT c.account, c.region, c.repository, c.control, c.status, c.reason, c.changed_by,
       CASE WHEN m.id IS NULL THEN c.status ELSE 'EXCEPTED' END AS reported_status,
       m.id AS exception_id, m.reason AS exception_reason, m.approver AS exception_approver,
       m.expires_at AS exception_expires_at, m.source AS exception_source,
       m.repository_pattern AS exception_pattern
  FROM control_results c
  JOIN repositories r
    ON r.account = c.account AND r.region = c.region AND r.name = c.repository AND r.present
  LEFT JOIN (
        SELECT DISTINCT ON (f.account, f.region, f.repository, f.control)
               f.account, f.region, f.repository, f.control, x.id, x.reason, x.approver,
               x.expires_at, x.source, x.repository_pattern
          FROM control_results f
          JOIN control_exceptions x
            ON x.control = f.control
           AND (x.account IS NULL OR x.account = f.account)
           AND (x.region IS NULL OR x.region = f.region)
           AND f.repository LIKE x.repository_like
         WHERE f.status = 'FAIL' AND x.state = 'active' AND x.expires_at > now()
         ORDER BY f.account, f.region, f.repository, f.control, x.expires_at DESC, x.id) m
    ON m.account = c.account AND m.region = c.region AND m.repository = c.repository
   AND m.control = c.control;
