//! The test harness: isolated, self-cleaning resources for one test each — a database cloned
//! from a once-migrated template, a queue with its dead-letter queue, EventBridge rules — all
//! removed in `Drop`, so a test that panics leaves nothing behind.

pub mod aws;
pub mod database;

pub use aws::{TestQueue, TestRule};
pub use database::TestDb;

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A name part no other test of this run uses: the process (nextest runs each test in its
/// own), a counter (`cargo test` runs many in one) and the clock (pids are reused).
pub fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}{:x}{n}", std::process::id() % 10_000, nanos % 0xfffff)
}

/// A fresh counter value, for names that must differ between tests of one process.
pub fn next_count() -> u32 {
    COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests through scripts/test (or eval \"$(scripts/services env)\")"))
}

/// Runs `cleanup` to completion on a thread of its own with a runtime of its own. `Drop` cannot
/// await, and the test's runtime may be a single thread that this very `drop` is blocking (or
/// one that is unwinding from a panic); clients must therefore be made inside `cleanup`, not
/// borrowed from the test, whose pooled connections are driven by the test's runtime.
pub fn run_cleanup<F, Fut>(what: &str, cleanup: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let what = what.to_owned();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        runtime.block_on(cleanup())
    });
    match worker.join() {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("test cleanup of {what} failed: {error}"),
        Err(_) => eprintln!("test cleanup of {what} panicked"),
    }
}

mod tests;
