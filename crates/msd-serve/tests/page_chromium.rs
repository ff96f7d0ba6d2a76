//! The web page in a real headless Chromium (Debian's `chromium`; `scripts/install-test-deps.sh`
//! installs it, run by `make test` and `.ci/run`): the page
//! loads the bundle, requests class 3 from the students and the teacher by itself
//! (`?class=3&autorun=1&teacher=1`), and the screenshot must be a PNG showing the class-3 colour;
//! the server's counters must show the page's requests. Without Chromium the test fails and says
//! how to install it. Set `MSD_SCREENSHOT_DIR` to keep the screenshot.

mod common;

use common::*;
use msd_serve::ServeConfig;
use std::path::PathBuf;
use std::process::Command;

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("MSD_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser"] {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
        {
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !p.is_empty() {
                return PathBuf::from(p);
            }
        }
    }
    panic!(
        "the page test needs a Chromium browser and none was found on PATH (chromium, \
         chromium-browser). Install it with `scripts/install-test-deps.sh` as root (what `make test` \
         tries first) or `apt-get update && apt-get install -y chromium`, or point MSD_CHROMIUM \
         at a Chromium binary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_generates_a_class_in_headless_chromium() {
    let browser = chromium();
    let s = TestServer::start(
        ServeConfig {
            teacher_steps: Some(6),
            ..Default::default()
        },
        true,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("page.png");
    let url = format!(
        "http://{}/?class=3&n=256&seed=1&autorun=1&teacher=1",
        s.addr
    );
    let args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        format!("--user-data-dir={}", dir.path().join("profile").display()),
        format!("--screenshot={}", shot.display()),
        "--window-size=1100,760".into(),
        "--virtual-time-budget=15000".into(),
        url,
    ];
    let out = tokio::task::spawn_blocking(move || Command::new(browser).args(&args).output())
        .await
        .unwrap()
        .expect("chromium could not be started");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        shot.exists(),
        "no screenshot written; chromium said:\n{log}"
    );
    let bytes = std::fs::read(&shot).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), (1100, 760));
    if let Some(keep) = std::env::var_os("MSD_SCREENSHOT_DIR") {
        let _ = std::fs::create_dir_all(&keep);
        let _ = std::fs::copy(&shot, PathBuf::from(keep).join("page.png"));
    }
    // The page asked for the bundle, then class 3 from the students and the teacher.
    let m = s.metrics.render();
    for line in [
        r#"msd_http_requests_total{route="/",status="200"} 1"#,
        r#"msd_http_requests_total{route="/v1/bundle",status="200"} 1"#,
        r#"msd_http_requests_total{route="/v1/generate",status="200"} 1"#,
        r#"msd_http_requests_total{route="/v1/teacher",status="200"} 1"#,
        r#"msd_samples_total{student="1"} 256"#,
    ] {
        assert!(
            m.contains(line),
            "`{line}` not in metrics (chromium said:\n{log})\n{m}"
        );
    }
    // And it drew them: class 3's colour (palette entry 3) appears in the screenshot.
    let red = msd_serve::render::palette(3).0;
    let hits = img.pixels().filter(|p| p.0 == red).count();
    assert!(
        hits > 200,
        "only {hits} pixels of the class-3 colour in the screenshot"
    );
}
