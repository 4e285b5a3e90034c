//! `attest loadgen decisions`: an open-loop, constant-rate load generator for
//! `POST /v1/decisions`.
//!
//! **Open loop.** Request `i` is due at `start + i / rate`, whatever happened before it. The
//! first free connection takes the next request, sleeps until it is due if it is early, and
//! sends it. Latency is measured from the *due* time whenever the request could not leave on
//! time because every connection was still busy, so a server that stalls is charged for all the
//! requests that queued behind the stall (no coordinated omission). When a connection was idle
//! and merely woke up a little late (tokio's timer has millisecond granularity), the generator's
//! own lateness is not charged to the server: latency then starts at the actual send.
//!
//! Each connection is one HTTP/1.1 keep-alive connection (hyper, `TCP_NODELAY`), reopened after
//! an error. Latencies go into an HDR histogram (microseconds, 3 significant digits). Bodies are
//! synthetic applications from [`attest_lending::synth`], generated once before the run and
//! sent round robin.
//!
//! `--find-max` steps the rate up (by `--step`) until a step fails — p99 above `--p99-limit-ms`,
//! any error, or an achieved rate below 97 % of the target — then bisects between the last
//! passing and the first failing rate, and reports the highest passing rate as the maximum
//! sustained rate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::GlobalArgs;

/// `attest loadgen …`.
#[derive(Subcommand, Debug)]
pub enum LoadgenCommand {
    /// Constant-rate `POST /v1/decisions` against a running `attest serve`.
    Decisions(DecisionsArgs),
}

/// Options of `attest loadgen decisions`.
#[derive(Args, Debug, Clone)]
pub struct DecisionsArgs {
    /// Base URL of the server.
    #[arg(long, env = "ATTEST_URL", default_value = "http://127.0.0.1:7878")]
    pub url: String,
    /// Target rate in requests per second (the starting rate with --find-max).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Measured duration of the run (e.g. `20s`, `500ms`, `2m`).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests sent at the target rate before measuring starts (not recorded).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Keep-alive connections (the most requests in flight at once).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// API key, sent as `Authorization: Bearer <key>`.
    #[arg(long, env = "ATTEST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Seed of the synthetic applications.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Distinct request bodies generated up front and sent round robin.
    #[arg(long, default_value_t = 2048)]
    pub bodies: usize,
    /// A request not answered within this time counts as a timeout error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Gauges sampled from /metrics every second during the run (maximum and last value are
    /// reported; a missing metric is reported as absent). Repeatable.
    #[arg(long = "watch-metric", default_value = "attest_audit_lag_seconds")]
    pub watch_metrics: Vec<String>,
    /// Step the rate up until p99 exceeds --p99-limit-ms or errors appear; report the maximum
    /// sustained rate.
    #[arg(long)]
    pub find_max: bool,
    /// The p99 bound (milliseconds) a --find-max step must meet.
    #[arg(long, default_value_t = 10.0)]
    pub p99_limit_ms: f64,
    /// Rate increment between --find-max steps (requests per second).
    #[arg(long, default_value_t = 500.0)]
    pub step: f64,
    /// Measured duration of each --find-max step.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub step_duration: Duration,
    /// Bisection rounds between the last passing and the first failing --find-max rate.
    #[arg(long, default_value_t = 2)]
    pub refine: u32,
    /// Highest rate --find-max tries.
    #[arg(long, default_value_t = 100_000.0)]
    pub max_rate: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest observed.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// A sampled gauge: maximum and last value seen during the run.
#[derive(Debug, Clone, Serialize)]
pub struct WatchedMetric {
    /// Metric name.
    pub name: String,
    /// Number of scrapes in which the metric was present.
    pub samples: u64,
    /// Largest value over all label sets and scrapes (`None` when never present).
    pub max: Option<f64>,
    /// Largest value over label sets in the last scrape where it was present.
    pub last: Option<f64>,
}

/// What one constant-rate run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Target rate, requests per second.
    pub target_rate: f64,
    /// Measured seconds (warm-up excluded).
    pub duration_s: f64,
    /// Keep-alive connections.
    pub connections: usize,
    /// Requests scheduled in the measured window.
    pub sent: u64,
    /// 2xx answers in the measured window.
    pub ok: u64,
    /// Failures in the measured window by kind: an HTTP status (`"503"`), `connect`, `io`,
    /// `timeout`.
    pub errors: BTreeMap<String, u64>,
    /// Successful requests per second over the measured window (from its start to the last
    /// completion).
    pub achieved_rate: f64,
    /// Latency of successful requests, from the intended send time, milliseconds.
    pub latency_ms: Latency,
    /// Gauges sampled from /metrics during the run.
    pub metrics: Vec<WatchedMetric>,
}

impl RunReport {
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One --find-max step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The run at this rate.
    pub run: RunReport,
    /// Whether the step met the bounds.
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub reason: String,
}

/// What --find-max found.
#[derive(Debug, Clone, Serialize)]
pub struct FindMaxReport {
    /// The highest rate that passed (`None` when even the first step failed).
    pub max_sustained_rate: Option<f64>,
    /// The p99 bound used, milliseconds.
    pub p99_limit_ms: f64,
    /// Every step in the order run.
    pub steps: Vec<Step>,
}

/// Runs `attest loadgen …`.
pub async fn run(cmd: LoadgenCommand, g: &GlobalArgs) -> anyhow::Result<()> {
    match cmd {
        LoadgenCommand::Decisions(args) => decisions(args, g.json).await,
    }
}

async fn decisions(args: DecisionsArgs, json: bool) -> anyhow::Result<()> {
    let target = Target::parse(&args.url, args.api_key.as_deref())?;
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of requests per second");
    }
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.bodies == 0 {
        bail!("--bodies must be at least 1");
    }
    if args.duration.is_zero() || (args.find_max && args.step_duration.is_zero()) {
        bail!("the measured duration must be longer than zero");
    }
    check_reachable(&target).await?;
    let bodies = Arc::new(request_bodies(args.bodies, args.seed)?);

    if !args.find_max {
        let report = run_once(&target, &bodies, &args, args.rate, args.duration).await?;
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", render_run(&report));
        }
        return Ok(());
    }

    if !(args.step.is_finite() && args.step > 0.0) {
        bail!("--step must be a positive rate");
    }
    let mut steps: Vec<Step> = Vec::new();
    let mut pass: Option<f64> = None;
    let mut fail: Option<f64> = None;
    let mut rate = args.rate;
    while rate <= args.max_rate {
        let step = judged_step(&target, &bodies, &args, rate).await?;
        if !json {
            eprintln!("{}", render_step(&step));
        }
        let ok = step.passed;
        steps.push(step);
        if ok {
            pass = Some(rate);
            rate += args.step;
        } else {
            fail = Some(rate);
            break;
        }
    }
    if let (Some(mut lo), Some(mut hi)) = (pass, fail) {
        for _ in 0..args.refine {
            let mid = ((lo + hi) / 2.0).round();
            if mid <= lo || mid >= hi {
                break;
            }
            let step = judged_step(&target, &bodies, &args, mid).await?;
            if !json {
                eprintln!("{}", render_step(&step));
            }
            if step.passed {
                lo = mid;
            } else {
                hi = mid;
            }
            steps.push(step);
        }
        pass = Some(lo);
    }
    let report = FindMaxReport {
        max_sustained_rate: pass,
        p99_limit_ms: args.p99_limit_ms,
        steps,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        match report.max_sustained_rate {
            Some(r) => println!(
                "maximum sustained rate: {r:.0} requests/s (p99 <= {} ms, no errors, achieved >= 97 % of target)",
                args.p99_limit_ms
            ),
            None => println!(
                "no sustained rate: the first step ({:.0}/s) already failed; try a lower --rate",
                args.rate
            ),
        }
    }
    Ok(())
}

async fn judged_step(
    target: &Target,
    bodies: &Arc<Vec<Bytes>>,
    args: &DecisionsArgs,
    rate: f64,
) -> anyhow::Result<Step> {
    let run = run_once(target, bodies, args, rate, args.step_duration).await?;
    let mut reasons = Vec::new();
    if run.error_count() > 0 {
        reasons.push(format!("{} errors", run.error_count()));
    }
    if run.latency_ms.p99 > args.p99_limit_ms {
        reasons.push(format!(
            "p99 {:.2} ms > {} ms",
            run.latency_ms.p99, args.p99_limit_ms
        ));
    }
    if run.achieved_rate < 0.97 * rate {
        reasons.push(format!(
            "achieved {:.0}/s < 97 % of target",
            run.achieved_rate
        ));
    }
    // Let the server drain queues (and its auditor catch up) before the next step.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Step {
        passed: reasons.is_empty(),
        reason: reasons.join("; "),
        run,
    })
}

/// Where requests go.
#[derive(Debug, Clone)]
struct Target {
    /// `host:port` to connect to.
    addr: String,
    /// `Host` header value.
    host: String,
    /// Path prefix of the base URL, without a trailing slash.
    base_path: String,
    /// `Authorization` header value.
    authorization: Option<String>,
    /// The base URL as given (for reqwest), without a trailing slash.
    base_url: String,
}

impl Target {
    fn parse(url: &str, api_key: Option<&str>) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("--url {url:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("--url {url:?}: only http:// is supported (the load generator runs on loopback)");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("--url {url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host().to_string();
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(Target {
            addr: format!("{host}:{port}"),
            host: authority.as_str().to_string(),
            base_path,
            authorization: api_key.map(|k| format!("Bearer {k}")),
            base_url: url.trim_end_matches('/').to_string(),
        })
    }

    fn decisions_path(&self) -> String {
        format!("{}/v1/decisions", self.base_path)
    }
}

async fn check_reachable(target: &Target) -> anyhow::Result<()> {
    TcpStream::connect(&target.addr).await.with_context(|| {
        format!(
            "cannot reach the Attest server at {} — is `attest serve` running there?",
            target.base_url
        )
    })?;
    Ok(())
}

/// Synthetic `POST /v1/decisions` bodies.
fn request_bodies(count: usize, seed: u64) -> anyhow::Result<Vec<Bytes>> {
    super::demo::synthetic_requests(count, seed, 0.0)?
        .into_iter()
        .map(|r| Ok(Bytes::from(serde_json::to_vec(&r.request)?)))
        .collect()
}

/// The shared state of one run's workers.
struct RunCtx {
    target: Target,
    path: String,
    bodies: Arc<Vec<Bytes>>,
    start: Instant,
    measure_from: Instant,
    interval: f64,
    total: u64,
    next: AtomicU64,
    timeout: Duration,
}

/// What one worker saw in the measured window.
struct WorkerOutcome {
    hist: Histogram<u64>,
    ok: u64,
    sent: u64,
    errors: BTreeMap<String, u64>,
    last_done: Option<Instant>,
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs to 120 s at 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).context("creating the latency histogram")
}

async fn run_once(
    target: &Target,
    bodies: &Arc<Vec<Bytes>>,
    args: &DecisionsArgs,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<RunReport> {
    let interval = 1.0 / rate;
    let warmup_n = (args.warmup.as_secs_f64() * rate).round() as u64;
    let measured_n = (duration.as_secs_f64() * rate).round().max(1.0) as u64;
    // Open every connection before the clock starts.
    let mut senders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        senders.push(Some(connect(&target.addr).await?));
    }
    let start = Instant::now() + Duration::from_millis(20);
    let ctx = Arc::new(RunCtx {
        target: target.clone(),
        path: target.decisions_path(),
        bodies: bodies.clone(),
        start,
        measure_from: start + Duration::from_secs_f64(warmup_n as f64 * interval),
        interval,
        total: warmup_n + measured_n,
        next: AtomicU64::new(0),
        timeout: args.timeout,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_metrics(
        target.base_url.clone(),
        target.authorization.clone(),
        args.watch_metrics.clone(),
        stop.clone(),
    ));
    let mut handles = Vec::with_capacity(args.connections);
    for sender in senders {
        handles.push(tokio::spawn(worker(ctx.clone(), sender)));
    }
    let mut hist = new_histogram()?;
    let mut ok = 0;
    let mut sent = 0;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_done = ctx.measure_from;
    for h in handles {
        let w = h.await.context("a load generator worker panicked")??;
        hist.add(&w.hist).context("merging latency histograms")?;
        ok += w.ok;
        sent += w.sent;
        for (k, v) in w.errors {
            *errors.entry(k).or_default() += v;
        }
        if let Some(t) = w.last_done {
            last_done = last_done.max(t);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let metrics = watcher.await.unwrap_or_default();
    let elapsed = last_done
        .saturating_duration_since(ctx.measure_from)
        .as_secs_f64()
        .max(duration.as_secs_f64());
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(RunReport {
        target_rate: rate,
        duration_s: duration.as_secs_f64(),
        connections: args.connections,
        sent,
        ok,
        errors,
        achieved_rate: ok as f64 / elapsed,
        latency_ms: Latency {
            p50: ms(hist.value_at_quantile(0.5)),
            p90: ms(hist.value_at_quantile(0.9)),
            p99: ms(hist.value_at_quantile(0.99)),
            p99_9: ms(hist.value_at_quantile(0.999)),
            max: ms(hist.max()),
            mean: hist.mean() / 1000.0,
        },
        metrics,
    })
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "load generator connection closed");
        }
    });
    Ok(sender)
}

enum Failure {
    Connect,
    Io,
    Status(u16),
}

async fn send_one(ctx: &RunCtx, sender: &mut Option<Sender>, i: u64) -> Result<(), Failure> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(
            connect(&ctx.target.addr)
                .await
                .map_err(|_| Failure::Connect)?,
        );
    }
    let Some(s) = sender.as_mut() else {
        return Err(Failure::Connect);
    };
    s.ready().await.map_err(|_| Failure::Io)?;
    let body = ctx.bodies[(i % ctx.bodies.len() as u64) as usize].clone();
    let mut req = Request::post(ctx.path.as_str())
        .header(hyper::header::HOST, ctx.target.host.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(auth) = &ctx.target.authorization {
        req = req.header(hyper::header::AUTHORIZATION, auth.as_str());
    }
    let req = req.body(Full::new(body)).map_err(|_| Failure::Io)?;
    let resp = s.send_request(req).await.map_err(|_| Failure::Io)?;
    let status = resp.status();
    resp.into_body().collect().await.map_err(|_| Failure::Io)?;
    if status.is_success() {
        Ok(())
    } else {
        Err(Failure::Status(status.as_u16()))
    }
}

async fn worker(ctx: Arc<RunCtx>, mut sender: Option<Sender>) -> anyhow::Result<WorkerOutcome> {
    let mut out = WorkerOutcome {
        hist: new_histogram()?,
        ok: 0,
        sent: 0,
        errors: BTreeMap::new(),
        last_done: None,
    };
    loop {
        let i = ctx.next.fetch_add(1, Ordering::Relaxed);
        if i >= ctx.total {
            break;
        }
        let due = ctx.start + Duration::from_secs_f64(i as f64 * ctx.interval);
        let claimed = Instant::now();
        if claimed < due {
            tokio::time::sleep_until(due.into()).await;
        }
        // Idle before the due time: the send time is the honest start (our timer's lateness
        // is not the server's). Busy past it: the request queued behind the server, so the
        // clock started at the due time.
        let t0 = if claimed < due { Instant::now() } else { due };
        let result = match tokio::time::timeout(ctx.timeout, send_one(&ctx, &mut sender, i)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Failure::Status(code))) => Err(code.to_string()),
            Ok(Err(Failure::Connect)) => {
                sender = None;
                Err("connect".to_string())
            }
            Ok(Err(Failure::Io)) => {
                sender = None;
                Err("io".to_string())
            }
            Err(_) => {
                // The connection may still carry the unanswered request: start afresh.
                sender = None;
                Err("timeout".to_string())
            }
        };
        let done = Instant::now();
        if due < ctx.measure_from {
            continue;
        }
        out.sent += 1;
        out.last_done = Some(done);
        match result {
            Ok(()) => {
                out.ok += 1;
                let us = done.saturating_duration_since(t0).as_micros();
                out.hist
                    .saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
            }
            Err(kind) => *out.errors.entry(kind).or_default() += 1,
        }
    }
    Ok(out)
}

/// Samples `names` from `{base}/metrics` once a second until `stop`.
async fn watch_metrics(
    base: String,
    authorization: Option<String>,
    names: Vec<String>,
    stop: Arc<AtomicBool>,
) -> Vec<WatchedMetric> {
    let mut out: Vec<WatchedMetric> = names
        .iter()
        .map(|n| WatchedMetric {
            name: n.clone(),
            samples: 0,
            max: None,
            last: None,
        })
        .collect();
    if names.is_empty() {
        return out;
    }
    let client = reqwest::Client::new();
    let url = format!("{base}/metrics");
    loop {
        let mut req = client.get(&url).timeout(Duration::from_secs(2));
        if let Some(a) = &authorization {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        if let Ok(resp) = req.send().await {
            if let Ok(text) = resp.text().await {
                for m in &mut out {
                    if let Some(v) = metric_max(&text, &m.name) {
                        m.samples += 1;
                        m.last = Some(v);
                        m.max = Some(m.max.map_or(v, |x| x.max(v)));
                    }
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        for _ in 0..10 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    out
}

/// The largest value of metric `name` over its label sets in a Prometheus text exposition.
pub(crate) fn metric_max(text: &str, name: &str) -> Option<f64> {
    let mut best: Option<f64> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || !line.starts_with(name) {
            continue;
        }
        let rest = &line[name.len()..];
        let value_part = if rest.starts_with('{') {
            match rest.rfind('}') {
                Some(end) => &rest[end + 1..],
                None => continue,
            }
        } else if rest.starts_with(' ') || rest.starts_with('\t') {
            rest
        } else {
            continue; // a longer metric name with this prefix
        };
        let Some(v) = value_part
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if v.is_nan() {
            continue;
        }
        best = Some(best.map_or(v, |b| b.max(v)));
    }
    best
}

/// Parses `250ms`, `20s`, `1.5s`, `2m`; a bare number is seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 20s, 2m)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        other => return Err(format!("unknown duration unit {other:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn render_run(r: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "target {:.0} requests/s for {:.1} s over {} connections (open loop)",
        r.target_rate, r.duration_s, r.connections
    );
    let errors = if r.errors.is_empty() {
        "0 errors".to_string()
    } else {
        r.errors
            .iter()
            .map(|(k, v)| format!("{v} × {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(s, "requests  {} sent, {} ok, {errors}", r.sent, r.ok);
    let _ = writeln!(s, "achieved  {:.1} requests/s", r.achieved_rate);
    let l = &r.latency_ms;
    let _ = writeln!(
        s,
        "latency   p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (from the intended send time)",
        l.p50, l.p90, l.p99, l.p99_9, l.max
    );
    for m in &r.metrics {
        match (m.max, m.last) {
            (Some(max), Some(last)) => {
                let _ = writeln!(
                    s,
                    "{}  max {max:.3}  last {last:.3}  ({} samples)",
                    m.name, m.samples
                );
            }
            _ => {
                let _ = writeln!(s, "{}  not exposed by the server", m.name);
            }
        }
    }
    s
}

fn render_step(step: &Step) -> String {
    let r = &step.run;
    format!(
        "step {:>7.0}/s  achieved {:>8.1}/s  p50 {:>7.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms  errors {:>4}  {}",
        r.target_rate,
        r.achieved_rate,
        r.latency_ms.p50,
        r.latency_ms.p99,
        r.latency_ms.p99_9,
        r.error_count(),
        if step.passed {
            "pass".to_string()
        } else {
            format!("FAIL ({})", step.reason)
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn metric_max_takes_the_largest_label_set() {
        let text = "# HELP attest_audit_lag_seconds lag\n\
                    # TYPE attest_audit_lag_seconds gauge\n\
                    attest_audit_lag_seconds{consumer=\"fairness\"} 0.25\n\
                    attest_audit_lag_seconds{consumer=\"drift} x\"} 1.5 1700000000\n\
                    attest_audit_lag_seconds_total 99\n\
                    other 7\n";
        assert_eq!(metric_max(text, "attest_audit_lag_seconds"), Some(1.5));
        assert_eq!(metric_max(text, "other"), Some(7.0));
        assert_eq!(metric_max(text, "absent"), None);
    }

    #[test]
    fn target_parses_base_urls() {
        let t = Target::parse("http://127.0.0.1:7878/", Some("k")).unwrap();
        assert_eq!(t.addr, "127.0.0.1:7878");
        assert_eq!(t.decisions_path(), "/v1/decisions");
        assert_eq!(t.authorization.as_deref(), Some("Bearer k"));
        let t = Target::parse("http://localhost/api", None).unwrap();
        assert_eq!(t.addr, "localhost:80");
        assert_eq!(t.decisions_path(), "/api/v1/decisions");
        assert!(Target::parse("https://x", None).is_err());
        assert!(Target::parse("not a url", None).is_err());
    }
}
