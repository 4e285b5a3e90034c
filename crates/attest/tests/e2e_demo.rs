//! End to end with the real binary: `attest serve` on a temporary data directory and a free
//! loopback port, driven by `attest demo`, checked through the HTTP API, `/metrics` and the
//! event log (`attest store tail`).
//!
//! - injected bias → a `FairnessThresholdBreached` event and an `IncidentOpened` event exist and
//!   the disparity gauge shows the gap;
//! - no bias → neither exists;
//! - the server is killed (SIGKILL) between the demo's phases and started again on the same
//!   data: the audit counts every decision and every outcome exactly once.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_attest");

/// Applications per run: enough for the breach rule's evidence (30 per group and an interval
/// that excludes parity), small enough for the debug build.
const N: usize = 400;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A running `attest serve`; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(data: &Path, port: u16, log: PathBuf) -> Server {
        let out = File::create(&log).unwrap();
        let child = attest(data)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn attest serve");
        let mut s = Server { child, port, log };
        s.wait_ready();
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        // A start-up bound, not a timing assertion: a server that never gets ready fails here
        // with its log instead of hanging the suite.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "attest serve exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if let Ok((200, _)) = http_get(self.port, "/readyz") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "attest serve not ready after 180 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no graceful shutdown, nothing flushed that was not already durable.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn get_json(&self, path: &str) -> Value {
        let (status, body) = http_get(self.port, path).unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {head}")))?;
    Ok((status, body.to_string()))
}

/// Runs `attest --json demo …` and returns its report.
fn demo(data: &Path, server: &Server, bias: f64, seed: u64, extra: &[&str]) -> Value {
    let out = attest(data)
        .args([
            "--json",
            "demo",
            "--url",
            &server.url(),
            "--applications",
            &N.to_string(),
            "--bias",
            &bias.to_string(),
            "--seed",
            &seed.to_string(),
            "--settle",
            "60s",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "attest demo failed:\n{}\n--- server log\n{}",
        text(&out),
        server.log()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("demo JSON: {e}\n{}", text(&out)))
}

/// Every event in the log, via `attest store tail` (a second process reading the live file).
fn events(data: &Path) -> Vec<Value> {
    let out = attest(data)
        .args(["--json", "store", "tail", "--from", "0", "--no-follow"])
        .output()
        .unwrap();
    assert!(out.status.success(), "store tail: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn count_types(events: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e["type"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    m
}

/// `FairnessThresholdBreached` events about `attribute`.
fn breaches_on(events: &[Value], attribute: &str) -> usize {
    events
        .iter()
        .filter(|e| e["type"] == "FairnessThresholdBreached" && e["data"]["attribute"] == attribute)
        .count()
}

/// Values of a Prometheus metric whose labels include all of `labels`.
fn metric_values(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (label_part, value) = if let Some(r) = rest.strip_prefix('{') {
                let end = r.rfind('}')?;
                (&r[..end], &r[end + 1..])
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                return None;
            };
            labels
                .iter()
                .all(|(k, v)| label_part.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.split_whitespace().next()?.parse().ok())?
        })
        .collect()
}

/// The auditor's current 24-hour sliding windows: (decisions, labelled) of the one that holds
/// the most (the oldest still open, which covers every decision of the test).
fn audit_counts(fairness: &Value) -> (u64, u64) {
    let windows = fairness["current"]
        .as_array()
        .unwrap_or_else(|| panic!("no current windows in {fairness}"));
    windows
        .iter()
        .filter(|w| w["label"] == "24h")
        .map(|w| {
            (
                w["decisions"].as_u64().unwrap(),
                w["labeled"].as_u64().unwrap(),
            )
        })
        .max()
        .unwrap_or_else(|| panic!("no 24h window in {fairness}"))
}

#[test]
fn biased_demo_breaches_and_opens_an_incident() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, free_port(), dir.path().join("serve.log"));

    let report = demo(&data, &server, 0.8, 7, &[]);
    assert_eq!(report["decisions"], N);
    assert_eq!(report["distinct_decision_ids"], N);
    assert_eq!(report["outcomes_recorded"], N);
    // The generator's disadvantaged group is approved less often (our own tally).
    let sex = &report["approval_by_group"]["sex"];
    let rate = |g: &str| sex[g]["approved"].as_f64().unwrap() / sex[g]["n"].as_f64().unwrap();
    assert!(rate("female") < rate("male"), "approval by sex: {sex}");

    // The gauge shows the disparity on sex above the 0.1 threshold.
    let (status, metrics) = http_get(server.port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let dpd = metric_values(
        &metrics,
        "attest_fairness_demographic_parity_difference",
        &[("attribute", "sex")],
    );
    assert!(
        dpd.iter().any(|v| *v > 0.1),
        "demographic parity difference gauges for sex: {dpd:?}"
    );

    // The audit's live view flags the disparity on sex (value beyond the threshold, interval
    // excluding parity, enough samples).
    let fairness = server.get_json("/v1/audit/fairness");
    let sex_dpd_breached = fairness["current"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|w| w["fairness"].as_array().into_iter().flatten())
        .filter(|a| a["attribute"] == "sex")
        .any(|a| a["demographic_parity_difference"]["breached"] == true);
    assert!(sex_dpd_breached, "{fairness}");

    // The log holds the breach on sex, and one incident per breach.
    let all = events(&data);
    let types = count_types(&all);
    assert_eq!(types.get("LoanDecisionMade"), Some(&N), "{types:?}");
    assert_eq!(types.get("LoanOutcomeObserved"), Some(&N), "{types:?}");
    assert!(
        breaches_on(&all, "sex") >= 1,
        "no fairness breach on sex; event types {types:?}\n--- server log\n{}",
        server.log()
    );
    let breaches = types.get("FairnessThresholdBreached").copied().unwrap_or(0)
        + types.get("DriftDetected").copied().unwrap_or(0);
    assert_eq!(
        types.get("IncidentOpened").copied().unwrap_or(0),
        breaches,
        "{types:?}"
    );

    // The API lists it too.
    let fairness = server.get_json("/v1/audit/fairness");
    assert!(
        fairness["breaches"]
            .as_array()
            .is_some_and(|b| !b.is_empty()),
        "no breach in /v1/audit/fairness: {fairness}"
    );
}

#[test]
fn unbiased_demo_shows_no_breach() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, free_port(), dir.path().join("serve.log"));

    let report = demo(&data, &server, 0.0, 7, &[]);
    assert_eq!(report["decisions"], N);
    assert_eq!(report["outcomes_recorded"], N);

    let all = events(&data);
    let types = count_types(&all);
    assert_eq!(types.get("LoanDecisionMade"), Some(&N), "{types:?}");
    // At bias 0 the generator keeps every protected attribute independent of the features
    // and outcomes: no breach on any attribute, no incident, and the traffic does not drift
    // from the model's reference.
    assert_eq!(breaches_on(&all, "sex"), 0, "{types:?}");
    assert_eq!(breaches_on(&all, "race"), 0, "{types:?}");
    assert_eq!(breaches_on(&all, "age_band"), 0, "{types:?}");
    assert_eq!(types.get("FairnessThresholdBreached"), None, "{types:?}");
    assert_eq!(types.get("IncidentOpened"), None, "{types:?}");
    assert_eq!(types.get("DriftDetected"), None, "{types:?}");

    let (_, metrics) = http_get(server.port, "/metrics").unwrap();
    let dpd = metric_values(
        &metrics,
        "attest_fairness_demographic_parity_difference",
        &[("attribute", "sex")],
    );
    assert!(!dpd.is_empty(), "no sex disparity gauge in /metrics");
    assert!(
        dpd.iter().all(|v| *v <= 0.1),
        "sex disparity gauges: {dpd:?}"
    );

    let fairness = server.get_json("/v1/audit/fairness");
    assert_eq!(audit_counts(&fairness), (N as u64, N as u64), "{fairness}");
    // Nor does the live view of the open windows flag any attribute.
    for w in fairness["current"].as_array().unwrap() {
        for a in w["fairness"].as_array().unwrap() {
            {
                for m in [
                    "demographic_parity_difference",
                    "disparate_impact_ratio",
                    "equalized_odds_difference",
                ] {
                    assert_ne!(a[m]["breached"], true, "{}: {a}", a["attribute"]);
                }
            }
        }
    }
}

#[test]
fn restart_between_phases_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut server = Server::start(&data, port, dir.path().join("serve-1.log"));

    // Phase 1: decisions only, then SIGKILL.
    let first = demo(
        &data,
        &server,
        0.3,
        11,
        &["--run-id", "restart", "--phase", "decide"],
    );
    assert_eq!(first["decisions"], N);
    assert_eq!(first["distinct_decision_ids"], N);
    server.kill();

    // Start again on the same data; the whole demo again with the same run id: the decisions
    // replay (same ids, no new events), then the outcomes go in.
    let server = Server::start(&data, port, dir.path().join("serve-2.log"));
    let second = demo(&data, &server, 0.3, 11, &["--run-id", "restart"]);
    assert_eq!(second["decisions"], N);
    assert_eq!(second["outcomes_recorded"], N);
    assert_eq!(second["outcomes_already_recorded"], 0);

    // Exactly one decision and one outcome per application in the log…
    let types = count_types(&events(&data));
    assert_eq!(types.get("LoanApplicationSubmitted"), Some(&N), "{types:?}");
    assert_eq!(types.get("LoanDecisionMade"), Some(&N), "{types:?}");
    assert_eq!(types.get("LoanOutcomeObserved"), Some(&N), "{types:?}");
    // …and in the audit, which resumed from its checkpoint after the kill.
    let fairness = server.get_json("/v1/audit/fairness");
    assert_eq!(audit_counts(&fairness), (N as u64, N as u64), "{fairness}");
}
