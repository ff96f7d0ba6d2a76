//! `msd serve` as a process: it prints its address, answers a generate request routed to the
//! owner of the class, stops cleanly on SIGTERM, and refuses bad flags with one error line.

use msd::bundle::Bundle;
use msd::diffusion::EdmPrecond;
use msd::model::EdmModel;
use msd::nets::{MlpConfig, NetConfig};
use msd::partition::Partition;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn tiny_bundle(dir: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = (0..2)
        .map(|k| {
            tch::manual_seed(k);
            let m = EdmModel::new(
                &NetConfig::Mlp(MlpConfig {
                    dim: 2,
                    num_classes: 4,
                    width: 8,
                    depth: 1,
                    noise_freqs: 4,
                    cond: Default::default(),
                }),
                EdmPrecond::default(),
                tch::Device::Cpu,
            );
            let d = dir.join(format!("s{k}"));
            m.save_dir(&d).unwrap();
            d
        })
        .collect();
    let path = dir.join("bundle.json");
    Bundle::assemble(&path, &Partition::contiguous(4, 2), &dirs, None, 80.0).unwrap();
    path
}

fn post(addr: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /v1/generate HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn serve_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = tiny_bundle(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_msd"))
        .args([
            "serve",
            "--bundle",
            bundle.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let resp = post(&addr, r#"{"class": 3, "n": 8, "seed": 1}"#);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("x-msd-students: 1\r\n"),
        "{resp}"
    );
    let resp = post(&addr, r#"{"class": 4}"#);
    assert!(
        resp.starts_with("HTTP/1.1 422") && resp.contains("unknown class 4"),
        "{resp}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    assert!(code.success(), "exit {code:?}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("stopped"), "{rest}");
}

#[test]
fn serve_refuses_bad_flags_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = tiny_bundle(dir.path());
    let b = bundle.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["serve", "--bundle", "/nonexistent/bundle.json"],
            "/nonexistent/bundle.json",
        ),
        (
            vec!["serve", "--bundle", b, "--max-batch", "0"],
            "--max-batch must be between 1 and",
        ),
        (
            vec!["serve", "--bundle", b, "--max-wait-ms=-1"],
            "--max-wait-ms",
        ),
        (
            vec![
                "serve",
                "--bundle",
                b,
                "--addr",
                "127.0.0.1:0",
                "--device",
                "tpu",
            ],
            "unknown device",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_msd"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: `{needle}` not in {err}");
    }
}
