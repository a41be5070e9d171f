-- Keep the deploy verdicts' in-memory view current (src/export/view.rs): every change to what a
-- verdict reads notifies channel `ecr_audit_ledger`, delivered by Postgres at commit (never for
-- a rolled-back batch) to every listening worker. Payloads are tab-separated:
--   image ACCOUNT REGION REPOSITORY DIGEST   one image row changed (re-read that image)
--   repository ACCOUNT REGION REPOSITORY      its settings or control results changed
--   posture                                    an exception changed (re-read every posture)
-- Postgres folds identical notifications of one transaction into one, so a batch that
-- touches an image three times notifies once. Triggers run whoever writes (worker, reconcile,
-- CLI), so no writer can forget to tell the view.
CREATE FUNCTION ledger_notify_image() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed images;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
    PERFORM pg_notify('ecr_audit_ledger', concat_ws(E'\t', 'image', changed.account,
                      changed.region, changed.repository, changed.digest));
    RETURN NULL;
END;
$$;

CREATE TRIGGER ledger_notify_image_insert
    AFTER INSERT OR DELETE ON images
    FOR EACH ROW EXECUTE FUNCTION ledger_notify_image();
-- An update that rewrites a row unchanged (a re-check that found the same) tells nobody.
CREATE TRIGGER ledger_notify_image_update
    AFTER UPDATE ON images
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION ledger_notify_image();

CREATE FUNCTION ledger_notify_repository() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed repositories;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
    PERFORM pg_notify('ecr_audit_ledger', concat_ws(E'\t', 'repository', changed.account,
                      changed.region, changed.name));
    RETURN NULL;
END;
$$;

CREATE FUNCTION ledger_notify_controls() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed control_results;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
    PERFORM pg_notify('ecr_audit_ledger', concat_ws(E'\t', 'repository', changed.account,
                      changed.region, changed.repository));
    RETURN NULL;
END;
$$;

CREATE TRIGGER ledger_notify_repository_insert
    AFTER INSERT OR DELETE ON repositories
    FOR EACH ROW EXECUTE FUNCTION ledger_notify_repository();
CREATE TRIGGER ledger_notify_repository_update
    AFTER UPDATE ON repositories
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION ledger_notify_repository();
CREATE TRIGGER ledger_notify_controls_insert
    AFTER INSERT OR DELETE ON control_results
    FOR EACH ROW EXECUTE FUNCTION ledger_notify_controls();
CREATE TRIGGER ledger_notify_controls_update
    AFTER UPDATE ON control_results
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION ledger_notify_controls();

CREATE FUNCTION ledger_notify_posture() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ecr_audit_ledger', 'posture');
    RETURN NULL;
END;
$$;

CREATE TRIGGER ledger_notify_exceptions
    AFTER INSERT OR UPDATE OR DELETE ON control_exceptions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_notify_posture();
