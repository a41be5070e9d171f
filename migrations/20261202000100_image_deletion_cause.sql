-- Why a digest was deleted and by whom or what, when the event that deleted it says:
-- `expired by lifecycle policy` with the policy rule, `deleted by BatchDeleteImage` with the
-- caller, `repository deleted` (DeleteRepository, with the caller) or `repository no longer
-- exists` (a reconcile sweep, nobody named). A later push clears both.
ALTER TABLE images
    ADD COLUMN deleted_reason text,
    ADD COLUMN deleted_by     text;
