//! KernelSHAP and LIME on the reference XGBoost model (UCI Adult, 13 features).
//!
//! - `kernel_shap/<path>/<threads>t`: 10 test rows, the 100-row reference background,
//!   nsamples auto (2074), probability output. `generic` (hybrid rows through
//!   `Model::predict`) is the in-run baseline for the tree fast paths `tree_table` and
//!   `tree_bitset`.
//! - `lime/<threads>t`: 10 test rows, 5,000 samples, 10 features, quartile discretiser.
//!
//! Peers (reference/timings.md, same kind of 2-core VM): shap KernelExplainer 201.1 ms/row
//! (1 thread) / 121.2 ms/row (2 threads); lime 13.9 / 11.7 ms/row.

use std::collections::BTreeMap;
use std::time::Duration;

use attest_ai::explain::kernel::{Background, KernelConfig, KernelExplainer, Strategy};
use attest_ai::explain::lime::{LimeConfig, LimeExplainer};
use attest_ai::Matrix;
use criterion::{criterion_group, criterion_main, Criterion};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

fn read_csv(path: &str, cols: usize, max_rows: usize) -> Matrix {
    let mut rdr = csv::Reader::from_path(path).expect("reference CSV");
    let mut data = Vec::new();
    let mut n = 0;
    for rec in rdr.records().take(max_rows) {
        let rec = rec.expect("CSV record");
        data.extend(
            rec.iter()
                .take(cols)
                .map(|v| v.parse::<f64>().expect("number")),
        );
        n += 1;
    }
    Matrix::new(data, n, cols).expect("matrix")
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

fn kernel(c: &mut Criterion) {
    let model =
        attest_ai::model::xgboost::load(format!("{DATA}/reference/xgb_adult.json")).expect("model");
    let x = read_csv(&format!("{DATA}/reference/X_test_encoded.csv"), 13, 10);
    let bg = Background::new(read_csv(
        &format!("{DATA}/reference/kernel_background_100.csv"),
        13,
        1000,
    ))
    .expect("background");
    let mut g = c.benchmark_group("kernel_shap");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, strategy) in [
        ("tree_table", Strategy::TreeTable),
        ("tree_bitset", Strategy::TreeBitset),
        ("generic", Strategy::Generic),
    ] {
        let cfg = KernelConfig {
            strategy,
            ..KernelConfig::default()
        };
        let exp = KernelExplainer::new(&model, bg.clone(), cfg).expect("explainer");
        for threads in [1, 2] {
            let p = pool(threads);
            g.bench_function(format!("{name}/{threads}t"), |b| {
                b.iter(|| p.install(|| exp.explain(&x).expect("explain")))
            });
        }
    }
    g.finish();
}

fn lime(c: &mut Criterion) {
    let model =
        attest_ai::model::xgboost::load(format!("{DATA}/reference/xgb_adult.json")).expect("model");
    let train = read_csv(
        &format!("{DATA}/reference/X_train_encoded.csv"),
        13,
        usize::MAX,
    );
    let x = read_csv(&format!("{DATA}/reference/X_test_encoded.csv"), 13, 10);
    // Categorical columns of the Adult encoding (reference/feature_encoding.json).
    let categorical = [1usize, 2, 4, 5, 6, 7, 8, 12];
    let cfg = LimeConfig {
        categorical_features: categorical.to_vec(),
        categorical_names: BTreeMap::new(),
        ..LimeConfig::default()
    };
    let exp = LimeExplainer::new(&model, &train, cfg).expect("explainer");
    let mut g = c.benchmark_group("lime");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for threads in [1, 2] {
        let p = pool(threads);
        g.bench_function(format!("{threads}t"), |b| {
            b.iter(|| p.install(|| exp.explain(&x).expect("explain")))
        });
    }
    g.finish();
}

criterion_group!(benches, kernel, lime);
criterion_main!(benches);
