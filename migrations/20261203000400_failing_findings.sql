-- A control's current failure (docs/ALERTS.md, "Alerts on state"): since when it fails, and
-- whether it pages once it has failed longer than ECR_AUDIT_FAILING_GRACE ('new') or is history
-- a first sweep found ('baseline'). Set when the status becomes FAIL, kept while it stays FAIL,
-- cleared when it moves on. `failing_overdue_at` is when the worker found it failing beyond the
-- grace period and queued its one CONTROL_FAILING alert.
ALTER TABLE control_results
    ADD COLUMN failing_since      timestamptz,
    ADD COLUMN failing_class      text CHECK (failing_class IN ('baseline', 'new')),
    ADD COLUMN failing_overdue_at timestamptz;

-- Failures recorded before this version are history: baseline, never paged.
UPDATE control_results
   SET failing_since = changed_at, failing_class = 'baseline'
 WHERE status = 'FAIL';

CREATE INDEX control_results_failing_new ON control_results (failing_since)
    WHERE status = 'FAIL' AND failing_class = 'new' AND failing_overdue_at IS NULL;

-- The registries (account and region) a reconcile sweep has finished at least once: until
-- then, every failure a sweep finds there is baseline.
CREATE TABLE reconcile_registries (
    account        text        NOT NULL,
    region         text        NOT NULL,
    first_swept_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, region)
);

-- A deployment that already swept keeps sweeping as before: its registries are not "first"
-- again after the upgrade.
INSERT INTO reconcile_registries (account, region)
SELECT DISTINCT account, region FROM repositories
 WHERE EXISTS (SELECT 1 FROM reconcile_runs WHERE succeeded);
