-- Whether each digest runs somewhere and when it was last pulled (docs/RUNBOOK.md, "Images in
-- use"). `in_use` is NULL while unknown: no coverage read yet, BASIC scanning, or Inspector did
-- not report a count. The coverage status and reason are Inspector's strings, kept as given so
-- a reason this version does not know is still shown.
ALTER TABLE images
    ADD COLUMN in_use            boolean,
    ADD COLUMN in_use_count      bigint,
    ADD COLUMN last_in_use_at    timestamptz,
    ADD COLUMN last_pulled_at    timestamptz,
    ADD COLUMN coverage_status   text,
    ADD COLUMN coverage_reason   text,
    ADD COLUMN usage_observed_at timestamptz;

CREATE INDEX images_in_use ON images (in_use) WHERE in_use;
