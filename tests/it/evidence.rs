//! Evidence auditors can trust: the chain under concurrent writers, tampering in the database
//! and in every export format (detected and located), retention behind checkpoints, `--at`,
//! and the OCSF export validated against the pinned OCSF 1.3.0 class definition.
//!
//! Against the real Postgres (`TestDb`: a database per test, cloned from the migrated template) and
//! the real binary for the command line.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ecr_audit::alerts::outbox::{alert_kind, enqueue};
use ecr_audit::domain::{Actor, ControlId, Digest, RepositoryKey, SignatureStatus, Verdict};
use ecr_audit::evaluate::signature::SignatureVerdict;
use ecr_audit::evaluate::{ControlPolicy, ImageSettings, repository_controls};
use ecr_audit::evidence::ChainReport;
use ecr_audit::evidence::{ChainBreak, ChainedRecord, EvidenceDetail, EvidenceKind};
use ecr_audit::facts::{ImageFacts, ImageLookup, RegistryFacts, RepositoryFacts, ScanFacts};
use ecr_audit::parse::{AuditEvent, Change, RepositoryCall};
use ecr_audit::plan::{
    EventPlan, ImagePresence, ImageWrite, Plan, RepositoryWrite, ScanWrite, SignatureWrite,
};
use ecr_audit::store::Store;
use serde_json::{Value, json};
use sqlx::{ConnectOptions, PgPool};

fn key(repository: &str) -> RepositoryKey {
    crate::fixtures::repository_key(repository)
}

fn digest(n: u32) -> Digest {
    Digest::parse(&format!("sha256:{n:064x}")).expect("digest")
}

fn repository_facts(repository: &str, mode: &str) -> RepositoryFacts {
    crate::fixtures::repository_facts_at(&key(repository), mode, 0)
}

fn registry_facts() -> RegistryFacts {
    crate::fixtures::plain_registry_facts()
}

fn event(id: &str, change: Change, actor: Option<&str>) -> AuditEvent {
    crate::fixtures::audit_event(id, change, actor)
}

/// A repository setting change and the re-read that evaluates its controls.
pub(crate) fn repository_plan(id: &str, repository: &str, mode: &str) -> Plan {
    let facts = repository_facts(repository, mode);
    let controls = repository_controls(&facts, &registry_facts(), &ControlPolicy::default());
    Plan::Event(Box::new(EventPlan {
        distrusted: Vec::new(),
        event: event(
            id,
            Change::RepositoryChanged {
                repository: key(repository).name,
                call: RepositoryCall::PutImageTagMutability {
                    image_tag_mutability: Some(mode.to_owned()),
                },
            },
            Some("arn:aws:sts::123456789012:assumed-role/platform/mallory"),
        ),
        ignored: false,
        repositories: vec![RepositoryWrite {
            key: key(repository),
            facts,
            scanning: None,
            scanning_disagreements: Vec::new(),
            controls,
            only_if_new: false,
            reread: false,
            requested: false,
            fallback: false,
        }],
        image: None,
        deletions: Vec::new(),
        signatures: vec![],
        scans: vec![],
        reverify: None,
    }))
}

fn signature(repository: &str, n: u32, status: SignatureStatus) -> SignatureWrite {
    SignatureWrite {
        key: key(repository),
        digest: digest(n),
        pushed_at: Utc::now(),
        verdict: SignatureVerdict {
            status,
            sources: vec![],
            reason: format!("test verdict {}", status.as_str()),
            verifications: vec![],
            policy_version: None,
        },
        checked_at: Utc::now(),
        next_check: None,
    }
}

/// A push with its lookup, its settings at push time, a signature verdict and a scan.
#[allow(
    clippy::too_many_lines,
    reason = "one whole plan literal, every field spelled out as the store receives it"
)]
pub(crate) fn push_plan(id: &str, repository: &str, n: u32, tag: &str) -> Plan {
    let now = Utc::now();
    Plan::Event(Box::new(EventPlan {
        distrusted: Vec::new(),
        event: event(
            id,
            Change::ImagePushed {
                repository: key(repository).name,
                digest: digest(n),
                tag: Some(tag.to_owned()),
                manifest_media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
                artifact_media_type: None,
            },
            None,
        ),
        ignored: false,
        repositories: vec![],
        image: Some(ImageWrite {
            key: key(repository),
            digest: digest(n),
            presence: ImagePresence::Pushed,
            event_time: now,
            lookup: Some((
                now,
                ImageLookup::Found(ImageFacts {
                    tags: vec![tag.to_owned()],
                    pushed_at: Some(now),
                    manifest_media_type: None,
                    artifact_media_type: None,
                    subject_digest: None,
                    size_bytes: Some(10),
                    scan: None,
                    last_pulled_at: None,
                }),
            )),
            push_tag: Some(tag.to_owned()),
            settings: Some(ImageSettings {
                tag_immutability: Some("IMMUTABLE".into()),
                tag_protected: Some(true),
                encryption_type: Some("AES256".into()),
                kms_key: None,
                customer_managed_key: Some(false),
            }),
            settings_observed_at: None,
            pushed_by: Some(Actor {
                arn: "arn:aws:iam::123456789012:user/ci".into(),
                identity_type: Some("IAMUser".into()),
                issuer_arn: None,
            }),
            storage_class: None,
            artifact: None,
            disguise: None,
            removal: None,
        }),
        deletions: Vec::new(),
        signatures: vec![signature(repository, n, SignatureStatus::Pending)],
        scans: vec![ScanWrite {
            key: key(repository),
            digest: digest(n),
            facts: Some(ScanFacts {
                raw_status: "COMPLETE".into(),
                severity_counts: BTreeMap::from([("HIGH".to_owned(), 2)]),
            }),
            checked_at: now,
        }],
        reverify: None,
    }))
}

/// A later event about the digest that carries a new signature verdict.
fn signature_plan(id: &str, repository: &str, n: u32, status: SignatureStatus) -> Plan {
    Plan::Event(Box::new(EventPlan {
        distrusted: Vec::new(),
        event: event(
            id,
            Change::ImagePushRecorded {
                repository: key(repository).name,
                digest: digest(n),
                tag: None,
            },
            None,
        ),
        ignored: false,
        repositories: vec![],
        image: None,
        deletions: Vec::new(),
        signatures: vec![signature(repository, n, status)],
        scans: vec![],
        reverify: None,
    }))
}

fn delete_plan(id: &str, repository: &str, n: u32) -> Plan {
    Plan::Event(Box::new(EventPlan {
        distrusted: Vec::new(),
        event: event(
            id,
            Change::ImageDeleted {
                repository: key(repository).name,
                digest: digest(n),
                tag: None,
            },
            None,
        ),
        ignored: false,
        repositories: vec![],
        image: Some(ImageWrite {
            key: key(repository),
            digest: digest(n),
            presence: ImagePresence::Deleted,
            event_time: Utc::now(),
            lookup: None,
            push_tag: None,
            settings: None,
            settings_observed_at: None,
            pushed_by: None,
            storage_class: None,
            artifact: None,
            disguise: None,
            removal: None,
        }),
        deletions: Vec::new(),
        signatures: vec![],
        scans: vec![],
        reverify: None,
    }))
}

pub(crate) async fn commit(store: &Store, plans: Vec<Plan>) {
    store.commit_batch(&plans).await.expect("commit");
}

/// Two repositories, an image pushed, signed late, a control regression: about 20 records.
pub(crate) async fn history(store: &Store) {
    commit(store, vec![repository_plan("h1", "team/app", "IMMUTABLE")]).await;
    commit(store, vec![repository_plan("h2", "team/web", "MUTABLE")]).await;
    commit(store, vec![push_plan("h3", "team/app", 1, "v1")]).await;
    commit(
        store,
        vec![signature_plan(
            "h4",
            "team/app",
            1,
            SignatureStatus::Unsigned,
        )],
    )
    .await;
    commit(store, vec![repository_plan("h5", "team/app", "MUTABLE")]).await;
    commit(store, vec![push_plan("h6", "team/web", 2, "latest")]).await;
    commit(store, vec![repository_plan("h7", "team/web", "IMMUTABLE")]).await;
}

pub(crate) async fn records(pool: &PgPool) -> Vec<(ChainedRecord, String)> {
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM evidence ORDER BY seq")
        .fetch_all(pool)
        .await
        .expect("records");
    let mut out = Vec::new();
    for (seq, hash) in rows {
        let record: Value = sqlx::query_scalar(
            "SELECT json_build_object('seq', seq, 'recorded_at', to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    'event_id', event_id, 'event_time', to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    'kind', kind, 'outcome', outcome, 'account', account, 'region', region,
                    'repository', repository, 'digest', digest, 'tag', tag, 'actor', actor,
                    'detail', detail, 'prev_hash', prev_hash, 'format_version', format_version)
               FROM evidence WHERE seq = $1",
        )
        .bind(seq)
        .fetch_one(pool)
        .await
        .expect("record");
        out.push((serde_json::from_value(record).expect("record json"), hash));
    }
    out
}

/// Runs SQL as a superuser who switches the append-only triggers off: how tampering looks.
pub(crate) async fn tamper(pool: &PgPool, statements: &[&str]) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("disable triggers");
    for statement in statements {
        sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    tx.commit().await.expect("commit tampering");
}

fn database_url(pool: &PgPool) -> String {
    pool.connect_options().to_url_lossy().to_string()
}

pub(crate) fn ecr_audit(pool: &PgPool) -> assert_cmd::Command {
    let mut command = assert_cmd::Command::cargo_bin("ecr-audit").expect("binary");
    command
        .env("DATABASE_URL", database_url(pool))
        .env("ECR_AUDIT_LOG_FORMAT", "text");
    command
}

/// `ecr-audit verify FILE…` with no database in reach; returns the exit code and stdout.
pub(crate) fn verify_offline(files: &[&Path]) -> (Option<i32>, String) {
    let output = assert_cmd::Command::cargo_bin("ecr-audit")
        .expect("binary")
        .arg("verify")
        .args(files)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run verify");
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

pub(crate) fn export(pool: &PgPool, dir: &Path, format: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(format!(
        "export-{format}-{}.out",
        extra.join("_").replace(['/', '-'], "")
    ));
    let output = ecr_audit(pool)
        .args(["export", "--format", format, "--output"])
        .arg(&path)
        .args(extra)
        .output()
        .expect("run export");
    assert!(
        output.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!dir.join(format!("{}.partial", path.display())).exists());
    path
}

async fn assert_broken_at(store: &Store, expected: Box<dyn Fn(&ChainReport) -> bool>, what: &str) {
    let report = ecr_audit::evidence::verify_database(store.pool())
        .await
        .expect("verify");
    assert!(expected(&report), "{what}: {report:?}");
}

// ---------------------------------------------------------------------------------------------
// The chain under concurrent writers.

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn concurrent_writers_append_one_chain_that_never_forks() {
    let db = crate::harness::TestDb::new().await;
    let pool = db.pool.clone();
    // The writers are the worker's role: appends go through evidence_append.
    let store = Store::from_pool(db.worker_pool().await);
    let writers = 8;
    let batches = 12;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..batches {
                // Three plans per batch: two on the writer's own repository, one on a shared
                // repository that every writer touches, so batches contend for row locks too.
                let own = format!("team/w{writer}");
                let mode = if batch % 2 == 0 {
                    "IMMUTABLE"
                } else {
                    "MUTABLE"
                };
                let plans = vec![
                    repository_plan(&format!("w{writer}-{batch}-a"), &own, mode),
                    push_plan(
                        &format!("w{writer}-{batch}-b"),
                        &own,
                        writer * 100 + batch,
                        "v",
                    ),
                    repository_plan(&format!("w{writer}-{batch}-c"), "team/shared", mode),
                ];
                let mut attempt = 0;
                loop {
                    match store.commit_batch(&plans).await {
                        Ok(_) => break,
                        Err(err) if err.is_transient() && attempt < 10 => attempt += 1,
                        Err(err) => panic!("writer {writer}: {err}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }

    let chain = records(&pool).await;
    let events = chain.iter().filter(|(r, _)| r.kind.is_event()).count();
    assert_eq!(
        events,
        (writers * batches * 3) as usize,
        "every event recorded once"
    );
    let mut predecessors = HashSet::new();
    let mut previous = ecr_audit::evidence::GENESIS_HASH.to_owned();
    for (index, (record, hash)) in chain.iter().enumerate() {
        assert_eq!(record.seq, index as i64 + 1, "seq without gaps");
        assert_eq!(
            record.prev_hash, previous,
            "seq {} links to seq {}",
            record.seq, index
        );
        assert_eq!(record.compute_hash(), *hash, "seq {} hash", record.seq);
        assert!(
            predecessors.insert(record.prev_hash.clone()),
            "two records name the same predecessor: a fork at seq {}",
            record.seq
        );
        previous = hash.clone();
    }
    assert!(matches!(
        ecr_audit::evidence::verify_database(store.pool()).await.expect("verify"),
        ChainReport::Valid { records, .. } if records == chain.len() as u64
    ));
}

// ---------------------------------------------------------------------------------------------
// Tampering in the database.

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn tampering_in_the_database_is_detected_and_located() {
    let db = crate::harness::TestDb::new().await;
    let pool = db.pool.clone();
    let store = Store::from_pool(pool.clone());
    history(&store).await;
    let chain = records(&pool).await;
    let n = chain.len() as i64;
    assert!(n >= 15, "history has {n} records");
    assert!(matches!(
        ecr_audit::evidence::verify_database(store.pool())
            .await
            .expect("verify"),
        ChainReport::Valid { .. }
    ));

    // Each case on a fresh copy of the same database content.
    let snapshot = "CREATE TABLE evidence_copy AS SELECT * FROM evidence";
    tamper(&pool, &[snapshot]).await;
    let restore = [
        "DELETE FROM evidence",
        "INSERT INTO evidence SELECT * FROM evidence_copy",
    ];
    let hash = |seq: i64| chain[seq as usize - 1].1.clone();

    // A forged record in place of seq 7, correctly linked to seq 6 and with a valid hash of its
    // own: seq 8 no longer links to it.
    let mut inserted = chain[6].0.clone();
    inserted.event_id = "forged".into();
    let inserted_hash = inserted.compute_hash();
    // One re-hashed edit: the record itself checks out, the next record's link breaks.
    let mut rehashed = chain[8].0.clone();
    rehashed.actor = Some("arn:aws:iam::123456789012:user/nobody".into());
    // One record appended after the head without moving the head row.
    let mut appended = chain[0].0.clone();
    appended.seq = n + 1;
    appended.event_id = "appended".into();
    appended.prev_hash = hash(n);

    type Expect = Box<dyn Fn(&ChainReport) -> bool>;
    let cases: Vec<(&str, Vec<String>, Expect)> = vec![
        (
            "edited",
            vec!["UPDATE evidence SET outcome = 'ignored' WHERE seq = 9".into()],
            Box::new(|r| matches!(r, ChainReport::Broken(ChainBreak::HashMismatch { seq: 9, .. }))),
        ),
        (
            "edited and re-hashed",
            vec![format!(
                "UPDATE evidence SET actor = '{}', hash = '{}' WHERE seq = 9",
                rehashed.actor.as_deref().unwrap_or_default(),
                rehashed.compute_hash()
            )],
            Box::new(|r| matches!(r, ChainReport::Broken(ChainBreak::Broken { seq: 10, .. }))),
        ),
        (
            "removed from the middle",
            vec!["DELETE FROM evidence WHERE seq = 7".into()],
            Box::new(|r| {
                matches!(r, ChainReport::Broken(ChainBreak::OutOfSequence { seq: 8, expected: 7, .. }))
            }),
        ),
        (
            "removed from the start",
            vec!["DELETE FROM evidence WHERE seq = 1".into()],
            Box::new(|r| matches!(r, ChainReport::Broken(ChainBreak::Unanchored { seq: 2, .. }))),
        ),
        (
            "removed from the end",
            vec![format!("DELETE FROM evidence WHERE seq = {n}")],
            Box::new(move |r| {
                matches!(r, ChainReport::HeadMismatch { last_seq, head_seq, .. } if *last_seq == n - 1 && *head_seq == n)
            }),
        ),
        (
            "inserted",
            vec![
                "DELETE FROM evidence WHERE seq = 7".into(),
                format!(
                    "INSERT INTO evidence SELECT seq, recorded_at, 'forged', event_time, kind, outcome, account, region,
                            repository, digest, tag, actor, detail, prev_hash, '{inserted_hash}', format_version
                       FROM evidence_copy WHERE seq = 7"
                ),
            ],
            Box::new(|r| matches!(r, ChainReport::Broken(ChainBreak::Broken { seq: 8, .. }))),
        ),
        (
            "appended behind the head's back",
            vec![format!(
                "INSERT INTO evidence (seq, recorded_at, event_id, event_time, kind, outcome, detail, prev_hash, hash)
                 SELECT {}, recorded_at, 'appended', event_time, kind, outcome, detail, '{}', '{}'
                   FROM evidence_copy WHERE seq = 1",
                n + 1,
                hash(n),
                appended.compute_hash()
            )],
            Box::new(|r| matches!(r, ChainReport::HeadMismatch { .. } | ChainReport::Broken(_))),
        ),
        (
            "reordered",
            vec![
                "UPDATE evidence SET seq = -5 WHERE seq = 5".into(),
                "UPDATE evidence SET seq = 5 WHERE seq = 6".into(),
                "UPDATE evidence SET seq = 6 WHERE seq = -5".into(),
            ],
            Box::new(|r| matches!(r, ChainReport::Broken(ChainBreak::HashMismatch { seq: 5, .. }))),
        ),
    ];
    for (what, statements, expected) in cases {
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        tamper(&pool, &statements).await;
        assert_broken_at(&store, expected, what).await;
        tamper(&pool, &restore).await;
    }
    assert!(matches!(
        ecr_audit::evidence::verify_database(store.pool())
            .await
            .expect("verify"),
        ChainReport::Valid { .. }
    ));

    // The same through the command line: exit code 2 and the record named.
    tamper(&pool, &["DELETE FROM evidence WHERE seq = 7"]).await;
    let output = ecr_audit(&pool).arg("verify").output().expect("run");
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("BROKEN") && text.contains("seq 8") && text.contains(&chain[7].0.event_id),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tampering in export files.

/// How a test alters a file: by its lines (each record is one line in every format).
struct ExportFile {
    lines: Vec<String>,
    /// Index of the first record line (CSV has a header).
    first_record: usize,
}

impl ExportFile {
    fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).expect("read export");
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect();
        let first_record = usize::from(lines[0].starts_with("record_type"));
        Self {
            lines,
            first_record,
        }
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.lines.join("\r\n") + "\r\n").expect("write");
        path
    }

    /// The line of the k-th record (0-based).
    fn record_line(&self, k: usize) -> usize {
        self.first_record + k
    }
}

/// Changes one field of the record on `line` in the file's own format; for OCSF, `mapped`
/// edits an OCSF attribute instead of the chained record it carries.
fn edit_record(format: &str, line: &str, mapped: bool) -> String {
    match format {
        "csv" => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(line.as_bytes());
            let row = reader.records().next().expect("row").expect("csv row");
            let mut cells: Vec<String> = row.iter().map(str::to_owned).collect();
            cells[6] = if cells[6] == "ignored" {
                "processed"
            } else {
                "ignored"
            }
            .to_owned();
            let mut writer = csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(vec![]);
            writer.write_record(&cells).expect("write row");
            String::from_utf8(writer.into_inner().expect("flush"))
                .expect("utf8")
                .trim_end()
                .to_owned()
        }
        "jsonl" => {
            let mut value: Value = serde_json::from_str(line).expect("json");
            value["outcome"] = json!("tampered");
            value.to_string()
        }
        _ => {
            let mut value: Value = serde_json::from_str(line).expect("json");
            if mapped {
                value["compliance"]["status"] = json!("Tampered");
            } else {
                value["unmapped"]["ecr_audit"]["record"]["outcome"] = json!("tampered");
            }
            value.to_string()
        }
    }
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn tampering_in_every_export_format_is_detected_and_located() {
    let db = crate::harness::TestDb::new().await;
    let pool = db.pool.clone();
    let store = Store::from_pool(pool.clone());
    history(&store).await;
    let chain = records(&pool).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let seq_event = |k: usize| {
        format!(
            "record seq {} (event {})",
            chain[k].0.seq, chain[k].0.event_id
        )
    };

    for format in ["csv", "jsonl", "ocsf"] {
        let path = export(&pool, dir.path(), format, &[]);
        let (code, text) = verify_offline(&[&path]);
        assert_eq!(code, Some(0), "{format}: untouched export: {text}");
        assert!(
            text.starts_with("OK: ") && text.contains("starting at the genesis"),
            "{format}: {text}"
        );
        let file = ExportFile::read(&path);
        assert_eq!(
            file.lines.len(),
            file.first_record + chain.len() + 1,
            "{format}: records + manifest"
        );
        let case = |name: &str, lines: Vec<String>| {
            ExportFile {
                lines,
                first_record: file.first_record,
            }
            .write(dir.path(), &format!("{format}-{name}"))
        };
        let check = |name: &str, lines: Vec<String>, expect: &[&str]| {
            let tampered = case(name, lines);
            let (code, text) = verify_offline(&[&tampered]);
            assert_eq!(code, Some(2), "{format} {name}: {text}");
            assert!(text.starts_with("BROKEN: "), "{format} {name}: {text}");
            for part in expect {
                assert!(
                    text.contains(part),
                    "{format} {name}: expected {part:?} in {text}"
                );
            }
        };

        // Edited in place.
        let mut lines = file.lines.clone();
        let k = 8;
        lines[file.record_line(k)] = edit_record(format, &lines[file.record_line(k)], false);
        check("edited", lines, &[&seq_event(k), "was edited"]);
        if format == "ocsf" {
            let mut lines = file.lines.clone();
            lines[file.record_line(k)] = edit_record(format, &lines[file.record_line(k)], true);
            check(
                "mapped-edit",
                lines,
                &[&seq_event(k), "OCSF attributes differ"],
            );
        }

        // Removed from the middle: the record after the gap is named.
        let mut lines = file.lines.clone();
        lines.remove(file.record_line(6));
        check("removed", lines, &[&seq_event(7), "expected seq 7"]);

        // Removed from the end, with the manifest left as it was.
        let mut lines = file.lines.clone();
        lines.remove(file.record_line(chain.len() - 1));
        check("truncated", lines, &["records were removed from the end"]);

        // The manifest removed (a file cut short).
        let mut lines = file.lines.clone();
        lines.pop();
        check(
            "no-manifest",
            lines,
            &["no closing manifest", &seq_event(chain.len() - 1)],
        );

        // Inserted: a copy of a record placed again later.
        let mut lines = file.lines.clone();
        let copy = lines[file.record_line(3)].clone();
        lines.insert(file.record_line(10), copy);
        check(
            "inserted",
            lines,
            &[&seq_event(3), "reordered or duplicated"],
        );

        // Reordered: two neighbours swapped.
        let mut lines = file.lines.clone();
        lines.swap(file.record_line(4), file.record_line(5));
        check("reordered", lines, &[&seq_event(5), "expected seq 5"]);

        // The first record removed: the file no longer starts at the genesis.
        let mut lines = file.lines.clone();
        lines.remove(file.record_line(0));
        check("headless", lines, &["manifest does not match"]);
    }
}

#[tokio::test]
async fn a_filtered_export_verifies_and_says_what_it_cannot_prove() {
    let db = crate::harness::TestDb::new().await;
    let pool = db.pool.clone();
    let store = Store::from_pool(pool.clone());
    history(&store).await;
    let dir = tempfile::tempdir().expect("tempdir");

    let by_repository = export(&pool, dir.path(), "jsonl", &["--repository", "team/app"]);
    let (code, text) = verify_offline(&[&by_repository]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("filtered by") && text.contains("cannot be proven"),
        "{text}"
    );
    let file = ExportFile::read(&by_repository);
    let records: Vec<Value> = file.lines[..file.lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert!(!records.is_empty());
    assert!(records.iter().all(|r| r["repository"] == "team/app"));

    // A genuine record of another repository slipped in is refused: it is outside the filter.
    let full = ExportFile::read(&export(&pool, dir.path(), "jsonl", &[]));
    let foreign = full.lines[..full.lines.len() - 1]
        .iter()
        .find(|l| l.contains("\"repository\":\"team/web\""))
        .expect("a team/web record")
        .clone();
    let foreign_seq = serde_json::from_str::<Value>(&foreign).expect("json")["seq"].clone();
    let mut lines = file.lines.clone();
    let position = lines
        .iter()
        .position(|l| {
            serde_json::from_str::<Value>(l).expect("json")["seq"].as_i64() > foreign_seq.as_i64()
        })
        .unwrap_or(lines.len() - 1);
    lines.insert(position, foreign);
    let tampered = ExportFile {
        lines,
        first_record: 0,
    }
    .write(dir.path(), "filtered-inserted");
    let (code, text) = verify_offline(&[&tampered]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("does not satisfy the export's filters")
            && text.contains(&format!("seq {foreign_seq}")),
        "{text}"
    );

    // Control transitions only, in CSV.
    let by_control = export(&pool, dir.path(), "csv", &["--control", "ECR.2"]);
    let (code, text) = verify_offline(&[&by_control]);
    assert_eq!(code, Some(0), "{text}");
    let rows = ExportFile::read(&by_control).lines;
    assert!(rows.len() > 3, "header, transitions, manifest");
    assert!(
        rows[1..rows.len() - 1]
            .iter()
            .all(|r| r.contains("control_transition") && r.contains("ECR.2"))
    );
}

// ---------------------------------------------------------------------------------------------
// Retention.

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn retention_archives_a_prefix_behind_a_checkpoint_and_the_chain_still_verifies() {
    let db = crate::harness::TestDb::new().await;
    // The pipeline and the archive run as the worker's role; the refusals below are the
    // owner's (a superuser here), whom only the triggers stop.
    let pool = db.pool.clone();
    let worker = db.worker_pool().await;
    let store = Store::from_pool(worker.clone());
    // The owner's decision: records of this test are seconds old.
    sqlx::query("UPDATE evidence_settings SET retention_min_age = interval '0'")
        .execute(&pool)
        .await
        .expect("owner sets the minimum age");
    history(&store).await;
    let old = records(&pool).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut_off = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    commit(
        &store,
        vec![repository_plan("late1", "team/app", "IMMUTABLE")],
    )
    .await;
    commit(&store, vec![push_plan("late2", "team/app", 9, "v9")]).await;

    // A plain DELETE is refused: no checkpoint covers the records.
    let refused = sqlx::query("DELETE FROM evidence WHERE seq <= 3")
        .execute(&pool)
        .await;
    assert!(
        refused.is_err_and(|e| e.to_string().contains("checkpoint")),
        "delete without a checkpoint"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("evidence-2026-10.jsonl");
    let output = ecr_audit(&worker)
        .args([
            "evidence",
            "archive",
            "--before",
            &cut_off.to_rfc3339(),
            "--output",
        ])
        .arg(&archive)
        .output()
        .expect("run archive");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains(&format!(
            "archived {} records (seq 1..{})",
            old.len(),
            old.len()
        )),
        "{text}"
    );

    // The database: only the newer records and the checkpoint remain, and the chain verifies
    // from the checkpoint's claim.
    let remaining = records(&pool).await;
    assert_eq!(remaining[0].0.seq, old.len() as i64 + 1);
    let checkpoint = &remaining.last().expect("checkpoint").0;
    assert_eq!(checkpoint.kind, EvidenceKind::Checkpoint);
    assert_eq!(
        checkpoint.detail["continues_from"],
        json!({"seq": old.len(), "hash": old.last().expect("last").1})
    );
    assert!(matches!(
        ecr_audit::evidence::verify_database(store.pool()).await.expect("verify"),
        ChainReport::Valid { continues_from: Some(seq), .. } if seq == old.len() as i64
    ));
    let output = ecr_audit(&worker)
        .arg("verify")
        .output()
        .expect("run verify");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("archived behind a checkpoint"));
    assert_eq!(
        checkpoint.detail["archived"]["sha256"],
        json!(sha256_file(&archive)),
        "the checkpoint names the archive's digest"
    );

    // The archive alone, a full export alone (anchored by the checkpoint it contains), and
    // the two together as one chain.
    let (code, text) = verify_offline(&[&archive]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("archive of a chain prefix") && text.contains("starting at the genesis"),
        "{text}"
    );
    let current = export(&pool, dir.path(), "ocsf", &[]);
    let (code, text) = verify_offline(&[&current]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("as the checkpoint at seq"), "{text}");
    let (code, text) = verify_offline(&[&archive, &current]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("continuing the previous file"), "{text}");
    // Out of order, the files do not join.
    let (code, text) = verify_offline(&[&current, &archive]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("does not continue the previous file"),
        "{text}"
    );

    // What retention allows stays narrow: not the checkpoint, not a record in the middle, and
    // never an UPDATE or TRUNCATE.
    let newest = remaining.last().expect("last").0.seq;
    for statement in [
        format!("DELETE FROM evidence WHERE seq = {newest}"),
        format!("DELETE FROM evidence WHERE seq = {}", old.len() + 2),
        "UPDATE evidence SET outcome = 'x'".to_owned(),
        "TRUNCATE evidence".to_owned(),
    ] {
        let result = sqlx::query(&statement).execute(&pool).await;
        assert!(
            result.is_err_and(|e| e.to_string().contains("append-only")),
            "{statement}"
        );
    }

    // Nothing more to archive before the same cut-off.
    let output = ecr_audit(&worker)
        .args([
            "evidence",
            "archive",
            "--before",
            &cut_off.to_rfc3339(),
            "--output",
        ])
        .arg(dir.path().join("again.jsonl"))
        .output()
        .expect("run archive");
    assert!(String::from_utf8_lossy(&output.stdout).contains("nothing to archive"));
}

fn sha256_file(path: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read")))
}

// ---------------------------------------------------------------------------------------------
// "As of time T".

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "an end-to-end scenario reads best as one story, step by step"
)]
async fn posture_and_images_answer_as_of_a_past_time_from_the_evidence() {
    let db = crate::harness::TestDb::new().await;
    let pool = db.pool.clone();
    let store = Store::from_pool(pool.clone());
    commit(&store, vec![repository_plan("a1", "team/app", "IMMUTABLE")]).await;
    commit(&store, vec![push_plan("a2", "team/app", 1, "v1")]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before_regression = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    commit(&store, vec![repository_plan("a3", "team/app", "MUTABLE")]).await;
    commit(
        &store,
        vec![signature_plan(
            "a4",
            "team/app",
            1,
            SignatureStatus::Unsigned,
        )],
    )
    .await;
    commit(&store, vec![push_plan("a5", "team/app", 2, "v2")]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after_everything = Utc::now();
    commit(&store, vec![delete_plan("a6", "team/app", 1)]).await;

    let json = |args: &[&str]| -> Value {
        let output = ecr_audit(&pool)
            .args(args)
            .args(["--format", "json"])
            .output()
            .expect("run");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("json")
    };
    let at = |t: DateTime<Utc>| t.to_rfc3339();

    let then = json(&["posture", "--at", &at(before_regression)]);
    assert_eq!(then[0]["controls"]["ECR.2"]["status"], "PASS", "{then}");
    let now = json(&["posture"]);
    assert_eq!(now[0]["controls"]["ECR.2"]["status"], "FAIL");
    assert_eq!(
        json(&["posture", "--at", &at(Utc::now())]),
        now,
        "--at now equals the live view"
    );

    let images_then = json(&["images", "--at", &at(before_regression)]);
    assert_eq!(
        images_then.as_array().map(Vec::len),
        Some(1),
        "{images_then}"
    );
    assert_eq!(images_then[0]["digest"], json!(digest(1).to_string()));
    assert_eq!(images_then[0]["signature"]["status"], "PENDING");
    assert_eq!(images_then[0]["scan"]["status"], "SCANNED");
    assert_eq!(images_then[0]["scan"]["high"], 2);
    assert_eq!(images_then[0]["tag_immutability"], "IMMUTABLE");
    assert_eq!(
        images_then[0]["pushed_by"],
        "arn:aws:iam::123456789012:user/ci"
    );

    let images_later = json(&["images", "--at", &at(after_everything)]);
    let statuses: BTreeMap<String, String> = images_later
        .as_array()
        .expect("array")
        .iter()
        .map(|i| {
            (
                i["digest"].as_str().unwrap_or_default().to_owned(),
                i["signature"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        statuses.get(&digest(1).to_string()).map(String::as_str),
        Some("UNSIGNED")
    );
    assert_eq!(
        statuses.get(&digest(2).to_string()).map(String::as_str),
        Some("PENDING")
    );

    // After the delete, --at now agrees with the live view, field for field.
    let live = json(&["images"]);
    let replayed = json(&["images", "--at", &at(Utc::now())]);
    assert_eq!(replayed, live);
    assert_eq!(live.as_array().map(Vec::len), Some(1));
    let _ = ControlId::ALL;
    let _ = Verdict::pass("");
}

// ---------------------------------------------------------------------------------------------
// OCSF against the pinned class definition.

#[tokio::test]
async fn the_ocsf_export_validates_against_the_ocsf_1_3_0_compliance_finding_class() {
    let db = crate::harness::TestDb::new().await;
    let pool = db.pool.clone();
    let store = Store::from_pool(pool.clone());
    history(&store).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = export(&pool, dir.path(), "ocsf", &[]);
    let python = std::env::var("ECR_AUDIT_EMULATOR_PYTHON")
        .expect("ECR_AUDIT_EMULATOR_PYTHON (the venv of scripts/services, with tests/ocsf/requirements.txt)");
    let validate = |file: &Path| {
        std::process::Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ocsf/validate.py"))
            .arg(file)
            .output()
            .expect("run the OCSF validator")
    };
    let output = validate(&path);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records = records(&pool).await.len();
    assert!(
        text.contains(&format!("{} events checked against OCSF 1.3.0 (1 base_event, {records} compliance_finding): 0 problems", records + 1)),
        "{text}"
    );

    // The validator is not a rubber stamp: a missing required attribute and a wrong type fail.
    let mut lines: Vec<Value> = std::fs::read_to_string(&path)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    lines[0]
        .as_object_mut()
        .expect("object")
        .remove("finding_info");
    lines[1]["time"] = json!("yesterday");
    let broken = dir.path().join("broken.ocsf");
    std::fs::write(
        &broken,
        lines
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .expect("write");
    let output = validate(&broken);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("line 1: schema export: finding_info: required attribute missing"),
        "{text}"
    );
    assert!(
        text.contains("line 2: schema export: time: expected timestamp_t"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// A chain written before typed evidence (issue 13): tests/fixtures/evidence-v1.sql.

/// The fixture: evidence and alert rows written by the code before typed evidence.
pub(crate) async fn load_v1_fixture(pool: &PgPool) {
    sqlx::raw_sql(include_str!("../fixtures/evidence-v1.sql"))
        .execute(pool)
        .await
        .expect("load the fixture");
    // The tree's migration adopts the chain it finds; the fixture arrives after the
    // migrations, so it is adopted here exactly as the migration would have.
    sqlx::query("SELECT evidence_tree_adopt()")
        .execute(pool)
        .await
        .expect("adopt the fixture's chain into the tree");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_chain_written_before_typed_evidence_verifies_in_the_database_and_offline(pool: PgPool) {
    load_v1_fixture(&pool).await;
    let store = Store::from_pool(pool.clone());
    let report = ecr_audit::evidence::verify_database(store.pool())
        .await
        .expect("verify");
    assert!(
        matches!(
            report,
            ChainReport::Valid {
                records: 13,
                continues_from: Some(28),
                ..
            }
        ),
        "{report:?}"
    );

    // Every stored record reads as its kind and its typed detail, and hashes as stored.
    let chain = records(&pool).await;
    let kinds: HashSet<&str> = chain.iter().map(|(r, _)| r.kind.as_str()).collect();
    for kind in [
        "checkpoint",
        "control_transition",
        "signature_transition",
        "image_pushed",
        "image_deleted",
        "image_push_recorded",
        "repository_changed",
        "ignored",
    ] {
        assert!(kinds.contains(kind), "the fixture has a {kind} record");
    }
    for (record, hash) in &chain {
        assert_eq!(&record.compute_hash(), hash, "seq {}", record.seq);
        assert!(
            !matches!(record.kind, EvidenceKind::Other(_)),
            "{}",
            record.kind
        );
        assert_ne!(
            record.typed_detail(),
            EvidenceDetail::Unreadable,
            "seq {} ({})",
            record.seq,
            record.kind
        );
    }

    // Every export format of the old chain verifies offline.
    let dir = tempfile::tempdir().expect("tempdir");
    for format in ["jsonl", "csv", "ocsf"] {
        let path = export(&pool, dir.path(), format, &[]);
        let (code, text) = verify_offline(&[&path]);
        assert_eq!(code, Some(0), "{format}: {text}");
        assert!(
            text.contains("as the checkpoint at seq"),
            "{format}: {text}"
        );
    }

    // New records continue the old chain.
    commit(&store, vec![repository_plan("v2-1", "team/app", "MUTABLE")]).await;
    let report = ecr_audit::evidence::verify_database(store.pool())
        .await
        .expect("verify");
    assert!(
        matches!(report, ChainReport::Valid { records, continues_from: Some(28), .. } if records > 13),
        "{report:?}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn alerts_and_history_read_a_chain_written_before_typed_evidence(pool: PgPool) {
    load_v1_fixture(&pool).await;
    let store = Store::from_pool(pool.clone());
    let stored: BTreeMap<String, (String, Value)> = sqlx::query_as::<_, (String, String, Value)>(
        "SELECT evidence_event_id, detail_type, detail FROM alert_outbox",
    )
    .fetch_all(&pool)
    .await
    .expect("alerts")
    .into_iter()
    .map(|(id, detail_type, detail)| (id, (detail_type, detail)))
    .collect();

    // The typed reading pages on exactly the records the old code paged on, with the same
    // alert (the push columns come from the images table, which the fixture does not hold).
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("DELETE FROM alert_outbox")
        .execute(&mut *tx)
        .await
        .expect("empty the outbox");
    let chain = records(&pool).await;
    let mut paged = 0;
    for (record, hash) in &chain {
        let Some(kind) = alert_kind(record) else {
            continue;
        };
        paged += 1;
        enqueue(&mut tx, record, hash, kind).await.expect("enqueue");
        let (detail_type, detail): (String, Value) = sqlx::query_as(
            "SELECT detail_type, detail FROM alert_outbox WHERE evidence_event_id = $1",
        )
        .bind(&record.event_id)
        .fetch_one(&mut *tx)
        .await
        .expect("alert row");
        let (old_type, mut old) = stored[&record.event_id].clone();
        let mut new = detail;
        for push_member in ["tag", "pushed_by", "pushed_at"] {
            old.as_object_mut().map(|o| o.remove(push_member));
            new.as_object_mut().map(|o| o.remove(push_member));
        }
        // `explain` was added to signature alerts after the fixture was written (fields are
        // only ever added within a schema version, docs/ALERTS.md).
        if let Some(explain) = new.as_object_mut().and_then(|o| o.remove("explain")) {
            assert_eq!(
                explain.as_str(),
                record
                    .digest
                    .as_ref()
                    .map(|d| format!(
                        "ecr-audit explain team/app@{d} --account 123456789012 --region us-east-1"
                    ))
                    .as_deref()
            );
        }
        assert_eq!((detail_type, new), (old_type, old), "{}", record.event_id);
    }
    assert_eq!(
        paged, 2,
        "the retained chain holds one signature alert and one regression"
    );
    tx.rollback().await.expect("rollback");

    // `--at` replays the old chain: the retained repository and digest are there.
    let (state, coverage) = ecr_audit::evidence::history::as_of(store.pool(), Utc::now())
        .await
        .expect("as of");
    assert!(coverage.archived_before);
    let posture = state.posture(Some("team/app"));
    assert_eq!(posture.len(), 1);
    assert_eq!(posture[0].controls["ECR.2"].status, "PASS");
    let images = state.images(Some("team/app"));
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].signature.status.as_deref(), Some("UNSIGNED"));
    assert_eq!(images[0].tag_immutability.as_deref(), Some("IMMUTABLE"));
    assert_eq!(images[0].scan.high, Some(2));
}

#[tokio::test]
async fn a_batch_of_paging_transitions_queues_each_alert_with_its_own_push() {
    let db = crate::harness::TestDb::new().await;
    let store = Store::from_pool(db.pool.clone()).with_alerts(true);
    let pushes = [
        (1, "team/app", "v1"),
        (2, "team/app", "v2"),
        (3, "team/web", "v3"),
    ];
    commit(
        &store,
        pushes
            .iter()
            .map(|(n, repository, tag)| push_plan(&format!("p{n}"), repository, *n, tag))
            .collect(),
    )
    .await;
    // One batch: three digests go UNSIGNED, queued together under the head lock.
    commit(
        &store,
        pushes
            .iter()
            .map(|(n, repository, _)| {
                signature_plan(&format!("s{n}"), repository, *n, SignatureStatus::Unsigned)
            })
            .collect(),
    )
    .await;
    let alerts: Vec<Value> = sqlx::query_scalar(
        "SELECT detail FROM alert_outbox WHERE detail_type = 'ECR Audit Signature Alert'
          ORDER BY evidence_seq",
    )
    .fetch_all(&db.pool)
    .await
    .expect("alerts");
    assert_eq!(alerts.len(), pushes.len(), "{alerts:#?}");
    for (alert, (n, repository, tag)) in alerts.iter().zip(pushes) {
        assert_eq!(alert["alert"], "UNSIGNED", "{alert}");
        assert_eq!(alert["digest"], digest(n).as_str(), "{alert}");
        assert_eq!(alert["repository"], repository, "{alert}");
        assert_eq!(alert["tag"], tag, "{alert}");
        assert_eq!(
            alert["pushed_by"], "arn:aws:iam::123456789012:user/ci",
            "{alert}"
        );
        assert!(alert["pushed_at"].as_str().is_some(), "{alert}");
    }
}
