//! Fairness report on 1,000,000 seeded synthetic rows with 2 sensitive features
//! (intersections), one core; and the drift report on the Adult train vs test matrices.
//!
//! Run: `cargo bench -p attest-ai --bench fairness -- --warm-up-time 1 --measurement-time 3`
//! Baseline: fairlearn MetricFrame (selection rate, TPR, FPR; difference + ratio) on 1M rows
//! with sex x race, from /work/shared/bench/peer_timings.py.

use attest_ai::drift::{drift_report, ColumnSpec};
use attest_ai::fairness::{
    FairnessConfig, FairnessInput, FairnessReport, GroupCounts, PrivilegedGroups,
};
use attest_ai::Matrix;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");
const ROWS: usize = 1_000_000;

struct Synthetic {
    y_true: Vec<u8>,
    y_pred: Vec<u8>,
    sex: Vec<&'static str>,
    race: Vec<&'static str>,
}

/// Adult-like marginals: 2/3 male, race 86/9/3/1/1 %, base rate 24 %, an imperfect classifier
/// whose selection rate depends on sex.
fn synthetic(seed: u64) -> Synthetic {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let races = [
        "White",
        "Black",
        "Asian-Pac-Islander",
        "Amer-Indian-Eskimo",
        "Other",
    ];
    let cum = [0.86, 0.95, 0.98, 0.99, 1.0];
    let mut s = Synthetic {
        y_true: Vec::with_capacity(ROWS),
        y_pred: Vec::with_capacity(ROWS),
        sex: Vec::with_capacity(ROWS),
        race: Vec::with_capacity(ROWS),
    };
    for _ in 0..ROWS {
        let male = rng.gen_bool(0.67);
        let u: f64 = rng.gen();
        let race = races[cum.iter().position(|c| u < *c).unwrap_or(4)];
        let y = rng.gen_bool(if male { 0.31 } else { 0.11 });
        let p = if y {
            rng.gen_bool(0.66)
        } else {
            rng.gen_bool(if male { 0.09 } else { 0.03 })
        };
        s.y_true.push(u8::from(y));
        s.y_pred.push(u8::from(p));
        s.sex.push(if male { "Male" } else { "Female" });
        s.race.push(race);
    }
    s
}

fn load(name: &str) -> Matrix {
    let mut rdr =
        csv::Reader::from_path(format!("{DATA}/reference/{name}")).expect("reference csv");
    let headers: Vec<String> = rdr
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    let keep: Vec<usize> = (0..headers.len())
        .filter(|i| headers[*i] != "adult_row")
        .collect();
    let rows: Vec<Vec<f64>> = rdr
        .records()
        .map(|r| {
            let r = r.expect("record");
            keep.iter()
                .map(|i| r[*i].parse::<f64>().expect("number"))
                .collect()
        })
        .collect();
    Matrix::from_rows(&rows).expect("matrix")
}

fn bench(c: &mut Criterion) {
    let s = synthetic(42);
    let input = FairnessInput::new(&s.y_true, &s.y_pred)
        .sensitive("sex", &s.sex)
        .sensitive("race", &s.race);
    let config = FairnessConfig {
        privileged: Some(PrivilegedGroups::single("sex", "Male")),
        bootstrap: None,
    };
    let mut g = c.benchmark_group("fairness_1M_rows_sex_x_race");
    g.sample_size(10);
    g.bench_function("report_counts_and_all_disparities", |b| {
        b.iter(|| {
            let r = FairnessReport::compute(black_box(&input), &config).expect("report");
            assert_eq!(r.by_group.len(), 10);
            r
        })
    });
    g.bench_function("group_counts_only", |b| {
        b.iter(|| GroupCounts::from_input(black_box(&input)).expect("counts"))
    });
    g.finish();

    let train = load("X_train_encoded.csv");
    let test = load("X_test_encoded.csv");
    let categorical = [
        "workclass",
        "education",
        "marital_status",
        "occupation",
        "relationship",
        "race",
        "sex",
        "native_country",
    ];
    let names = [
        "age",
        "workclass",
        "education",
        "education_num",
        "marital_status",
        "occupation",
        "relationship",
        "race",
        "sex",
        "capital_gain",
        "capital_loss",
        "hours_per_week",
        "native_country",
    ];
    let specs: Vec<ColumnSpec> = names
        .iter()
        .map(|n| {
            if categorical.contains(n) {
                ColumnSpec::categorical(n)
            } else {
                ColumnSpec::numeric(n)
            }
        })
        .collect();
    let mut g = c.benchmark_group("drift_adult_train_vs_test");
    g.sample_size(10);
    g.bench_function("drift_report_13_columns", |b| {
        b.iter(|| drift_report(black_box(&train), black_box(&test), &specs).expect("drift"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
