//! The server under hostile or heavy traffic: slow clients are cut off (headers and body), a
//! declared oversize body is refused before it is read, connections beyond the cap are refused
//! while `/healthz` stays reachable once the slow ones are gone, admission by expected wait
//! answers 503 with `Retry-After`, and an answer is byte-identical whether its request was
//! evaluated alone or inside a large concurrent batch (MLP and UNet students).
//!
//! Time limits here are guards against hangs (generous), not performance thresholds.

mod common;

use common::*;
use msd_serve::ServeConfig;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GUARD: Duration = Duration::from_secs(30);

/// Reads until the server closes the connection (or the guard expires: a failure).
async fn read_until_closed(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(GUARD, c.read_to_end(&mut out))
        .await
        .expect("the server never closed the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_oversize_bodies_refused_early() {
    let s = TestServer::start(
        ServeConfig {
            read_timeout: Duration::from_millis(300),
            body_limit: 1024,
            ..Default::default()
        },
        false,
    )
    .await;
    // Partial headers, never finished: closed without an answer.
    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"POST /v1/generate HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slow.push(c);
    }
    for c in &mut slow {
        let got = read_until_closed(c).await;
        assert!(!got.contains("200 OK"), "{got}");
    }
    // An idle connection that sends nothing is closed too.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    read_until_closed(&mut idle).await;
    // Complete headers, a body that stops short: 408 and closed.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"POST /v1/generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{\"class\"")
        .await
        .unwrap();
    let got = read_until_closed(&mut c).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("body_timeout"), "{got}");
    // A declared 100 MB body with 11 bytes sent: 413 at once, from the header alone.
    let s2 = TestServer::start(
        ServeConfig {
            read_timeout: Duration::from_secs(600),
            body_limit: 1024,
            ..Default::default()
        },
        false,
    )
    .await;
    let mut c = TcpStream::connect(s2.addr).await.unwrap();
    c.write_all(
        b"POST /v1/generate HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n{\"class\": 1",
    )
    .await
    .unwrap();
    let got = read_until_closed(&mut c).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(got.contains("size limit of 1024 bytes"), "{got}");
    // Chunked bodies above the limit are cut at the limit.
    let mut c = TcpStream::connect(s2.addr).await.unwrap();
    let chunk = "x".repeat(2000);
    c.write_all(
        format!(
            "POST /v1/generate HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n",
            chunk.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let got = read_until_closed(&mut c).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    // The servers still answer.
    for srv in [&s, &s2] {
        let r = client()
            .post(srv.url("/v1/generate"))
            .json(&json!({"class": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_and_health_comes_back() {
    let s = TestServer::start(
        ServeConfig {
            read_timeout: Duration::from_millis(500),
            max_connections: 4,
            ..Default::default()
        },
        false,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(c);
    }
    // Let the server accept the four.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(s.addr).await.unwrap();
    let got = read_until_closed(&mut extra).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(
        got.contains("retry-after: 1") && got.contains("too_many_connections"),
        "{got}"
    );
    // The slow ones time out; health is reachable again.
    for c in &mut held {
        read_until_closed(c).await;
    }
    let r = client().get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_by_expected_wait_answers_503_with_retry_after() {
    // One sample per evaluation, each batch pausing 300 ms: the second request queued behind a
    // first one would wait 600 ms, above the 500 ms bound.
    let s = TestServer::start(
        ServeConfig {
            max_batch: 1,
            eval_chunk: 1,
            max_wait: Duration::ZERO,
            max_queue: Duration::from_millis(500),
            batch_delay: Duration::from_millis(300),
            ..Default::default()
        },
        false,
    )
    .await;
    let c = client();
    // A first request teaches the batcher what a batch costs.
    let r = c
        .post(s.url("/v1/generate"))
        .json(&json!({"class": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..6 {
        let (c, url) = (c.clone(), s.url("/v1/generate"));
        tasks.spawn(async move {
            let r = c
                .post(url)
                .json(&json!({"class": 1, "seed": i}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (status, retry, r.bytes().await.unwrap())
        });
    }
    let (mut ok, mut busy) = (0, 0);
    while let Some(res) = tasks.join_next().await {
        let (status, retry, body) = res.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                busy += 1;
                assert_busy(retry.as_deref().unwrap_or_default(), &body);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 1 && busy >= 1, "{ok} answered, {busy} refused");
    let v: Value = s.get_json("/v1/bundle").await;
    assert_eq!(v["limits"]["max_queue_ms"], 500.0);
}

/// The same request answered alone and inside a large concurrent batch: identical bytes.
async fn batch_invariance(s: &TestServer, classes: i64) {
    let c = client();
    let probe = json!({"class": [1], "n": 3, "seed": 77, "format": "npy"});
    let alone = c
        .post(s.url("/v1/generate"))
        .json(&probe)
        .send()
        .await
        .unwrap();
    assert_eq!(alone.status(), 200);
    let alone_batch: usize = alone.headers()["x-msd-batch"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let alone = alone.bytes().await.unwrap();
    assert_eq!(alone_batch, 3, "alone means a batch of its own");
    // Several rounds of 24 concurrent requests of mixed sizes with the probe among them, until
    // the probe rode in a batch with others at least once.
    let mut shared = 0;
    for round in 0..10u64 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..24u64 {
            let (c, url) = (c.clone(), s.url("/v1/generate"));
            let body = if i == 12 {
                probe.clone()
            } else {
                json!({"class": [(i as i64) % classes], "n": 1 + (i % 5), "seed": round * 100 + i, "format": "npy"})
            };
            tasks.spawn(async move {
                let r = c.post(url).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let b: usize = r.headers()["x-msd-batch"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                (i, b, r.bytes().await.unwrap())
            });
        }
        while let Some(res) = tasks.join_next().await {
            let (i, b, bytes) = res.unwrap();
            if i == 12 {
                assert_eq!(bytes, alone, "round {round}: batched with {b} samples");
                if b > 3 {
                    shared += 1;
                }
            }
        }
        if shared >= 2 {
            break;
        }
    }
    assert!(shared >= 1, "the probe never shared a batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_byte_identical_alone_and_in_a_big_batch() {
    let cfg = ServeConfig {
        max_batch: 64,
        eval_chunk: 8,
        max_wait: Duration::from_millis(20),
        ..Default::default()
    };
    let s = TestServer::start(cfg.clone(), false).await;
    batch_invariance(&s, CLASSES as i64).await;
    let dir = tempfile::tempdir().unwrap();
    let path = unet_bundle(dir.path());
    let s = TestServer::start_bundle(cfg, dir, path).await;
    batch_invariance(&s, 3).await;
}
