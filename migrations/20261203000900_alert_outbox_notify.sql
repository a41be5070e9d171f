-- Wake the alert publishers when alerts are queued: every statement that inserts into the
-- outbox notifies channel `ecr_audit_alerts`, delivered by Postgres at commit (never for a
-- rolled-back batch) to every listening worker, so an alert leaves within milliseconds of its
-- commit instead of at the publisher's next poll (src/alerts/publisher.rs). Payload-free:
-- Postgres folds identical notifications of one transaction into one.
CREATE FUNCTION alert_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ecr_audit_alerts', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER alert_outbox_notify
    AFTER INSERT ON alert_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION alert_outbox_notify();
