//! TreeSHAP on the XGBoost Adult model, first 1000 test rows: fast algorithm on 1 and 2
//! threads, the classic algorithm on 1 thread (in-run baseline), and plain batch prediction.
//!
//! Run: `cargo bench -p attest-ai --bench treeshap -- --warm-up-time 1 --measurement-time 3`

use attest_ai::explain::tree::{Algorithm, TreeExplainer};
use attest_ai::model::xgboost;
use attest_ai::{Matrix, Model, Output};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");
const ROWS: usize = 1000;

fn x_test_rows(n: usize) -> Matrix {
    let path = format!("{DATA}/reference/X_test_encoded.csv");
    let mut rdr = csv::Reader::from_path(&path).expect("X_test_encoded.csv is readable");
    let header: Vec<String> = rdr
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| header[i] != "adult_row")
        .collect();
    let mut data = Vec::new();
    for rec in rdr.records().take(n) {
        let rec = rec.expect("csv record");
        for &i in &keep {
            data.push(rec[i].parse::<f64>().expect("numeric cell"));
        }
    }
    Matrix::new(data, n, keep.len()).expect("matrix shape")
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

fn bench(c: &mut Criterion) {
    let model = xgboost::load(format!("{DATA}/reference/xgb_adult.json")).expect("model loads");
    let x = x_test_rows(ROWS);
    let fast = TreeExplainer::new(&model).expect("fast explainer");
    let classic =
        TreeExplainer::with_algorithm(&model, Algorithm::Classic).expect("classic explainer");
    let (p1, p2) = (pool(1), pool(2));

    let mut g = c.benchmark_group("treeshap_xgb_1000");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("fast_1_thread", |b| {
        b.iter(|| p1.install(|| fast.explain(&x).expect("explain")))
    });
    g.bench_function("fast_explain_row_loop_1_thread", |b| {
        b.iter(|| {
            x.rows()
                .map(|r| fast.explain_row(r).expect("explain"))
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("fast_2_threads", |b| {
        b.iter(|| p2.install(|| fast.explain(&x).expect("explain")))
    });
    g.bench_function("classic_1_thread", |b| {
        b.iter(|| p1.install(|| classic.explain(&x).expect("explain")))
    });
    g.finish();

    let mut g = c.benchmark_group("treeshap_setup");
    g.sample_size(20);
    g.bench_function("fast_explainer_construction", |b| {
        b.iter(|| TreeExplainer::new(&model).expect("explainer"))
    });
    g.finish();

    let mut g = c.benchmark_group("predict_xgb_1000");
    g.sample_size(20);
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("margin_1_thread", |b| {
        b.iter(|| p1.install(|| model.predict(&x, Output::Margin).expect("predict")))
    });
    g.bench_function("margin_2_threads", |b| {
        b.iter(|| p2.install(|| model.predict(&x, Output::Margin).expect("predict")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
