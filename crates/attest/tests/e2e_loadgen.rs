//! `attest loadgen decisions` against a real `attest serve` (temporary data directory, free
//! loopback port): every scheduled request is a valid application the server decides and
//! records, and the report accounts for each of them.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_attest");

fn attest(data: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--data-dir")
        .arg(data)
        .env_remove("ATTEST_POSTGRES_URL")
        .env_remove("ATTEST_NATS_URL")
        .env_remove("ATTEST_API_KEY")
        .env_remove("ATTEST_URL")
        .env_remove("ATTEST_BIND")
        .env("ATTEST_LOG", "warn");
    c
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(s, "GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut head = String::new();
    let _ = s.read_to_string(&mut head);
    head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")
}

#[test]
fn loadgen_sends_the_scheduled_requests_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = dir.path().join("serve.log");
    let log = File::create(&log_path).unwrap();
    let mut server = Killed(
        attest(&data)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // A start-up bound, not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(180);
    while !ready(port) {
        if let Some(st) = server.0.try_wait().unwrap() {
            panic!(
                "attest serve exited ({st}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "attest serve not ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    // 40 requests/s for 2 s: 80 scheduled requests, after 10 warm-up ones.
    let out = attest(&data)
        .args([
            "--json",
            "loadgen",
            "decisions",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--rate",
            "40",
            "--duration",
            "2s",
            "--warmup",
            "250ms",
            "--connections",
            "4",
            "--bodies",
            "16",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sent"], 80, "{report}");
    assert_eq!(report["ok"], 80, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    let l = &report["latency_ms"];
    let (p50, p99, p999, max) = (
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["p99_9"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{report}"
    );
    assert_eq!(
        report["metrics"][0]["name"], "attest_audit_lag_seconds",
        "{report}"
    );

    // The server made one decision per request, warm-up included.
    let tail = attest(&data)
        .args(["--json", "store", "tail", "--from", "0", "--no-follow"])
        .output()
        .unwrap();
    assert!(tail.status.success());
    let decided = String::from_utf8_lossy(&tail.stdout)
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["type"] == "LoanDecisionMade")
        .count();
    assert_eq!(decided, 90);
}
