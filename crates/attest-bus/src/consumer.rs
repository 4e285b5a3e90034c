//! The consumer runner: fetch, handle, settle — retries with backoff, dead letters, lag.
//!
//! A [`Handler`] answers each message with `Ok`, [`HandlerError::Retryable`],
//! [`HandlerError::Permanent`] or [`HandlerError::Undecodable`]. The [`Consumer`] turns that
//! into broker operations:
//! - `Ok` → ack;
//! - `Retryable` on attempt `n < max_attempts` → nak with the `n`-th delay of the
//!   [`RetryPolicy`] backoff; on the last attempt → dead letter, then term;
//! - `Permanent` / `Undecodable` (poison pill) → dead letter at once, then term;
//! - a message already delivered more than `max_attempts` times (handlers that crashed the
//!   process before giving a verdict) → dead letter without calling the handler.
//!
//! The broker's `max_deliver` is set to `max_attempts + 1`, so nothing is ever retried in a
//! loop: every message ends acknowledged or dead-lettered. Handlers that have side effects
//! should record the message in the same transaction ([`crate::idempotency`]), because
//! delivery is at least once.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde::de::DeserializeOwned;
use tracing::{debug, info_span, warn, Instrument};

use crate::dlq::{dead_letter, DeadLetterConfig, Failure, FailureKind};
use crate::error::{BoxError, Result};
use crate::lag::LagMonitor;
use crate::message::{ConsumerConfig, Delivery, DeliveryInfo, Message, TRACEPARENT_HEADER};
use crate::{DynBroker, PullConsumer};

/// A handler's verdict on a message it could not process.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Might succeed later (a dependency is down, a conflict): retry with backoff.
    #[error("retryable: {0}")]
    Retryable(#[source] BoxError),
    /// Will never succeed (business rule violation): dead-letter at once.
    #[error("permanent: {0}")]
    Permanent(#[source] BoxError),
    /// The message cannot be decoded (poison pill): dead-letter at once.
    #[error("undecodable: {0}")]
    Undecodable(#[source] BoxError),
}

impl HandlerError {
    /// A retryable error.
    pub fn retryable(e: impl Into<BoxError>) -> Self {
        HandlerError::Retryable(e.into())
    }
    /// A permanent error.
    pub fn permanent(e: impl Into<BoxError>) -> Self {
        HandlerError::Permanent(e.into())
    }
    /// An undecodable message.
    pub fn undecodable(e: impl Into<BoxError>) -> Self {
        HandlerError::Undecodable(e.into())
    }
}

/// Processes one message.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles `message`; `info.delivered` is the attempt number (1 = first).
    async fn handle(&self, message: &Message, info: &DeliveryInfo) -> Result<(), HandlerError>;
}

/// A handler from an async closure taking the message and its delivery info by value.
pub struct FnHandler<F>(pub F);

#[async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Message, DeliveryInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    async fn handle(&self, message: &Message, info: &DeliveryInfo) -> Result<(), HandlerError> {
        (self.0)(message.clone(), info.clone()).await
    }
}

/// A handler that decodes the JSON payload into `T` first; a payload that does not decode is
/// [`HandlerError::Undecodable`] (a poison pill) and never reaches the closure.
pub struct JsonHandler<T, F> {
    f: F,
    _t: PhantomData<fn() -> T>,
}

impl<T, F> JsonHandler<T, F> {
    /// Wraps `f(value, message)`.
    pub fn new(f: F) -> Self {
        JsonHandler { f, _t: PhantomData }
    }
}

#[async_trait]
impl<T, F, Fut> Handler for JsonHandler<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(T, Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    async fn handle(&self, message: &Message, _info: &DeliveryInfo) -> Result<(), HandlerError> {
        let value: T =
            serde_json::from_slice(&message.payload).map_err(HandlerError::undecodable)?;
        (self.f)(value, message.clone()).await
    }
}

/// How retryable failures are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before attempt `n + 1` after attempt `n` failed is `backoff[n - 1]` (the last
    /// entry repeats).
    pub backoff: Vec<Duration>,
    /// Attempts before a retryable failure is dead-lettered (at least 1).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
            ],
            max_attempts: 5,
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        if self.backoff.is_empty() {
            return Duration::ZERO;
        }
        let i = (attempt.max(1) as usize - 1).min(self.backoff.len() - 1);
        self.backoff[i]
    }
}

/// Runner settings.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Most messages fetched at once. Default 64.
    pub batch: usize,
    /// How long one fetch waits for messages. Default 1 s.
    pub fetch_wait: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Where dead letters go.
    pub dead_letters: DeadLetterConfig,
    /// How often consumer info is reported to the lag monitor. Default 5 s.
    pub lag_every: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            batch: 64,
            fetch_wait: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            dead_letters: DeadLetterConfig::default(),
            lag_every: Duration::from_secs(5),
        }
    }
}

/// Counters of a runner.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Messages acknowledged after the handler succeeded.
    pub processed: AtomicU64,
    /// Retryable failures nak'ed for a later attempt.
    pub retried: AtomicU64,
    /// Messages dead-lettered.
    pub dead_lettered: AtomicU64,
}

impl ConsumerStats {
    /// (processed, retried, dead-lettered).
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.processed.load(Ordering::Relaxed),
            self.retried.load(Ordering::Relaxed),
            self.dead_lettered.load(Ordering::Relaxed),
        )
    }
}

/// Runs a handler over a durable consumer.
pub struct Consumer {
    broker: DynBroker,
    config: ConsumerConfig,
    handler: Arc<dyn Handler>,
    options: ConsumerOptions,
    lag: Option<Arc<LagMonitor>>,
    stats: Arc<ConsumerStats>,
    first_failures: HashMap<u64, DateTime<Utc>>,
    pull: Option<Box<dyn PullConsumer>>,
    last_lag_report: Option<Instant>,
}

impl Consumer {
    /// A runner of `handler` over the durable consumer `config` (its `max_deliver` is set to
    /// `options.retry.max_attempts + 1`).
    pub fn new(
        broker: DynBroker,
        config: ConsumerConfig,
        handler: impl Handler,
        options: ConsumerOptions,
    ) -> Self {
        let mut config = config;
        let max_attempts = options.retry.max_attempts.max(1);
        config.max_deliver = max_attempts + 1;
        if config.backoff.len() > config.max_deliver as usize {
            config.backoff.truncate(config.max_deliver as usize);
        }
        Consumer {
            broker,
            config,
            handler: Arc::new(handler),
            options,
            lag: None,
            stats: Arc::new(ConsumerStats::default()),
            first_failures: HashMap::new(),
            pull: None,
            last_lag_report: None,
        }
    }

    /// Reports lag to `monitor` (key `stream/consumer`).
    pub fn with_lag_monitor(mut self, monitor: Arc<LagMonitor>) -> Self {
        self.lag = Some(monitor);
        self
    }

    /// The runner's counters (shared; readable while it runs).
    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.stats.clone()
    }

    /// The consumer configuration in force.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    fn lag_key(&self) -> String {
        format!("{}/{}", self.config.stream, self.config.name)
    }

    async fn bind(&mut self) -> Result<()> {
        if self.pull.is_none() {
            self.options
                .dead_letters
                .ensure(self.broker.as_ref())
                .await?;
            self.pull = Some(self.broker.consumer(&self.config).await?);
        }
        Ok(())
    }

    /// Fetches one batch (waiting up to `fetch_wait`) and settles every message of it;
    /// returns how many deliveries were handled.
    pub async fn run_once(&mut self) -> Result<usize> {
        self.bind().await?;
        let Some(pull) = self.pull.as_ref() else {
            return Ok(0);
        };
        let deliveries = pull
            .fetch(self.options.batch.max(1), self.options.fetch_wait)
            .await?;
        let n = deliveries.len();
        for d in deliveries {
            self.process(d).await?;
        }
        self.report_lag(false).await?;
        Ok(n)
    }

    /// Reports the consumer's lag now (or when `lag_every` has passed, unless `force`).
    pub async fn report_lag(&mut self, force: bool) -> Result<()> {
        let Some(monitor) = self.lag.clone() else {
            return Ok(());
        };
        let due = self
            .last_lag_report
            .is_none_or(|t| t.elapsed() >= self.options.lag_every);
        if !force && !due {
            return Ok(());
        }
        self.bind().await?;
        let Some(pull) = self.pull.as_ref() else {
            return Ok(());
        };
        let info = pull.info().await?;
        monitor.record_info(&self.lag_key(), &info, Utc::now());
        self.last_lag_report = Some(Instant::now());
        Ok(())
    }

    /// Runs until `shutdown` completes; returns the counters.
    ///
    /// Broker errors (an outage, a restart) do not stop the runner: it logs them and tries
    /// again after a delay that doubles from 100 ms up to 5 s, resetting after a success.
    /// Unsettled deliveries of a failed round come back after their ack wait.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<Arc<ConsumerStats>> {
        tokio::pin!(shutdown);
        let mut pause = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                r = self.run_once() => match r {
                    Ok(_) => pause = Duration::from_millis(100),
                    Err(e) => {
                        warn!(error = %e, retry_in = ?pause, "consumer round failed");
                        tokio::select! {
                            _ = &mut shutdown => break,
                            _ = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                },
            }
        }
        Ok(self.stats)
    }

    /// Runs until no message arrives during one `fetch_wait`; returns how many deliveries were
    /// handled. Handy for batch jobs and tests.
    pub async fn drain(&mut self) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.run_once().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    async fn process(&mut self, d: Delivery) -> Result<()> {
        let attempt = d.info.delivered;
        let seq = d.info.stream_sequence;
        let max_attempts = self.options.retry.max_attempts.max(1);
        let span = info_span!("consume", messaging.destination = %d.message.subject,
            messaging.consumer = %d.info.consumer, sequence = seq, attempt,
            traceparent = d.message.header(TRACEPARENT_HEADER).unwrap_or(""));
        async {
            if attempt > max_attempts {
                let now = Utc::now();
                let failure = Failure {
                    kind: FailureKind::MaxDeliveries,
                    error: format!(
                        "delivered {attempt} times without a verdict (handler crashed or timed out)"
                    ),
                    attempts: attempt - 1,
                    first_failure: self.first_failures.remove(&seq).unwrap_or(now),
                    last_failure: now,
                };
                return self.give_up(&d, failure).await;
            }
            let verdict = AssertUnwindSafe(self.handler.handle(&d.message, &d.info))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(HandlerError::retryable("handler panicked")));
            match verdict {
                Ok(()) => {
                    d.ack().await?;
                    self.first_failures.remove(&seq);
                    self.stats.processed.fetch_add(1, Ordering::Relaxed);
                    debug!("processed");
                    Ok(())
                }
                Err(e) => {
                    let now = Utc::now();
                    let first = *self.first_failures.entry(seq).or_insert(now);
                    let (kind, retry) = match &e {
                        HandlerError::Retryable(_) => {
                            (FailureKind::RetriesExhausted, attempt < max_attempts)
                        }
                        HandlerError::Permanent(_) => (FailureKind::Permanent, false),
                        HandlerError::Undecodable(_) => (FailureKind::Undecodable, false),
                    };
                    if retry {
                        let delay = self.options.retry.delay_after(attempt);
                        warn!(error = %e, ?delay, "retryable failure; will retry");
                        d.nak(Some(delay)).await?;
                        self.stats.retried.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    let failure = Failure {
                        kind,
                        error: e.to_string(),
                        attempts: attempt,
                        first_failure: first,
                        last_failure: now,
                    };
                    self.first_failures.remove(&seq);
                    self.give_up(&d, failure).await
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn give_up(&self, d: &Delivery, failure: Failure) -> Result<()> {
        warn!(kind = failure.kind.as_str(), error = %failure.error, attempts = failure.attempts,
            "dead-lettering message");
        dead_letter(
            self.broker.as_ref(),
            &self.options.dead_letters,
            d,
            &failure,
        )
        .await?;
        d.term().await?;
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_follow_the_schedule() {
        let p = RetryPolicy {
            backoff: vec![Duration::from_millis(10), Duration::from_millis(40)],
            max_attempts: 4,
        };
        assert_eq!(p.delay_after(1), Duration::from_millis(10));
        assert_eq!(p.delay_after(2), Duration::from_millis(40));
        assert_eq!(p.delay_after(3), Duration::from_millis(40));
        let none = RetryPolicy {
            backoff: vec![],
            max_attempts: 2,
        };
        assert_eq!(none.delay_after(1), Duration::ZERO);
    }
}
