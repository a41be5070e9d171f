-- Issue 15 part C (docs/SIGNATURES.md): what verifying one signature envelope concluded under
-- one trust configuration. Envelopes are content-addressed, so a row saves the download and
-- the cryptography the next time the same envelope is met. The key includes the subject and
-- the repository scope: the same envelope bytes copied onto another digest, or into a
-- repository another policy covers, must be judged again (digest mismatch, other policy).
-- Append-only: a new policy version adds rows; nothing is updated or deleted here.
CREATE TABLE signature_verifications (
    envelope_digest            text        NOT NULL,
    policy_version             text        NOT NULL,
    subject_digest             text        NOT NULL,
    scope                      text        NOT NULL,
    reference                  text        NOT NULL,
    result                     text        NOT NULL CHECK (result IN ('verified', 'skipped', 'rejected')),
    failure                    text,
    identity                   text,
    signing_time               timestamptz,
    expiry                     timestamptz,
    -- The whole SignatureVerification as JSON (facts::SignatureVerification).
    detail                     jsonb       NOT NULL,
    verified_at                timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (envelope_digest, policy_version, subject_digest, scope),
    CHECK ((result = 'rejected') = (failure IS NOT NULL))
);

CREATE INDEX signature_verifications_subject ON signature_verifications (subject_digest);

CREATE FUNCTION signature_verifications_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'signature_verifications is append-only';
END;
$$;
CREATE TRIGGER signature_verifications_no_change BEFORE UPDATE OR DELETE ON signature_verifications
    FOR EACH ROW EXECUTE FUNCTION signature_verifications_append_only();
