//! The HTTP endpoints under a slow-loris attack (issue 14, part 6): connections that send
//! their request a byte at a time, more of them than the connection cap, must be closed after
//! the header-read timeout while `/healthz` and `/metrics` keep answering and the consumer
//! keeps processing. Bounded: a dozen connections to 127.0.0.1 for a few seconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ecr_audit::export::http::HttpLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, create_repository_envelope};

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 8;
/// More than the cap, so some wait in the backlog and the cap itself is exercised.
const SLOW_CLIENTS: usize = 12;

/// Opens a connection that dribbles a never-ending request head, one byte every 100 ms, and
/// returns how long after connecting the server closed it (`None`: still open after `give_up`).
async fn slow_loris(addr: SocketAddr, give_up: Duration) -> Option<Duration> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let dribble = tokio::spawn(async move {
        let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buffer = [0_u8; 512];
    let closed = tokio::time::timeout(give_up, async {
        loop {
            match reader.read(&mut buffer).await {
                // Whatever the server says (nothing, or a 408), it must end with a close.
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok();
    dribble.abort();
    closed
}

async fn get_within(client: &reqwest::Client, url: &str) -> (reqwest::StatusCode, Duration) {
    let started = Instant::now();
    let response = client.get(url).send().await.expect(url);
    (response.status(), started.elapsed())
}

#[tokio::test]
async fn slow_loris_clients_are_cut_off_while_the_worker_serves_and_processes() {
    let mut app = TestApp::new().await;
    app.http = HttpLimits {
        header_read_timeout: HEADER_TIMEOUT,
        request_timeout: Duration::from_secs(5),
        max_connections: MAX_CONNECTIONS,
        metrics_cache: Duration::ZERO,
        db_connections: 2,
    };
    let name = app.create_repository("loris").await;
    app.start_worker().await;
    let addr = app.http_addr.expect("worker started");

    let attackers: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| tokio::spawn(slow_loris(addr, Duration::from_secs(15))))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Meanwhile an event arrives and the endpoints are asked: every slot is taken, so they
    // wait for the first header-read timeouts, but not longer.
    let id = format!("{}evt", app.prefix);
    app.send_raw(&create_repository_envelope(
        &id,
        &name,
        "arn:aws:iam::123456789012:user/bob",
    ))
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let bound = HEADER_TIMEOUT * 2 + Duration::from_secs(1);
    let (health, health_took) = get_within(&client, &format!("http://{addr}/healthz")).await;
    assert_eq!(health, reqwest::StatusCode::OK);
    assert!(health_took < bound, "/healthz took {health_took:?}");
    let (metrics, metrics_took) = get_within(&client, &format!("http://{addr}/metrics")).await;
    assert_eq!(metrics, reqwest::StatusCode::OK);
    assert!(metrics_took < bound, "/metrics took {metrics_took:?}");
    app.eventually("the event's evidence", Duration::from_secs(20), || async {
        (app.evidence_count(&id).await == 1).then_some(())
    })
    .await;

    let mut closed_after = Vec::new();
    for attacker in attackers {
        let closed = attacker.await.expect("slow client task");
        closed_after.push(closed.expect("a slow client's connection was never closed"));
    }
    closed_after.sort();
    // The figures for docs (visible with --no-capture).
    eprintln!(
        "healthz {health_took:?}, metrics {metrics_took:?}, slow clients closed after {closed_after:?}"
    );
    // The first are cut at the header-read timeout, not before (that would be a refusal);
    // those that waited for a slot are accepted later and cut a timeout after that.
    assert!(
        closed_after[0] >= HEADER_TIMEOUT - Duration::from_millis(200),
        "{closed_after:?}"
    );
    assert!(
        closed_after[SLOW_CLIENTS - 1] < HEADER_TIMEOUT * 3 + Duration::from_secs(1),
        "{closed_after:?}"
    );
    app.finish().await;
}

fn posture_lines(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|line| line.starts_with("ecr_audit_control_repositories"))
        .collect()
}

#[tokio::test]
async fn metrics_reuse_the_posture_counts_for_the_cache_interval() {
    let mut app = TestApp::new().await;
    app.http.metrics_cache = Duration::from_secs(60);
    app.start_worker().await;
    let before = app.scrape().await;

    let name = app.create_repository("cached").await;
    let id = format!("{}evt", app.prefix);
    app.send_raw(&create_repository_envelope(
        &id,
        &name,
        "arn:aws:iam::123456789012:user/bob",
    ))
    .await;
    app.eventually("the event's evidence", Duration::from_secs(20), || async {
        (app.evidence_count(&id).await == 1).then_some(())
    })
    .await;
    let stored = app.store.control_counts().await.expect("control counts");
    assert!(!stored.is_empty(), "the repository's controls are stored");

    // Within the interval the scrape answers from the counts read the first time.
    let after = app.scrape().await;
    assert_eq!(posture_lines(&before), posture_lines(&after));
    app.finish().await;
}
