-- Signatures decide the verdict only when they verify (docs/SIGNATURES.md): each digest keeps
-- the per-signature verifications its current verdict was reached on (kind, reference,
-- identity, signing time, expiry, envelope digest, the check that failed or "verified"), and
-- the trust configuration version it was reached under, so `images --format json` shows them
-- and a changed trust policy finds every digest judged under another version.
ALTER TABLE images
    ADD COLUMN signature_verifications   jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN signature_policy_version  text;

CREATE INDEX images_signature_policy_version ON images (signature_policy_version)
    WHERE present AND artifact_of IS NULL AND signature_status IS NOT NULL;
