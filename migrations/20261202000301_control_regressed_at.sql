-- The last PASS -> FAIL of a control, kept until its status moves again: a FAIL -> PASS within
-- ECR_AUDIT_RESTORED_WINDOW of it is recorded as "regressed and restored" naming both callers.
ALTER TABLE control_results
    ADD COLUMN regressed_at timestamptz,
    ADD COLUMN regressed_by text;
