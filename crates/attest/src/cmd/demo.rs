//! `attest demo`: drives a running `attest serve` with synthetic loan applications.
//!
//! 1. **decide**: `N` applications from [`attest_lending::synth`] (seeded; `--bias` injects the
//!    generator's bias against its disadvantaged group) are posted to `POST /v1/decisions`, a
//!    few at a time, each with the idempotency key `demo-<run id>-<i>`;
//! 2. **outcomes**: each applicant's synthetic outcome (repaid / defaulted) is posted to
//!    `POST /v1/decisions/{id}/outcome`;
//! 3. **report**: waits (bounded by `--settle`) for the auditor to have seen the outcomes, then
//!    prints approval rates by group, the audit state, breach events and incidents, and where
//!    to look.
//!
//! Every request is safe to retry: decisions carry their idempotency key (a retry returns the
//! same decision, one event) and an outcome already recorded answers 409, counted as already
//! done. Transport errors and 502/503/504 are retried with backoff for up to `--retry-for`, so
//! a demo rides through a server restart. Running the same `--run-id` again re-sends the same
//! keys: the server answers with the decisions it already made and adds nothing. `--phase`
//! runs one phase only (`outcomes` learns the decision ids by re-sending the decisions, which
//! adds nothing either).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use attest_lending::synth::{self, Applicant, Generator};
use attest_lending::{Decision, DecisionRequest, DecisionResponse, Outcome};
use clap::{Args, ValueEnum};
use futures::stream::{self, StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};

use super::loadgen::parse_duration;
use crate::GlobalArgs;

/// Which part of the demo to run.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Decisions, then outcomes, then the report.
    All,
    /// Only post the decisions (and report on them).
    Decide,
    /// Only post the outcomes of an earlier `--phase decide` with the same `--run-id`.
    Outcomes,
}

/// Options of `attest demo` (the run itself).
#[derive(Args, Debug, Clone)]
pub struct DemoRunArgs {
    /// Base URL of the running server.
    #[arg(long, env = "ATTEST_URL", default_value = "http://127.0.0.1:7878")]
    pub url: String,
    /// Number of synthetic applications.
    #[arg(long, default_value_t = 2000)]
    pub applications: usize,
    /// Injected bias against the generator's disadvantaged group (sex = female), 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0, value_parser = parse_bias)]
    pub bias: f64,
    /// Seed of the synthetic population (the built-in model is trained on seed 42, so the
    /// default draws applicants it has not seen).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// API key (scopes decide + read), sent as `Authorization: Bearer <key>`.
    #[arg(long, env = "ATTEST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Prefix of the idempotency keys; reuse it to resume or repeat a run without new
    /// decisions (default: a fresh id).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Which phase to run.
    #[arg(long, value_enum, default_value_t = Phase::All)]
    pub phase: Phase,
    /// How long to keep retrying one request while the server is unreachable or answers
    /// 502/503/504 (e.g. while it restarts).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub retry_for: Duration,
    /// How long to wait for the auditor to catch up before the report.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub settle: Duration,
}

fn parse_bias(s: &str) -> Result<f64, String> {
    let b: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number between 0.0 and 1.0"))?;
    if (0.0..=1.0).contains(&b) {
        Ok(b)
    } else {
        Err(format!("bias must be between 0.0 and 1.0, got {b}"))
    }
}

/// One generated application: the request and the applicant behind it.
pub(crate) struct SyntheticApplication {
    /// The `POST /v1/decisions` body.
    pub request: DecisionRequest,
    /// The applicant (protected attributes, synthetic outcome).
    pub applicant: Applicant,
}

/// `count` applications from the seeded generator.
pub(crate) fn synthetic_requests(
    count: usize,
    seed: u64,
    bias: f64,
) -> anyhow::Result<Vec<SyntheticApplication>> {
    let mut g = Generator::new(seed, bias);
    Ok((0..count)
        .map(|_| {
            let (request, applicant) = g.next_application();
            SyntheticApplication { request, applicant }
        })
        .collect())
}

/// Approvals within one group.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupCount {
    /// Decisions.
    pub n: u64,
    /// Approvals.
    pub approved: u64,
}

/// What the demo did and found.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Idempotency-key prefix of this run.
    pub run_id: String,
    /// Server base URL.
    pub url: String,
    /// Applications generated.
    pub applications: usize,
    /// Seed of the population.
    pub seed: u64,
    /// Injected bias.
    pub bias: f64,
    /// Decisions answered (including ones the server had already made for these keys).
    pub decisions: u64,
    /// Approvals among them.
    pub approved: u64,
    /// Distinct decision ids answered.
    pub distinct_decision_ids: u64,
    /// Approvals per protected attribute and group (`sex` → `female` → counts).
    pub approval_by_group: BTreeMap<String, BTreeMap<String, GroupCount>>,
    /// Outcomes newly recorded.
    pub outcomes_recorded: u64,
    /// Outcomes the server already had (409), e.g. from an earlier run with this run id.
    pub outcomes_already_recorded: u64,
    /// Defaults among the posted outcomes.
    pub defaulted: u64,
    /// Requests that had to be retried (transport errors, 502/503/504).
    pub retries: u64,
    /// `GET /v1/audit/fairness` after settling (or the error it gave).
    pub fairness: Value,
    /// Breach events and incidents the server lists (or why they could not be read).
    pub breaches: Value,
    /// Where to look.
    pub links: BTreeMap<String, String>,
}

/// Runs `attest demo` (the run itself; `attest demo train` is `demo_train`).
pub async fn run(args: DemoRunArgs, g: &GlobalArgs) -> anyhow::Result<()> {
    if args.applications == 0 {
        bail!("--applications must be at least 1");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.phase == Phase::Outcomes && args.run_id.is_none() {
        bail!("--phase outcomes needs the --run-id of the earlier --phase decide run");
    }
    let run_id = args.run_id.clone().unwrap_or_else(fresh_run_id);
    let api = Api::new(&args)?;
    api.check_reachable().await?;

    let apps = synthetic_requests(args.applications, args.seed, args.bias)?;
    if !g.json {
        eprintln!(
            "attest demo: {} applications (seed {}, bias {:.2}, run id {run_id}) against {}",
            apps.len(),
            args.seed,
            args.bias,
            api.base
        );
    }

    // Phase 1: decisions (also how --phase outcomes learns the ids: the keys replay).
    let started = Instant::now();
    let pb = progress(apps.len() as u64, "deciding", g.json);
    let decided: Vec<DecisionResponse> = stream::iter(apps.iter().enumerate())
        .map(|(i, app)| {
            let api = &api;
            let pb = &pb;
            let key = format!("demo-{run_id}-{i}");
            async move {
                let r = api.decide(&app.request, &key).await;
                pb.inc(1);
                r
            }
        })
        .buffered(args.concurrency)
        .try_collect()
        .await?;
    pb.finish_and_clear();
    if !g.json {
        eprintln!(
            "decided {} applications in {:.1} s",
            decided.len(),
            started.elapsed().as_secs_f64()
        );
    }

    let mut report = DemoReport {
        run_id: run_id.clone(),
        url: api.base.clone(),
        applications: apps.len(),
        seed: args.seed,
        bias: args.bias,
        decisions: decided.len() as u64,
        approved: decided
            .iter()
            .filter(|d| d.decision == Decision::Approve)
            .count() as u64,
        distinct_decision_ids: decided
            .iter()
            .map(|d| d.decision_id.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64,
        approval_by_group: approval_by_group(&apps, &decided),
        outcomes_recorded: 0,
        outcomes_already_recorded: 0,
        defaulted: 0,
        retries: 0,
        fairness: Value::Null,
        breaches: Value::Null,
        links: links(&api.base),
    };

    // Phase 2: outcomes.
    if args.phase != Phase::Decide {
        let started = Instant::now();
        let pb = progress(apps.len() as u64, "outcomes", g.json);
        let results: Vec<bool> = stream::iter(apps.iter().zip(&decided))
            .map(|(app, d)| {
                let api = &api;
                let pb = &pb;
                async move {
                    let r = api
                        .record_outcome(&d.decision_id, app.applicant.outcome)
                        .await;
                    pb.inc(1);
                    r
                }
            })
            .buffered(args.concurrency)
            .try_collect()
            .await?;
        pb.finish_and_clear();
        report.outcomes_recorded = results.iter().filter(|new| **new).count() as u64;
        report.outcomes_already_recorded = results.iter().filter(|new| !**new).count() as u64;
        report.defaulted = apps
            .iter()
            .filter(|a| a.applicant.outcome == Outcome::Defaulted)
            .count() as u64;
        if !g.json {
            eprintln!(
                "recorded {} outcomes in {:.1} s ({} were already recorded)",
                results.len(),
                started.elapsed().as_secs_f64(),
                report.outcomes_already_recorded
            );
        }
    }
    report.retries = api.retries.load(std::sync::atomic::Ordering::Relaxed);

    // Phase 3: what the auditor made of it.
    report.fairness = api.settled_fairness(args.settle, g.json).await;
    report.breaches = api.breaches().await;

    if g.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn fresh_run_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3f"),
        std::process::id()
    )
}

fn progress(len: u64, what: &str, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    // The template is a literal known to parse; fall back to the default style otherwise.
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

fn approval_by_group(
    apps: &[SyntheticApplication],
    decided: &[DecisionResponse],
) -> BTreeMap<String, BTreeMap<String, GroupCount>> {
    let mut out: BTreeMap<String, BTreeMap<String, GroupCount>> = BTreeMap::new();
    for (app, d) in apps.iter().zip(decided) {
        let p = &app.applicant.protected;
        for (attr, value) in [
            ("sex", &p.sex),
            ("race", &p.race),
            ("age_band", &p.age_band),
        ] {
            let Some(value) = value else { continue };
            let c = out
                .entry(attr.to_string())
                .or_default()
                .entry(value.clone())
                .or_default();
            c.n += 1;
            if d.decision == Decision::Approve {
                c.approved += 1;
            }
        }
    }
    out
}

fn links(base: &str) -> BTreeMap<String, String> {
    [
        ("dashboard", format!("{base}/")),
        ("fairness", format!("{base}/v1/audit/fairness")),
        ("drift", format!("{base}/v1/audit/drift")),
        ("metrics", format!("{base}/metrics")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A thin client of the server's API with retries.
struct Api {
    client: reqwest::Client,
    base: String,
    auth: Option<String>,
    retry_for: Duration,
    retries: std::sync::atomic::AtomicU64,
}

/// A request outcome worth retrying or not.
enum Attempt<T> {
    Done(T),
    Retry(String),
}

impl Api {
    fn new(args: &DemoRunArgs) -> anyhow::Result<Self> {
        let base = args.url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base).with_context(|| format!("--url {base:?}"))?;
        if parsed.scheme() != "http" {
            bail!("--url {base:?}: only http:// is supported by attest demo");
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            client,
            base,
            auth: args.api_key.as_ref().map(|k| format!("Bearer {k}")),
            retry_for: args.retry_for,
            retries: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(a) = &self.auth {
            r = r.header(reqwest::header::AUTHORIZATION, a);
        }
        r
    }

    async fn check_reachable(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match self
                .request(reqwest::Method::GET, "/readyz")
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) if Instant::now() >= deadline => bail!(
                    "the Attest server at {} is not ready (GET /readyz answered {})",
                    self.base,
                    r.status()
                ),
                Err(e) if Instant::now() >= deadline || !e.is_connect() => {
                    return Err(anyhow!(e)).with_context(|| {
                        format!(
                            "cannot reach the Attest server at {} — start it with `attest serve` \
                             (or point --url at it)",
                            self.base
                        )
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Runs `attempt` until it is done, retrying while it asks to, for at most `retry_for`.
    async fn with_retries<T, F, Fut>(&self, what: &str, mut attempt: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Attempt<T>>>,
    {
        let deadline = Instant::now() + self.retry_for;
        let mut backoff = Duration::from_millis(100);
        loop {
            match attempt().await? {
                Attempt::Done(v) => return Ok(v),
                Attempt::Retry(why) => {
                    if Instant::now() + backoff > deadline {
                        bail!(
                            "{what}: gave up after {:.0} s of retries; last error: {why}",
                            self.retry_for.as_secs_f64()
                        );
                    }
                    self.retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(%why, "retrying {what}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn decide(&self, req: &DecisionRequest, key: &str) -> anyhow::Result<DecisionResponse> {
        let what = format!("POST /v1/decisions (applicant {})", req.applicant_id);
        self.with_retries(&what, || async {
            let sent = self
                .request(reqwest::Method::POST, "/v1/decisions")
                .header("Idempotency-Key", key)
                .json(req)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => return Ok(Attempt::Retry(e.to_string())),
            };
            let status = resp.status();
            if is_transient(status) {
                return Ok(Attempt::Retry(format!("HTTP {status}")));
            }
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => return Ok(Attempt::Retry(e.to_string())),
            };
            if !status.is_success() {
                bail!("{what}: HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
            let d: DecisionResponse = serde_json::from_slice(&body)
                .with_context(|| format!("{what}: unexpected response body"))?;
            Ok(Attempt::Done(d))
        })
        .await
    }

    /// Posts an outcome; `true` when newly recorded, `false` when it already was (409).
    async fn record_outcome(&self, decision_id: &str, outcome: Outcome) -> anyhow::Result<bool> {
        let what = format!("POST /v1/decisions/{decision_id}/outcome");
        let path = format!("/v1/decisions/{decision_id}/outcome");
        self.with_retries(&what, || async {
            let sent = self
                .request(reqwest::Method::POST, &path)
                .json(&json!({ "outcome": outcome }))
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => return Ok(Attempt::Retry(e.to_string())),
            };
            let status = resp.status();
            if is_transient(status) {
                return Ok(Attempt::Retry(format!("HTTP {status}")));
            }
            if status == StatusCode::CONFLICT {
                return Ok(Attempt::Done(false));
            }
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                bail!("{what}: HTTP {status}: {body}");
            }
            Ok(Attempt::Done(true))
        })
        .await
    }

    async fn get_json(&self, path: &str) -> Result<Value, String> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("not JSON: {e}"))
    }

    /// `GET /v1/audit/fairness`, polled until the auditor has caught up or `settle` runs out.
    ///
    /// Settled: two reads a second apart are equal apart from their timestamps and, when the
    /// document reports positions, the auditor is at the log head (`position >=
    /// head_position`, `lag_events == 0`).
    async fn settled_fairness(&self, settle: Duration, quiet: bool) -> Value {
        let deadline = Instant::now() + settle;
        let mut last: Option<Result<Value, String>> = None;
        let mut same_error = 0;
        if !quiet {
            eprintln!(
                "waiting for the auditor to catch up (up to {:.0} s)…",
                settle.as_secs_f64()
            );
        }
        loop {
            let now = self.get_json("/v1/audit/fairness").await;
            let settled = match (&last, &now) {
                (Some(Ok(prev)), Ok(cur)) => {
                    without_volatile(prev) == without_volatile(cur)
                        && (caught_up(cur) || !has_position(cur))
                }
                (Some(Err(prev)), Err(cur)) if prev == cur => {
                    // An endpoint that keeps failing the same way will not settle.
                    same_error += 1;
                    same_error >= 3
                }
                _ => false,
            };
            last = Some(now);
            if settled || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        match last {
            Some(Ok(v)) => v,
            Some(Err(e)) => json!({ "error": e }),
            None => Value::Null,
        }
    }

    /// Breach events and incidents, from the audit endpoints that list them.
    async fn breaches(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (name, path) in [
            ("breaches", "/v1/audit/breaches"),
            ("incidents", "/v1/audit/incidents"),
        ] {
            let v = match self.get_json(path).await {
                Ok(v) => v,
                Err(e) => json!({ "error": e }),
            };
            out.insert(name.to_string(), v);
        }
        Value::Object(out)
    }
}

/// Whether an audit document says its reader is at the log head.
fn caught_up(doc: &Value) -> bool {
    match (
        doc.get("position").and_then(Value::as_u64),
        doc.get("head_position").and_then(Value::as_u64),
        doc.get("lag_events").and_then(Value::as_u64),
    ) {
        (Some(p), Some(h), lag) => p >= h && lag.unwrap_or(0) == 0,
        _ => false,
    }
}

/// Whether an audit document reports the auditor's position.
fn has_position(doc: &Value) -> bool {
    doc.get("position").is_some() && doc.get("head_position").is_some()
}

/// The document without the fields that change on every read.
fn without_volatile(doc: &Value) -> Value {
    match doc {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "generated_at" | "lag_seconds"))
                .map(|(k, v)| (k.clone(), without_volatile(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_volatile).collect()),
        other => other.clone(),
    }
}

fn is_transient(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

fn pct(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        100.0 * num as f64 / den as f64
    }
}

fn render(r: &DemoReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\ndecisions  {} ({} approved, {:.1} %; {} distinct ids)",
        r.decisions,
        r.approved,
        pct(r.approved, r.decisions),
        r.distinct_decision_ids
    );
    for (attr, groups) in &r.approval_by_group {
        let line = groups
            .iter()
            .map(|(g, c)| format!("{g} {:.1} % (n={})", pct(c.approved, c.n), c.n))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(s, "  approval by {attr}: {line}");
    }
    let (attr, group) = synth::DISADVANTAGED;
    let _ = writeln!(
        s,
        "  (the injected bias, {:.2}, works against {attr} = {group})",
        r.bias
    );
    if r.outcomes_recorded + r.outcomes_already_recorded > 0 {
        let _ = writeln!(
            s,
            "outcomes   {} recorded, {} already recorded ({} defaulted)",
            r.outcomes_recorded, r.outcomes_already_recorded, r.defaulted
        );
    }
    if r.retries > 0 {
        let _ = writeln!(s, "retries    {}", r.retries);
    }
    let _ = writeln!(s, "\nfairness audit (GET /v1/audit/fairness):");
    let _ = write!(s, "{}", render_fairness(&r.fairness));
    let _ = write!(s, "{}", render_breaches(&r.fairness, &r.breaches));
    let _ = writeln!(s, "\nlook at:");
    for (k, v) in &r.links {
        let _ = writeln!(s, "  {k:<10} {v}");
    }
    s
}

/// A compact view of an audit document: per window length, the window holding the most
/// decisions, with each attribute's disparities. Unknown shapes print as JSON.
fn render_fairness(doc: &Value) -> String {
    let mut s = String::new();
    if let Some(e) = doc.get("error") {
        let _ = writeln!(s, "  unavailable: {}", e.as_str().unwrap_or(&e.to_string()));
        return s;
    }
    let Some(windows) = doc.get("current").and_then(Value::as_array) else {
        let _ = writeln!(s, "{}", indent(&pretty(doc)));
        return s;
    };
    let mut best: BTreeMap<String, &Value> = BTreeMap::new();
    for w in windows {
        let label = w["label"].as_str().unwrap_or("?").to_string();
        let n = w["decisions"].as_u64().unwrap_or(0);
        if best
            .get(&label)
            .is_none_or(|b| b["decisions"].as_u64().unwrap_or(0) < n)
        {
            best.insert(label, w);
        }
    }
    if best.is_empty() {
        let _ = writeln!(s, "  no open window yet");
    }
    for (label, w) in best {
        let _ = writeln!(
            s,
            "  {label} window, model {}@{}: {} decisions, {} with outcome",
            w["model"]["id"].as_str().unwrap_or("?"),
            w["model"]["version"],
            w["decisions"],
            w["labeled"]
        );
        for a in w["fairness"].as_array().into_iter().flatten() {
            let mut parts = Vec::new();
            for (key, short) in [
                ("demographic_parity_difference", "DPD"),
                ("disparate_impact_ratio", "DIR"),
                ("equalized_odds_difference", "EOD"),
            ] {
                let d = &a[key];
                let Some(v) = d["value"].as_f64() else {
                    continue;
                };
                let interval = match (
                    d["interval"]["lower"].as_f64(),
                    d["interval"]["upper"].as_f64(),
                ) {
                    (Some(lo), Some(hi)) => format!(" [{lo:.3}, {hi:.3}]"),
                    _ => String::new(),
                };
                let flag = if d["breached"] == Value::Bool(true) {
                    " BREACH"
                } else {
                    ""
                };
                parts.push(format!("{short} {v:.3}{interval}{flag}"));
            }
            let parts = if parts.is_empty() {
                "not enough samples per group yet".to_string()
            } else {
                parts.join(", ")
            };
            let _ = writeln!(
                s,
                "    {:<9} {parts}",
                a["attribute"].as_str().unwrap_or("?")
            );
        }
    }
    s
}

/// Breaches from the audit document (and any other listing the demo read).
fn render_breaches(fairness: &Value, extra: &Value) -> String {
    let mut s = String::new();
    let list = fairness
        .get("breaches")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        let live = fairness
            .get("current")
            .is_some_and(|c| c.to_string().contains("\"breached\":true"));
        if live {
            let _ = writeln!(
                s,
                "breaches: none recorded yet — the open windows above flag a breach; the \
                 auditor appends the breach event and opens the incident when such a window closes"
            );
        } else {
            let _ = writeln!(s, "breaches: none");
        }
    } else {
        let _ = writeln!(s, "breaches: {}", list.len());
    }
    for b in &list {
        let kind = &b["kind"];
        let what = if let Some(f) = kind.get("Fairness") {
            format!(
                "fairness: {} {} = {:.3} (threshold {}) between {}",
                f["attribute"].as_str().unwrap_or("?"),
                f["metric"].as_str().unwrap_or("?"),
                f["value"].as_f64().unwrap_or(f64::NAN),
                f["threshold"],
                f["groups"]
            )
        } else if let Some(d) = kind.get("Drift") {
            format!(
                "drift: {} {} = {:.3} (threshold {})",
                d["feature"].as_str().unwrap_or("?"),
                d["statistic"].as_str().unwrap_or("?"),
                d["value"].as_f64().unwrap_or(f64::NAN),
                d["threshold"]
            )
        } else {
            kind.to_string()
        };
        let _ = writeln!(
            s,
            "  {what} → incident {}",
            b["incident_id"].as_str().unwrap_or("?")
        );
    }
    if let Value::Object(m) = extra {
        for (name, v) in m {
            if v.get("error").is_none() {
                let _ = writeln!(s, "{name}:\n{}", indent(&pretty(v)));
            }
        }
    }
    s
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_is_bounded() {
        assert_eq!(parse_bias("0.6"), Ok(0.6));
        assert!(parse_bias("1.5").is_err());
        assert!(parse_bias("-0.1").is_err());
        assert!(parse_bias("lots").is_err());
    }

    #[test]
    fn groups_count_approvals() {
        let apps = synthetic_requests(50, 1, 0.0).unwrap();
        let decided: Vec<DecisionResponse> = apps
            .iter()
            .enumerate()
            .map(|(i, _)| DecisionResponse {
                decision_id: format!("d{i}"),
                decision: if i % 2 == 0 {
                    Decision::Approve
                } else {
                    Decision::Decline
                },
                probability: 0.1,
                threshold: 0.5,
                model: attest_lending::ModelRef {
                    id: "m".into(),
                    version: 1,
                },
                top_contributions: vec![],
                trace_id: String::new(),
            })
            .collect();
        let by = approval_by_group(&apps, &decided);
        let sex = &by["sex"];
        assert_eq!(sex.values().map(|c| c.n).sum::<u64>(), 50);
        assert_eq!(sex.values().map(|c| c.approved).sum::<u64>(), 25);
        assert!(by.contains_key("race") && by.contains_key("age_band"));
    }
}
