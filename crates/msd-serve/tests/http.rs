//! The real server on a free loopback port with a tiny bundle: routing visible in the header and
//! in the values, determinism per seed, PNG sizes, mixed requests, every bad request, the bundle
//! description, health and metrics, the teacher comparison, back-pressure (503 + Retry-After),
//! 64 concurrent clients, and graceful shutdown.

mod common;

use common::*;
use msd_serve::render::PLOT_SIZE;
use msd_serve::ServeConfig;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn cfg() -> ServeConfig {
    ServeConfig {
        max_n: 64,
        max_teacher_n: 8,
        body_limit: 1024,
        teacher_steps: None,
        ..Default::default()
    }
}

async fn post(s: &TestServer, path: &str, body: Value) -> reqwest::Response {
    s.post(path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_class_is_served_by_its_owner_deterministically() {
    let s = TestServer::start(cfg(), false).await;
    let reference = s.reference();
    for c in 0..CLASSES as i64 {
        let r = post(
            &s,
            "/v1/generate",
            json!({"class": c, "n": 5, "seed": 7, "format": "npy"}),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "x-msd-students"),
            owner(c).to_string(),
            "class {c}"
        );
        let ms: f64 = header(&r, "x-msd-generate-ms").parse().unwrap();
        assert!(ms >= 0.0);
        assert_eq!(header(&r, "x-msd-samples"), "5");
        let x = read_npy(&r.bytes().await.unwrap());
        assert_eq!(x.size(), vec![5, 2]);
        let want = expected(&reference, &[c; 5], 7);
        assert!(
            x.allclose(&want, 1e-5, 1e-6, false),
            "class {c}: not its owner's output"
        );
        // Another student would have answered differently.
        let other = (owner(c) + 1) % STUDENTS;
        let z = msd_serve::noise::noise(5, &[2], 7);
        let z = tch::Tensor::from_slice(&z).view([5, 2]);
        let wrong = tch::no_grad(|| {
            reference.students[other].generate(&z, &tch::Tensor::from_slice(&[c; 5]), SIGMA_MAX)
        });
        assert!(!x.allclose(&wrong, 1e-5, 1e-6, false));
    }
    // Same (class, n, seed) → identical bytes; another seed → other samples.
    let body = json!({"class": 4, "n": 16, "seed": 123, "format": "npy"});
    let a = post(&s, "/v1/generate", body.clone())
        .await
        .bytes()
        .await
        .unwrap();
    let b = post(&s, "/v1/generate", body).await.bytes().await.unwrap();
    assert_eq!(a, b);
    let c = post(
        &s,
        "/v1/generate",
        json!({"class": 4, "n": 16, "seed": 124, "format": "npy"}),
    )
    .await
    .bytes()
    .await
    .unwrap();
    assert_ne!(a, c);
    let p1 = post(&s, "/v1/generate", json!({"class": 1, "n": 32, "seed": 5})).await;
    assert_eq!(header(&p1, "content-type"), "image/png");
    let p1 = p1.bytes().await.unwrap();
    let p2 = post(&s, "/v1/generate", json!({"class": 1, "n": 32, "seed": 5}))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(p1, p2, "PNG for a fixed seed must be identical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn png_decodes_to_the_plot_size_and_mixed_requests_keep_order() {
    let s = TestServer::start(cfg(), false).await;
    let r = post(&s, "/v1/generate", json!({"class": 2, "n": 64, "seed": 1})).await;
    assert_eq!(r.status(), 200);
    let img = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (PLOT_SIZE, PLOT_SIZE));
    // Mixed: classes owned by students 2, 0, 1, n = 3 each, class-major order.
    let r = post(
        &s,
        "/v1/generate",
        json!({"class": [5, 0, 3], "n": 3, "seed": 9, "format": "npy"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-msd-students"), "0,1,2");
    assert_eq!(header(&r, "x-msd-samples"), "9");
    let x = read_npy(&r.bytes().await.unwrap());
    let labels = [5, 5, 5, 0, 0, 0, 3, 3, 3];
    assert!(x.allclose(&expected(&s.reference(), &labels, 9), 1e-5, 1e-6, false));
    let r = post(&s, "/v1/generate", json!({"class": [1, 2], "n": 2})).await;
    assert_eq!(header(&r, "x-msd-students"), "0,1");
    let img = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (PLOT_SIZE, PLOT_SIZE));
}

/// Sends raw bytes (for requests a client library would normalise or refuse to send).
async fn raw_http(s: &TestServer, request: &str) -> String {
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_that_say_what_was_wrong() {
    let s = TestServer::start(cfg(), false).await;
    let big = format!(r#"{{"class": 1, "pad": "{}"}}"#, "x".repeat(2000));
    let cases: Vec<(&str, String, u16, &str, &str)> = vec![
        (
            "malformed JSON",
            "{\"class\": 1".into(),
            400,
            "malformed_json",
            "EOF",
        ),
        (
            "not JSON",
            "class=1".into(),
            400,
            "malformed_json",
            "expected",
        ),
        ("empty body", "".into(), 400, "malformed_json", "EOF"),
        (
            "class as string",
            r#"{"class": "1"}"#.into(),
            400,
            "malformed_json",
            "class id",
        ),
        (
            "negative n",
            r#"{"class": 1, "n": -2}"#.into(),
            400,
            "malformed_json",
            "invalid value",
        ),
        (
            "unknown field",
            r#"{"class": 1, "steps": 4}"#.into(),
            400,
            "malformed_json",
            "unknown field `steps`",
        ),
        (
            "unknown class",
            r#"{"class": 6}"#.into(),
            422,
            "unknown_class",
            "unknown class 6",
        ),
        (
            "negative class",
            r#"{"class": -1}"#.into(),
            422,
            "unknown_class",
            "unknown class -1",
        ),
        (
            "unknown class in a list",
            r#"{"class": [0, 17]}"#.into(),
            422,
            "unknown_class",
            "unknown class 17",
        ),
        (
            "empty class list",
            r#"{"class": []}"#.into(),
            422,
            "empty_class_list",
            "empty",
        ),
        (
            "n = 0",
            r#"{"class": 1, "n": 0}"#.into(),
            422,
            "n_out_of_range",
            "at least 1",
        ),
        (
            "n above the limit",
            r#"{"class": 1, "n": 65}"#.into(),
            422,
            "n_above_limit",
            "limit of 64",
        ),
        (
            "mixed above the limit",
            r#"{"class": [1, 2, 3], "n": 22}"#.into(),
            422,
            "n_above_limit",
            "66 samples",
        ),
        (
            "unknown format",
            r#"{"class": 1, "format": "jpeg"}"#.into(),
            422,
            "unknown_format",
            "unknown format \"jpeg\"",
        ),
        (
            "body above the size limit",
            big,
            413,
            "body_too_large",
            "size limit of 1024 bytes",
        ),
    ];
    for (what, body, status, code, needle) in &cases {
        let r = client()
            .post(s.url("/v1/generate"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), *status, "{what}");
        assert_eq!(header(&r, "content-type"), "application/json", "{what}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], *code, "{what}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{what}: `{needle}` not in `{msg}`");
    }
    // Routes that do not exist, other methods, and paths that try to leave the bundle.
    let r = client().get(s.url("/v1/generate")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "method_not_allowed"
    );
    for path in [
        "/bundle.json",
        "/students/0/model.safetensors",
        "/static/index.html",
        "/v1/generate/../../bundle.json",
    ] {
        let r = client().get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "not_found"
        );
    }
    for path in [
        "/../bundle.json",
        "/..%2fbundle.json",
        "//etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
    ] {
        let resp = raw_http(
            &s,
            &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 404"), "{path}: {resp}");
        assert!(
            !resp.contains("model") && !resp.contains("root:"),
            "{path}: {resp}"
        );
    }
    // The teacher route of a bundle without teacher.
    let r = post(&s, "/v1/teacher", json!({"class": 1})).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "no_teacher"
    );
    // Errors are counted by route and status.
    let m = s.get_text("/metrics").await;
    for line in [
        r#"msd_http_errors_total{route="/v1/generate",status="400"} 6"#,
        r#"msd_http_errors_total{route="/v1/generate",status="422"} 8"#,
        r#"msd_http_errors_total{route="/v1/generate",status="413"} 1"#,
        r#"msd_http_errors_total{route="/v1/generate",status="405"} 1"#,
    ] {
        assert!(m.contains(line), "`{line}` not in metrics:\n{m}");
    }
    // And the server is still fine.
    let r = post(&s, "/v1/generate", json!({"class": 1})).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_health_metrics_page_and_teacher() {
    let s = TestServer::start(cfg(), true).await;
    let v: Value = s.get_json("/v1/bundle").await;
    assert_eq!(v["num_classes"], 6);
    assert_eq!(v["sample_shape"], json!([2]));
    assert_eq!(v["partition"]["owner"], json!([0, 0, 1, 1, 2, 2]));
    assert_eq!(v["students"].as_array().unwrap().len(), 3);
    assert!(v["students"][1]["params"].as_i64().unwrap() > 0);
    assert_eq!(v["students"][1]["spec"]["net"]["kind"], "mlp");
    assert_eq!(v["teacher"]["available"], true);
    assert_eq!(v["teacher"]["nfe"], 7);
    assert_eq!(v["teacher"]["guidance"], 1.25);
    assert_eq!(v["limits"]["max_n"], 64);
    let h: Value = s.get_json("/healthz").await;
    assert_eq!(h["status"], "ok");
    let page = client().get(s.url("/")).send().await.unwrap();
    assert!(header(&page, "content-type").starts_with("text/html"));
    let page = page.text().await.unwrap();
    assert!(page.contains("/v1/generate") && page.contains("Compare with the teacher"));
    // The teacher: its own sampler as the bundle records it (Heun-4, 7 evaluations per sample,
    // guidance 1.25) from the request's noise. Regression: the comparison used to sample the
    // teacher unguided whatever its setting.
    let r = post(
        &s,
        "/v1/teacher",
        json!({"class": 2, "n": 4, "seed": 3, "format": "npy"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-msd-nfe"), "7");
    let x = read_npy(&r.bytes().await.unwrap());
    let teacher = msd::model::EdmModel::load_dir(
        &s.bundle_path.parent().unwrap().join("teacher"),
        tch::Device::Cpu,
    )
    .unwrap();
    let z = tch::Tensor::from_slice(&msd_serve::noise::noise(4, &[2], 3)).view([4, 2]);
    let l = tch::Tensor::from_slice(&[2i64; 4]);
    let want = msd::diffusion::sample(&teacher, &z, &l, &common::teacher_sampler()).unwrap();
    assert!(x.allclose(&want, 1e-5, 1e-6, false));
    let unguided = msd::diffusion::SamplerConfig {
        guidance: 1.0,
        ..common::teacher_sampler()
    };
    let unguided = msd::diffusion::sample(&teacher, &z, &l, &unguided).unwrap();
    assert!(
        !x.allclose(&unguided, 1e-4, 1e-5, false),
        "sampled unguided"
    );
    let r = post(&s, "/v1/teacher", json!({"class": 2, "n": 9})).await;
    assert_eq!(r.status(), 422, "teacher requests have their own limit");
    let r = post(&s, "/v1/teacher", json!({"class": 2, "n": 8})).await;
    assert_eq!(header(&r, "content-type"), "image/png");
    // Metrics after some traffic.
    post(&s, "/v1/generate", json!({"class": [0, 5], "n": 4})).await;
    let m = s.get_text("/metrics").await;
    for needle in [
        r#"msd_http_requests_total{route="/v1/generate",status="200"} 1"#,
        r#"msd_http_requests_total{route="/v1/bundle",status="200"} 1"#,
        r#"msd_batch_size_bucket{student="0",le="4"} 1"#,
        r#"msd_samples_total{student="2"} 4"#,
        r#"msd_samples_total{student="1"} 0"#,
        r#"msd_queue_depth{student="1"} 0"#,
        r#"msd_student_latency_seconds_count{student="0"} 1"#,
        r#"msd_generate_seconds_count{student="2"} 1"#,
        "msd_teacher_seconds_count 2",
    ] {
        assert!(m.contains(needle), "`{needle}` not in metrics:\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_clients_are_all_answered_correctly() {
    let s = TestServer::start(
        ServeConfig {
            max_batch: 32,
            max_wait: Duration::from_millis(3),
            ..cfg()
        },
        false,
    )
    .await;
    let reference = s.reference();
    let c = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64u64 {
        let (c, url) = (c.clone(), s.url("/v1/generate"));
        tasks.spawn(async move {
            // A mix of single-class and two-class requests of different sizes.
            let classes: Vec<i64> = if i % 4 == 3 {
                vec![(i % 6) as i64, ((i + 3) % 6) as i64]
            } else {
                vec![(i % 6) as i64]
            };
            let n = 1 + (i % 7) as usize;
            let body = json!({"class": classes, "n": n, "seed": 1000 + i, "format": "npy"});
            let r = c.post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let students = header(&r, "x-msd-students");
            (i, classes, n, status, students, r.bytes().await.unwrap())
        });
    }
    let mut answered = 0;
    while let Some(res) = tasks.join_next().await {
        let (i, classes, n, status, students, body) = res.unwrap();
        assert_eq!(status, 200, "client {i}");
        let mut owners: Vec<usize> = classes.iter().map(|&c| owner(c)).collect();
        owners.sort();
        owners.dedup();
        let want_students = owners
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(students, want_students, "client {i}");
        let labels: Vec<i64> = classes
            .iter()
            .flat_map(|&c| std::iter::repeat_n(c, n))
            .collect();
        let x = read_npy(&body);
        assert!(
            x.allclose(&expected(&reference, &labels, 1000 + i), 1e-5, 1e-6, false),
            "client {i} got someone else's samples"
        );
        answered += 1;
    }
    assert_eq!(answered, 64);
    // The batchers packed several requests into one evaluation at least once.
    let m = s.metrics.render();
    let evaluations: f64 = (0..STUDENTS)
        .map(|k| {
            let key = format!("msd_batch_size_count{{student=\"{k}\"}} ");
            m.lines()
                .find_map(|l| l.strip_prefix(key.as_str()))
                .unwrap()
                .parse::<f64>()
                .unwrap()
        })
        .sum();
    // 64 requests, 16 of them split over two students: 80 jobs. Every job rode in some batch,
    // and packing means fewer evaluations than jobs.
    assert!(
        (3.0..80.0).contains(&evaluations),
        "{evaluations} evaluations for 80 jobs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queues_answer_503_with_retry_after() {
    let s = TestServer::start(
        ServeConfig {
            max_batch: 1,
            max_wait: Duration::ZERO,
            queue_cap: 1,
            batch_delay: Duration::from_millis(300),
            ..cfg()
        },
        false,
    )
    .await;
    let c = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (c, url) = (c.clone(), s.url("/v1/generate"));
        tasks.spawn(async move {
            let r = c
                .post(url)
                .json(&json!({"class": 0, "seed": i}))
                .send()
                .await
                .unwrap();
            let retry = header(&r, "retry-after");
            let status = r.status().as_u16();
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
                assert_busy(&retry, &body);
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(ok >= 1 && busy >= 1, "{ok} answered, {busy} refused");
    assert!(s
        .metrics
        .render()
        .contains(&format!("msd_queue_full_total{{student=\"0\"}} {busy}")));
    // Another student's queue is independent.
    let r = post(&s, "/v1/generate", json!({"class": 5})).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight() {
    let mut s = TestServer::start(
        ServeConfig {
            batch_delay: Duration::from_millis(500),
            ..cfg()
        },
        false,
    )
    .await;
    let url = s.url("/v1/generate");
    let in_flight = tokio::spawn(async move {
        client()
            .post(url)
            .json(&json!({"class": 3, "n": 4}))
            .send()
            .await
            .unwrap()
    });
    // Wait until the server holds the request (it then sleeps 500 ms before evaluating it).
    let t0 = std::time::Instant::now();
    while s.metrics.in_flight.get() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.shutdown();
    let r = in_flight.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-msd-students"), "1");
    let body = r.bytes().await.unwrap();
    assert!(image::load_from_memory(&body).is_ok());
    let handle = s.handle.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the server stops after the last request")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(s.addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_bundles_answer_with_a_grid_png_and_npy_images() {
    let dir = tempfile::tempdir().unwrap();
    let path = unet_bundle(dir.path());
    let s = TestServer::start_bundle(cfg(), dir, path).await;
    let v: Value = s.get_json("/v1/bundle").await;
    assert_eq!(v["sample_shape"], json!([1, 8, 8]));
    // Two classes × 3: one row per class, 3 columns, 2-pixel gutters.
    let r = post(
        &s,
        "/v1/generate",
        json!({"class": [0, 2], "n": 3, "seed": 4}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-msd-students"), "0,1");
    let img = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (3 * 8 + 4 * 2, 2 * 8 + 3 * 2));
    assert_eq!(msd_serve::render::png_size(&[1, 8, 8], 6, 2), (32, 22));
    // One class × 5: a near-square 3 × 2 grid.
    let r = post(&s, "/v1/generate", json!({"class": 1, "n": 5})).await;
    let img = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (32, 22));
    let r = post(
        &s,
        "/v1/generate",
        json!({"class": [2, 0], "n": 2, "seed": 8, "format": "npy"}),
    )
    .await;
    let x = read_npy(&r.bytes().await.unwrap());
    assert_eq!(x.size(), vec![4, 1, 8, 8]);
    let reference = s.reference();
    let z = msd_serve::noise::noise(4, &[1, 8, 8], 8);
    let z = tch::Tensor::from_slice(&z).view([4, 1, 8, 8]);
    let want = tch::no_grad(|| reference.generate(&[2, 2, 0, 0], &z).unwrap().0);
    assert!(x.allclose(&want, 1e-4, 1e-5, false));
}
