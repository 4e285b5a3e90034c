//! The orders stream: alarms on large orders, and a 5-minute average per product sliding
//! every second.
//!
//! ```text
//! cargo run -p attest-stream --example orders
//! ```
//!
//! Seeds 10 minutes of orders (product, amount, placement time) into a temporary SQLite event
//! store, then runs two checkpointed jobs over the store's `order` category:
//! - `order-alarms`: `filter(amount > 10,000)` → an alarm per order (printed);
//! - `order-avg`: `key_by(product)` → `map(amount)` → 5-minute windows hopping every second →
//!   `mean`, final results only, written to the store (streams `orderavg-0`, deterministic
//!   event ids) and sampled on stdout.
//!
//! Both jobs read until caught up and then flush their last windows. Run it twice on the same
//! directory (set `ORDERS_DIR`) and the second run finds its checkpoints and emits nothing
//! new.

use std::sync::Arc;
use std::time::Duration;

use attest_core::{Category, ExpectedVersion, NewEvent, StreamId};
use attest_store::sqlite::SqliteStore;
use attest_store::{DynStore, LogFilter, StoreOptions};
use attest_stream::agg::Mean;
use attest_stream::dsl::Pipeline;
use attest_stream::runtime::{
    json_time_field, CheckpointStore, Emitted, FnSink, Job, JobConfig, RunMode,
    SqliteCheckpointStore, StoreSink, StoreSource,
};
use attest_stream::window::{EmitMode, HoppingWindows, WindowResult};
use attest_stream::{Collector, LateHint, Operator, StreamError, Timestamp};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// An order as stored in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    product: String,
    amount: f64,
    /// Placement time, ms since the epoch (the event time).
    placed_at: Timestamp,
}

/// Hands every record through (the alarm job is stateless: a filter in front of this).
struct PassThrough;

impl Operator for PassThrough {
    type In = Order;
    type Out = Order;
    fn on_record(&mut self, o: Order, _t: Timestamp, out: &mut Collector<Order, Order>) {
        out.emit(o);
    }
    fn on_watermark(&mut self, _w: Timestamp, _out: &mut Collector<Order, Order>) {}
    fn snapshot(&self) -> Result<Vec<u8>, StreamError> {
        Ok(Vec::new())
    }
    fn restore(&mut self, _s: &[u8]) -> Result<(), StreamError> {
        Ok(())
    }
}

impl LateHint for PassThrough {
    fn may_be_late(&self, _time: Timestamp) -> bool {
        false
    }
}

const PRODUCTS: [&str; 4] = ["tea", "coffee", "cocoa", "mate"];
const START: Timestamp = 1_767_225_600_000; // 2026-01-01T00:00:00Z

async fn seed(store: &DynStore) -> Result<usize, Box<dyn std::error::Error>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut n = 0;
    // About 3 orders a second for 10 minutes, up to 2 s out of order.
    for second in 0..600i64 {
        let mut events = Vec::new();
        for _ in 0..rng.gen_range(1..6) {
            let product = PRODUCTS[rng.gen_range(0..PRODUCTS.len())];
            let amount = if rng.gen_bool(0.01) {
                rng.gen_range(10_000.0..50_000.0)
            } else {
                rng.gen_range(5.0..2_000.0)
            };
            let order = Order {
                product: product.to_string(),
                amount: (amount * 100.0_f64).round() / 100.0,
                placed_at: START + second * 1000 - rng.gen_range(0..2000),
            };
            events.push(NewEvent::json("OrderPlaced", &order)?);
        }
        n += events.len();
        store
            .append(
                StreamId::new(format!("order-{}", second / 60))?,
                ExpectedVersion::Any,
                events,
            )
            .await?;
    }
    Ok(n)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let tmp = tempfile::tempdir()?;
    let dir = std::env::var_os("ORDERS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let store: DynStore = SqliteStore::open(dir.join("events.db"), StoreOptions::default())?;
    if store.head_position().await? == 0 {
        let n = seed(&store).await?;
        println!("seeded {n} orders into {}", dir.join("events.db").display());
    }
    let checkpoints: Arc<dyn CheckpointStore> =
        Arc::new(SqliteCheckpointStore::open(dir.join("checkpoints.db")).await?);
    let category = Category::new("order")?;
    let orders = move || LogFilter::Category(category.clone());
    let config = |name: &str| {
        JobConfig::new(name)
            .out_of_orderness(Duration::from_secs(2))
            .mode(RunMode::UntilCaughtUp { flush: true })
    };

    // 1. Alarms: every order over 10,000.
    let alarms = Job::new(
        config("order-alarms"),
        StoreSource::new(store.clone(), orders()),
        json_time_field(|o: &Order| o.placed_at),
        Pipeline::<Order>::new()
            .filter(|o: &Order| o.amount > 10_000.0)
            .then(PassThrough),
        checkpoints.clone(),
        FnSink(|batch: Vec<Emitted<Order>>| {
            for e in batch {
                println!(
                    "ALARM #{:<3} {:>9.2} {:<6} at {} (id {})",
                    e.seq, e.value.amount, e.value.product, e.value.placed_at, e.id
                );
            }
            Ok(())
        }),
    )
    .run()
    .await?;
    println!(
        "alarm job: {} orders read, {} alarms",
        alarms.records, alarms.outputs
    );

    // 2. Five-minute average per product, sliding every second.
    let mut printed = 0usize;
    let averages = Job::new(
        config("order-avg"),
        StoreSource::new(store.clone(), orders()),
        json_time_field(|o: &Order| o.placed_at),
        Pipeline::<Order>::new()
            .key_by(|o: &Order| o.product.clone())
            .map(|o: Order| o.amount)
            .window(HoppingWindows::of(
                Duration::from_secs(300),
                Duration::from_secs(1),
            )?)
            .aggregate(Mean)
            .emit(EmitMode::Final),
        checkpoints.clone(),
        StoreSink::new(store.clone(), "orderavg", "ProductAverageComputed"),
    )
    .run()
    .await?;
    // Sample: the windows ending on each full minute, read back from the output stream.
    let out = store
        .read_stream(
            &StreamId::new("orderavg-0")?,
            attest_store::StreamFrom::Start,
            attest_store::Direction::Forward,
            1_000_000,
        )
        .await
        .unwrap_or_default();
    for e in &out {
        let r: WindowResult<String, f64> = e.decode_json()?;
        if (r.end - START) % 60_000 == 0 && r.end > START && r.end <= START + 600_000 {
            println!(
                "avg {:<6} over [{:>4}s, {:>4}s): {:>8.2}",
                r.key,
                (r.start - START) / 1000,
                (r.end - START) / 1000,
                r.value
            );
            printed += 1;
        }
    }
    println!(
        "average job: {} orders read, {} window results ({} in the store, {} sampled above)",
        averages.records,
        averages.outputs,
        out.len(),
        printed
    );
    Ok(())
}
