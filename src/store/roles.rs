//! The worker's database role: what `migrate` grants it after the migrations (docs/EVIDENCE.md,
//! "Database roles").
//!
//! The role that runs migrations owns every table and function. The worker's role,
//! [`WORKER_ROLE`] (a group role without login; a login role is made a member of it), reads
//! every table, writes every table whose name does not start with `evidence`, and reaches the
//! evidence tables only through the `SECURITY DEFINER` functions of migration
//! `20261203000200`. The grants are made here rather than in a migration so that tables added
//! by later migrations are covered on the next `migrate` by the same rule (a new `evidence…`
//! table is read-only to the worker without anyone remembering to say so), and so that running
//! them again changes nothing.

use sqlx::PgPool;

use super::StoreError;

/// The group role the worker's login role belongs to.
pub const WORKER_ROLE: &str = "ecr_audit_worker";

/// Creates [`WORKER_ROLE`] unless it exists. Roles are shared by every database of the server,
/// so two `migrate`s may race to create it: the loser finds it made.
const CREATE_ROLE: &str = r"
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ecr_audit_worker') THEN
        BEGIN
            CREATE ROLE ecr_audit_worker NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$";

/// The worker's privileges, stated whole each time: every table readable; tables named
/// `evidence…` (and the migrations' own table) read-only but for adding tree heads; every other table writable but
/// never truncated, altered or given triggers (those need ownership); sequences usable; the
/// evidence functions executable. Nothing here lets the worker create objects.
const GRANT: &str = r"
DO $$
DECLARE
    t record;
BEGIN
    GRANT USAGE ON SCHEMA public TO ecr_audit_worker;
    REVOKE CREATE ON SCHEMA public FROM ecr_audit_worker;
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
        EXECUTE format('REVOKE ALL ON TABLE public.%I FROM ecr_audit_worker', t.tablename);
        IF t.tablename LIKE 'evidence%' OR t.tablename = '_sqlx_migrations' THEN
            EXECUTE format('GRANT SELECT ON TABLE public.%I TO ecr_audit_worker', t.tablename);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.%I TO ecr_audit_worker',
                           t.tablename);
        END IF;
    END LOOP;
    -- Views (reported_controls: the posture with exceptions applied) are read like tables.
    FOR t IN SELECT viewname FROM pg_views WHERE schemaname = 'public' LOOP
        EXECUTE format('REVOKE ALL ON TABLE public.%I FROM ecr_audit_worker', t.viewname);
        EXECUTE format('GRANT SELECT ON TABLE public.%I TO ecr_audit_worker', t.viewname);
    END LOOP;
    -- Tree heads are made and signed by the worker (src/evidence/heads.rs): it may add them,
    -- never change one (the table's triggers), and each must match the tree the database
    -- grew and, once anchored, the copy under Object Lock (docs/EVIDENCE.md).
    GRANT INSERT ON TABLE public.evidence_heads TO ecr_audit_worker;
    GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO ecr_audit_worker;
    GRANT EXECUTE ON FUNCTION public.evidence_lock_head(),
                              public.evidence_append(text[], text[]),
                              public.evidence_retire(text, text)
       TO ecr_audit_worker;
END
$$";

/// What [`grant_worker`] could do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerRole {
    /// The role exists and holds exactly the worker's privileges.
    Granted,
    /// The role does not exist and the migrating role may not create roles: a single-role
    /// setup, where whoever migrates is also the worker.
    Unavailable,
}

/// Creates the worker's role if needed and (re)states its privileges.
///
/// # Errors
/// When a statement other than creating the role fails.
pub(crate) async fn grant_worker(pool: &PgPool) -> Result<WorkerRole, StoreError> {
    if let Err(err) = sqlx::raw_sql(CREATE_ROLE).execute(pool).await {
        // 42501: insufficient privilege (no CREATEROLE); the rest of a single-role setup works.
        let denied = err
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| code == "42501");
        if denied {
            return Ok(WorkerRole::Unavailable);
        }
        return Err(err.into());
    }
    sqlx::raw_sql(GRANT).execute(pool).await?;
    Ok(WorkerRole::Granted)
}

/// Makes `login` (the user of the worker's `DATABASE_URL`) a member of [`WORKER_ROLE`].
/// Returns false when no such role exists: creating a login role (and its password) is the
/// operator's step (docs/DEPLOY.md).
///
/// # Errors
/// When the grant fails (the migrating role may not grant roles).
pub(crate) async fn admit_login(pool: &PgPool, login: &str) -> Result<bool, StoreError> {
    let superuser: Option<bool> =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = $1")
            .bind(login)
            .fetch_optional(pool)
            .await?;
    match superuser {
        None => return Ok(false),
        // A superuser passes every privilege check: membership would change nothing.
        Some(true) => return Ok(true),
        Some(false) => {}
    }
    // A role name cannot be a bound parameter; format's %I quotes it as an identifier.
    let statement: String = sqlx::query_scalar("SELECT format('GRANT ecr_audit_worker TO %I', $1)")
        .bind(login)
        .fetch_one(pool)
        .await?;
    sqlx::query(&statement).execute(pool).await?;
    Ok(true)
}
