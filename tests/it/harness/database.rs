//! `TestDb`: a database of its own for one test, cloned from a template that is migrated once
//! per test run and shared by every test process, and dropped again in `Drop`.
//!
//! nextest runs each test in a process of its own, so "once" is kept by Postgres, not by the
//! process: the template is named after a hash of `migrations/` (a changed migration makes a
//! new template), and it is built under an advisory lock by whichever process comes first.

use std::path::Path;

use sha2::Digest as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

use ecr_audit::store::Store;

/// Every test database starts with it: what a leftover check looks for.
pub const DATABASE_PREFIX: &str = "it_";

/// The advisory lock key serialising template builds across test processes ("ecrtpl").
const TEMPLATE_LOCK: i64 = 0x6563_7274_706c;

/// The template's name, once this process knows it exists and is complete.
static TEMPLATE: OnceCell<String> = OnceCell::const_new();

pub struct TestDb {
    pub name: String,
    pub pool: PgPool,
    /// The URL of this database (for the binary under test).
    pub url: String,
    admin: PgConnectOptions,
}

impl TestDb {
    /// A fresh, fully migrated database of its own.
    pub async fn new() -> Self {
        Self::named(&format!("{DATABASE_PREFIX}{}", super::unique_suffix())).await
    }

    pub async fn named(name: &str) -> Self {
        let admin = admin_options();
        let template = TEMPLATE
            .get_or_init(|| ensure_template(admin.clone()))
            .await;
        let mut connection = admin.connect().await.expect("connect to the test Postgres");
        sqlx::query(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        ))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("clone {template} into {name}: {e}"));
        let _ = connection.close().await;
        let mut options = admin.clone().database(name);
        // ECR_AUDIT_TEST_AS_WORKER=1: every test's own pool and URL use the worker's role, to
        // find a privilege the worker lacks (tests that tamper as the owner then fail, as they
        // should; docs/EVIDENCE.md, "Database roles", lists the run).
        if std::env::var_os("ECR_AUDIT_TEST_AS_WORKER").is_some() {
            let mut connection = admin.connect().await.expect("connect as admin");
            sqlx::raw_sql(WORKER_LOGIN)
                .execute(&mut connection)
                .await
                .expect("login");
            let _ = connection.close().await;
            options = options.username(WORKER_LOGIN_NAME);
        }
        let url = options.to_url_lossy().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .expect("connect to the test database");
        Self {
            name: name.to_owned(),
            pool,
            url,
            admin,
        }
    }

    /// A `Store` on this database.
    pub fn store(&self) -> Store {
        Store::from_pool(self.pool.clone())
    }

    /// The URL of this database as the worker's role: a login role that is a member of
    /// `ecr_audit_worker`, which `migrate` granted the worker's privileges in the template.
    pub async fn worker_url(&self) -> String {
        let mut connection = self.admin.connect().await.expect("connect as admin");
        sqlx::raw_sql(WORKER_LOGIN)
            .execute(&mut connection)
            .await
            .expect("create the test worker's login role");
        let _ = connection.close().await;
        self.admin
            .clone()
            .database(&self.name)
            .username(WORKER_LOGIN_NAME)
            .to_url_lossy()
            .to_string()
    }

    /// A pool on this database as the worker's role (see [`TestDb::worker_url`]).
    pub async fn worker_pool(&self) -> PgPool {
        let url = self.worker_url().await;
        PgPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await
            .expect("connect as the worker's role")
    }
}

/// The login role tests use as the worker (the services trust local connections).
pub const WORKER_LOGIN_NAME: &str = "ecr_audit_it_worker";

/// Creates [`WORKER_LOGIN_NAME`] once per server, a member of the worker role; test processes
/// may race to it, and the loser finds it made.
const WORKER_LOGIN: &str = r"
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ecr_audit_it_worker') THEN
        BEGIN
            CREATE ROLE ecr_audit_it_worker LOGIN IN ROLE ecr_audit_worker;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$";

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        super::run_cleanup(&self.name, move || async move {
            let mut connection = admin.connect().await.map_err(|e| e.to_string())?;
            sqlx::query(&statement)
                .execute(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            let _ = connection.close().await;
            Ok(())
        });
    }
}

fn admin_options() -> PgConnectOptions {
    super::env("DATABASE_URL")
        .parse()
        .expect("DATABASE_URL is a Postgres URL")
}

/// `ecr_audit_tpl_` and the first 12 hex digits of a hash over every migration's name and text.
pub fn template_name(migrations: &Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(migrations)
        .expect("read migrations/")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    files.sort();
    let mut hash = sha2::Sha256::new();
    for file in files {
        hash.update(
            file.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        hash.update([0]);
        hash.update(std::fs::read(&file).expect("read a migration"));
        hash.update([0]);
    }
    format!("ecr_audit_tpl_{}", &hex::encode(hash.finalize())[..12])
}

/// Makes sure the migrated template exists, building it if no process has; returns its name.
async fn ensure_template(admin: PgConnectOptions) -> String {
    let name = template_name(&Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"));
    let mut connection = admin.connect().await.expect("connect to the test Postgres");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut connection)
        .await
        .expect("template lock");
    let ready: Option<bool> =
        sqlx::query_scalar("SELECT datistemplate FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_optional(&mut connection)
            .await
            .expect("look for the template");
    if ready != Some(true) {
        build_template(&mut connection, &admin, &name).await;
    }
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut connection)
        .await
        .expect("template unlock");
    let _ = connection.close().await;
    name
}

/// Creates and migrates `name`, then marks it a template. Only a complete template is marked,
/// so one left half-built by a killed process is found unmarked and built again.
async fn build_template(connection: &mut PgConnection, admin: &PgConnectOptions, name: &str) {
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut *connection)
        .await
        .expect("drop a half-built template");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut *connection)
        .await
        .expect("create the template");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin.clone().database(name))
        .await
        .expect("connect to the template");
    Store::from_pool(pool.clone())
        .migrate()
        .await
        .expect("migrate the template");
    // Cloning needs the template free of sessions: this one must be gone first.
    pool.close().await;
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
    ))
    .execute(&mut *connection)
    .await
    .expect("mark the template");
}
