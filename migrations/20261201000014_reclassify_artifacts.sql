-- A manifest is an artifact only when its media type is one no runtime runs and its subject
-- is in the repository (src/facts/artifact.rs, NON_RUNNABLE_TYPES); the flag is recomputed at
-- every read of a digest instead of being kept once written. Rows flagged under the earlier
-- rule (any subject, or a tag shaped like a Cosign signature tag) that the new rule does not
-- confirm lose the flag here and get a signature re-check due now, so the worker judges them
-- as images at once instead of at their next event. The patterns below are the table as of
-- this migration; later changes to the table apply through the next read of each digest.
WITH unconfirmed AS (
    UPDATE images AS i
       SET artifact_of = NULL,
           artifact_kind = NULL,
           updated_at = now()
     WHERE i.artifact_of IS NOT NULL
       AND NOT (
           lower(coalesce(i.artifact_media_type, '')) ~ ('^(application/vnd\.cncf\.notary\.signature$'
               || '|application/vnd\.dev\.sigstore\.bundle'
               || '|application/vnd\.dev\.cosign\.simplesigning'
               || '|application/vnd\.dev\.cosign\.artifact\.(sig|sbom|att)'
               || '|application/spdx|text/spdx|application/vnd\.cyclonedx|application/vnd\.syft'
               || '|application/vnd\.in-toto|application/vnd\.dsse\.envelope)')
           AND EXISTS (SELECT 1 FROM images AS s
                        WHERE s.account = i.account AND s.region = i.region
                          AND s.repository = i.repository AND s.digest = i.artifact_of
                          AND s.present)
       )
    RETURNING i.account, i.region, i.repository, i.digest, i.pushed_at, i.present
)
INSERT INTO signature_rechecks (account, region, repository, digest, pushed_at, due_at)
SELECT account, region, repository, digest, coalesce(pushed_at, now()), now()
  FROM unconfirmed
 WHERE present
ON CONFLICT (account, region, repository, digest) DO UPDATE SET due_at = now();
