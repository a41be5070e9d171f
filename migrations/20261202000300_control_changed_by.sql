-- Whose request last changed a control's status: the caller's ARN, or 'unattributed' when no
-- request names one (a reconcile sweep found the change). NULL for rows written before it was
-- kept; the posture view then leaves it out.
ALTER TABLE control_results ADD COLUMN changed_by text;
