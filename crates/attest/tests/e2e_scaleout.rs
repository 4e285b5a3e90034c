//! Scale-out end to end with the real binary: two `attest serve` processes on one PostgreSQL
//! schema (unique per run, dropped at the end) and one NATS JetStream server.
//!
//! - decisions are split across both servers and each outcome is posted to the *other* server;
//! - both servers answer `GET /v1/decisions/{id}` for decisions made on the other one;
//! - the shared auditor (one lease holder, the other serves the persisted snapshot) counts every
//!   decision and every outcome exactly once, seen from either server;
//! - the lease holder is SIGKILLed, more decisions go to the survivor, which takes the lease
//!   over and counts exactly the new total;
//! - the `ATTEST_EVENTS` JetStream stream holds each `LoanDecisionMade` of this run exactly
//!   once (both relays publish the global log; message ids de-duplicate).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attest_bus::nats::NatsBroker;
use attest_bus::Broker;
use attest_lending::synth::Generator;
use attest_lending::Outcome;
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_attest");
const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const NATS_URL: &str = "nats://127.0.0.1:4222";
const STREAM: &str = "ATTEST_EVENTS";

/// Decisions per server before the kill.
const PER_SERVER: usize = 150;
/// Decisions on the survivor after the kill.
const AFTER_KILL: usize = 60;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-tA",
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The run's PostgreSQL schema; dropped when the test ends (also on failure).
struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.0))
            .output();
    }
}

/// A running `attest serve`; killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(name: &'static str, schema: &str, data: &Path, log: PathBuf) -> Server {
        let port = free_port();
        let out = File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("--postgres")
            .arg(PG_URL)
            .arg("--pg-schema")
            .arg(schema)
            .arg("--nats")
            .arg(NATS_URL)
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .env_remove("ATTEST_POSTGRES_URL")
            .env_remove("ATTEST_NATS_URL")
            .env_remove("ATTEST_PG_SCHEMA")
            .env_remove("ATTEST_API_KEY")
            .env_remove("ATTEST_URL")
            .env_remove("ATTEST_BIND")
            // The auditor's lease owner is `<HOSTNAME>-<pid>`.
            .env("HOSTNAME", format!("scaleout-{name}"))
            .env("ATTEST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn attest serve");
        Server {
            name,
            child,
            port,
            log,
        }
    }

    fn owner(&self) -> String {
        format!("scaleout-{}-{}", self.name, self.child.id())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) {
        // A start-up bound, not a timing assertion.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "attest serve {} exited ({status}) before it was ready:\n{}",
                    self.name,
                    self.log()
                );
            }
            if let Ok(r) = http.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "attest serve {} not ready after 180 s:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One decision made by the test.
#[derive(Debug, Clone)]
struct Made {
    decision_id: String,
    outcome: Outcome,
}

/// Posts `n` synthetic applications (seed `seed`) to `server`, each with a unique idempotency
/// key; returns the decisions.
async fn decide(
    http: &reqwest::Client,
    server: &Server,
    tag: &str,
    seed: u64,
    n: usize,
) -> Vec<Made> {
    let mut g = Generator::new(seed, 0.2);
    let apps: Vec<_> = (0..n).map(|_| g.next_application()).collect();
    stream::iter(apps.into_iter().enumerate())
        .map(|(i, (req, applicant))| {
            let url = server.url("/v1/decisions");
            let key = format!("scaleout-{tag}-{}-{seed}-{i}", server.name);
            async move {
                let r = http
                    .post(url)
                    .header("Idempotency-Key", key)
                    .json(&req)
                    .send()
                    .await
                    .expect("POST /v1/decisions");
                let status = r.status();
                let body: Value = r.json().await.expect("decision body");
                assert!(
                    status.is_success(),
                    "POST /v1/decisions: HTTP {status}: {body}"
                );
                Made {
                    decision_id: body["decision_id"].as_str().unwrap().to_string(),
                    outcome: applicant.outcome,
                }
            }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// Posts the outcome of every decision in `made` to `server`.
async fn outcomes(http: &reqwest::Client, server: &Server, made: &[Made]) {
    stream::iter(made)
        .map(|m| async move {
            let r = http
                .post(server.url(&format!("/v1/decisions/{}/outcome", m.decision_id)))
                .json(&json!({ "outcome": m.outcome }))
                .send()
                .await
                .expect("POST outcome");
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            assert!(
                status.is_success(),
                "POST outcome of {} on {}: HTTP {status}: {body}",
                m.decision_id,
                server.name
            );
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

/// Every decision in `made` is readable on `server`.
async fn readable_on(http: &reqwest::Client, server: &Server, made: &[Made]) {
    for m in made {
        let r = http
            .get(server.url(&format!("/v1/decisions/{}", m.decision_id)))
            .send()
            .await
            .expect("GET decision");
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status, 200,
            "GET /v1/decisions/{} on {}: {body}",
            m.decision_id, server.name
        );
        assert_eq!(body["decision_id"], m.decision_id.as_str(), "{body}");
    }
}

/// (decisions, labelled) of the auditor's fullest 24-hour window, as `server` reports it.
async fn audit_counts(http: &reqwest::Client, server: &Server) -> Option<(u64, u64)> {
    let r = http
        .get(server.url("/v1/audit/fairness"))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    v["current"]
        .as_array()?
        .iter()
        .filter(|w| w["label"] == "24h")
        .filter_map(|w| Some((w["decisions"].as_u64()?, w["labeled"].as_u64()?)))
        .max()
}

/// Polls `server` until its audit counts reach `want` (or exceed it), then returns them.
async fn wait_counts(http: &reqwest::Client, server: &Server, want: (u64, u64)) -> (u64, u64) {
    // A bound so that a lost event fails the test instead of hanging it; not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut last = None;
    loop {
        if let Some(c) = audit_counts(http, server).await {
            if c.0 >= want.0 && c.1 >= want.1 {
                return c;
            }
            last = Some(c);
        }
        assert!(
            Instant::now() < deadline,
            "audit on {} never reached {want:?}; last {last:?}\n--- log\n{}",
            server.name,
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Live owners of the auditor's leases in `schema`.
fn lease_owners(schema: &str) -> BTreeSet<String> {
    psql(&format!(
        "SELECT owner FROM \"{schema}\".stream_leases WHERE expires_at > now()"
    ))
    .lines()
    .map(str::trim)
    .filter(|l| !l.is_empty())
    .map(str::to_string)
    .collect()
}

/// A sequence number at or after the last message of the stream right now (0 when the stream
/// is empty or does not exist yet): messages published later have larger sequences.
async fn stream_end(broker: &NatsBroker) -> u64 {
    let probe = |seq: u64| async move {
        match broker.read_stream(STREAM, "attest.events.>", seq, 1).await {
            Ok(v) => v.first().map(|m| m.sequence),
            Err(_) => None,
        }
    };
    let mut lo = 0u64;
    let mut hi = 1u64;
    while let Some(s) = probe(hi).await {
        lo = s;
        hi = s.saturating_mul(2).max(s + 1);
    }
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        match probe(mid).await {
            Some(s) if s < hi => lo = s,
            _ => hi = mid,
        }
    }
    lo
}

/// How many `LoanDecisionMade` messages the stream holds per decision stream id, from `from`.
async fn decision_messages(broker: &NatsBroker, from: u64) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut seq = from;
    loop {
        let batch = broker
            .read_stream(STREAM, "attest.events.loanapplication", seq, 500)
            .await
            .expect("read ATTEST_EVENTS");
        let Some(last) = batch.last() else { break };
        seq = last.sequence + 1;
        for m in &batch {
            if m.message.header("Attest-Event-Type") == Some("LoanDecisionMade") {
                if let Some(id) = m.message.header("Attest-Stream-Id") {
                    *counts.entry(id.to_string()).or_default() += 1;
                }
            }
        }
    }
    counts
}

#[test]
fn two_servers_share_one_audit_and_lose_nothing() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let tag = format!("{}_{nanos}", std::process::id());
    // Declared first: dropped last, after the servers are killed.
    let schema = Schema(format!("e2e_{tag}"));
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&schema.0, &tag, dir.path()));
}

async fn run(schema: &str, tag: &str, dir: &Path) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let broker = NatsBroker::connect(NATS_URL).await.expect("connect NATS");
    let from = stream_end(&broker).await + 1;

    // A first (it bootstraps the schema and the default model), then B.
    let mut a = Server::start("a", schema, &dir.join("data-a"), dir.join("a.log"));
    a.wait_ready(&http).await;
    let mut b = Server::start("b", schema, &dir.join("data-b"), dir.join("b.log"));
    b.wait_ready(&http).await;

    // Decisions split across both; each outcome goes to the other server.
    let (on_a, on_b) = tokio::join!(
        decide(&http, &a, tag, 101, PER_SERVER),
        decide(&http, &b, tag, 202, PER_SERVER)
    );
    let ids: BTreeSet<&str> = on_a
        .iter()
        .chain(&on_b)
        .map(|m| m.decision_id.as_str())
        .collect();
    assert_eq!(ids.len(), 2 * PER_SERVER, "decision ids are not distinct");
    tokio::join!(outcomes(&http, &b, &on_a), outcomes(&http, &a, &on_b));

    // Each server reads the other's decisions.
    readable_on(&http, &b, &on_a).await;
    readable_on(&http, &a, &on_b).await;

    // Both servers' view of the one audit: every decision and outcome exactly once.
    let total = (2 * PER_SERVER) as u64;
    let seen_a = wait_counts(&http, &a, (total, total)).await;
    let seen_b = wait_counts(&http, &b, (total, total)).await;
    assert_eq!(seen_a, (total, total), "audit on A double counts");
    assert_eq!(seen_b, (total, total), "audit on B double counts");

    // One auditor: the lease has one live owner, one of the two servers.
    let owners = lease_owners(schema);
    assert_eq!(owners.len(), 1, "auditor lease owners: {owners:?}");
    let owner = owners.into_iter().next().unwrap();
    assert!(
        owner == a.owner() || owner == b.owner(),
        "lease owner {owner} is neither {} nor {}",
        a.owner(),
        b.owner()
    );
    let (victim, survivor) = if owner == a.owner() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    eprintln!(
        "audit counts A {seen_a:?} B {seen_b:?}; lease owner {owner}; killing {}",
        victim.name
    );
    victim.kill();

    // More traffic on the survivor, which takes the lease over after it expires.
    let late = decide(&http, survivor, tag, 303, AFTER_KILL).await;
    outcomes(&http, survivor, &late).await;
    let total_after = total + AFTER_KILL as u64;
    let seen = wait_counts(&http, survivor, (total_after, total_after)).await;
    assert_eq!(
        seen,
        (total_after, total_after),
        "audit after take-over double counts"
    );
    let owners = lease_owners(schema);
    eprintln!("after take-over: counts {seen:?}, lease owners {owners:?}");
    assert_eq!(
        owners,
        BTreeSet::from([survivor.owner()]),
        "the survivor does not hold the auditor lease"
    );

    // The relays published every decision of this run to JetStream, once each.
    let mut want: BTreeSet<String> = ids
        .iter()
        .map(|id| format!("loanapplication-{id}"))
        .collect();
    want.extend(
        late.iter()
            .map(|m| format!("loanapplication-{}", m.decision_id)),
    );
    assert_eq!(want.len(), total_after as usize);
    let deadline = Instant::now() + Duration::from_secs(120);
    let ours = loop {
        let counts = decision_messages(&broker, from).await;
        let ours: BTreeMap<String, usize> = counts
            .into_iter()
            .filter(|(k, _)| want.contains(k))
            .collect();
        if ours.len() == want.len() || Instant::now() >= deadline {
            break ours;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "{STREAM}: {} decisions of this run from sequence {from}",
        ours.len()
    );
    let missing: Vec<&String> = want.iter().filter(|k| !ours.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} decisions never reached {STREAM}: {:?}",
        missing.len(),
        want.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    let doubled: Vec<(&String, &usize)> = ours.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubled.is_empty(),
        "decisions published more than once to {STREAM}: {doubled:?}"
    );
}
