//! `attest explain`: per-row attributions (TreeSHAP, KernelSHAP, LIME, linear SHAP) for a model
//! file and a CSV of rows, with a global-importance summary and an optional HTML report.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use attest_ai::data::Table;
use attest_ai::explain::kernel::{Background, KernelConfig, KernelExplainer};
use attest_ai::explain::lime::{LimeConfig, LimeExplainer, LimeExplanation};
use attest_ai::explain::linear::LinearExplainer;
use attest_ai::explain::tree::TreeExplainer;
use attest_ai::model::{lightgbm, xgboost, LinearModel, TreeEnsemble};
use attest_ai::report::{GlobalImportance, HtmlReport, Waterfall};
use attest_ai::{Explanation, Matrix, Model, Output};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::GlobalArgs;

/// Rows sampled from the data for the default KernelSHAP / LIME background.
const DEFAULT_BACKGROUND_ROWS: usize = 100;

/// Most bars drawn in the HTML waterfall before the rest are pooled into one.
const WATERFALL_BARS: usize = 12;

/// Explain a model's predictions, row by row.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// The model file: XGBoost JSON, LightGBM text, Attest linear JSON or a scikit-learn
    /// logistic-regression export (detected from the content).
    #[arg(long)]
    pub model: PathBuf,
    /// Force the model format instead of detecting it.
    #[arg(long, value_enum)]
    pub model_type: Option<ModelType>,
    /// Feature encoding (`feature_encoding.json`) for a scikit-learn export; default: the file
    /// of that name beside the model.
    #[arg(long)]
    pub encoding: Option<PathBuf>,
    /// CSV of rows to explain (header row; the model's feature columns, others are ignored).
    #[arg(long)]
    pub data: PathBuf,
    /// Attribution method (default: tree for tree models, linear for linear ones).
    #[arg(long, value_enum)]
    pub method: Option<ExplainMethod>,
    /// Features shown per row.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Background CSV for kernel / lime / linear (default: a seeded sample of 100 data rows
    /// for kernel and lime, every data row for linear).
    #[arg(long)]
    pub background: Option<PathBuf>,
    /// Rows to explain, 0-based: `A..B` (B excluded), `A..=B`, `A..`, `..B` or `N`.
    #[arg(long, conflicts_with = "limit")]
    pub rows: Option<String>,
    /// Explain only the first N rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output space for kernel / lime (tree and linear SHAP are in margin space).
    #[arg(long, value_enum)]
    pub output: Option<OutputSpace>,
    /// KernelSHAP coalitions per row (default: shap's 2M + 2048) or LIME perturbations per
    /// row (default 5000).
    #[arg(long)]
    pub nsamples: Option<usize>,
    /// Seed of the background sample and of the kernel / lime sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Columns LIME treats as categorical codes (not binned), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub categorical: Vec<String>,
    /// Write the self-contained HTML report (global importance + one waterfall) here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Data row (0-based, among the explained rows) drawn as the waterfall (default: the first
    /// explained row).
    #[arg(long)]
    pub waterfall_row: Option<usize>,
}

/// Supported model formats.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// XGBoost `save_model` JSON.
    Xgboost,
    /// LightGBM `save_model` text.
    Lightgbm,
    /// Attest's linear/logistic JSON (`feature_names`, `coefficients`, `intercept`, `link`).
    Linear,
    /// scikit-learn LogisticRegression export with a feature encoding.
    SklearnLogreg,
}

impl ModelType {
    fn name(self) -> &'static str {
        match self {
            ModelType::Xgboost => "xgboost",
            ModelType::Lightgbm => "lightgbm",
            ModelType::Linear => "linear",
            ModelType::SklearnLogreg => "sklearn-logreg",
        }
    }
}

/// Attribution methods.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExplainMethod {
    /// Path-dependent TreeSHAP (tree models, margin space).
    Tree,
    /// KernelSHAP over a background (any model).
    Kernel,
    /// LIME tabular surrogate (any model; not additive).
    Lime,
    /// Exact linear SHAP (linear models, margin space).
    Linear,
}

impl ExplainMethod {
    fn name(self) -> &'static str {
        match self {
            ExplainMethod::Tree => "tree",
            ExplainMethod::Kernel => "kernel",
            ExplainMethod::Lime => "lime",
            ExplainMethod::Linear => "linear",
        }
    }

    /// Whether `base + Σ values == prediction` must hold.
    fn additive(self) -> bool {
        !matches!(self, ExplainMethod::Lime)
    }
}

/// Output spaces.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSpace {
    /// Raw score (log-odds for classifiers).
    Margin,
    /// After the link (probability for classifiers).
    Probability,
}

impl From<OutputSpace> for Output {
    fn from(o: OutputSpace) -> Self {
        match o {
            OutputSpace::Margin => Output::Margin,
            OutputSpace::Probability => Output::Probability,
        }
    }
}

fn output_name(o: Output) -> &'static str {
    match o {
        Output::Margin => "margin",
        Output::Probability => "probability",
    }
}

/// A loaded model of either family.
enum LoadedModel {
    Tree(TreeEnsemble),
    Linear(LinearModel),
}

impl LoadedModel {
    fn as_model(&self) -> &dyn Model {
        match self {
            LoadedModel::Tree(t) => t,
            LoadedModel::Linear(l) => l,
        }
    }
}

/// Guesses the format of a model file from its content.
fn detect_model_type(path: &Path, text: &str) -> anyhow::Result<ModelType> {
    let trimmed = text.trim_start();
    if trimmed.starts_with("tree\n") || trimmed.starts_with("tree\r\n") || trimmed == "tree" {
        return Ok(ModelType::Lightgbm);
    }
    let v: serde_json::Value = match serde_json::from_str(trimmed) {
        Ok(v) => v,
        Err(e) => bail!(
            "unsupported model file {}: neither JSON ({e}) nor a LightGBM text model \
             (first line \"tree\"); supported: XGBoost JSON, LightGBM text, Attest linear \
             JSON, scikit-learn logistic-regression export",
            path.display()
        ),
    };
    if v.get("learner").is_some() {
        Ok(ModelType::Xgboost)
    } else if v.get("feature_names_out").is_some() && v.get("coef").is_some() {
        Ok(ModelType::SklearnLogreg)
    } else if v.get("feature_names").is_some() && v.get("coefficients").is_some() {
        Ok(ModelType::Linear)
    } else {
        let keys = v
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "not a JSON object".to_string());
        bail!(
            "unsupported model file {}: JSON without \"learner\" (XGBoost), \
             \"feature_names_out\"+\"coef\" (scikit-learn) or \"feature_names\"+\"coefficients\" \
             (Attest linear); top-level keys: {keys}",
            path.display()
        )
    }
}

fn load_model(args: &ExplainArgs) -> anyhow::Result<(LoadedModel, ModelType)> {
    let path = &args.model;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading model file {}", path.display()))?;
    let kind = match args.model_type {
        Some(k) => k,
        None => detect_model_type(path, &text)?,
    };
    let source = path.display().to_string();
    let model = match kind {
        ModelType::Xgboost => LoadedModel::Tree(xgboost::parse(&text, &source, None)?),
        ModelType::Lightgbm => LoadedModel::Tree(lightgbm::parse(&text, &source)?),
        ModelType::Linear => LoadedModel::Linear(LinearModel::from_json_str(&text, &source)?),
        ModelType::SklearnLogreg => {
            let enc = match &args.encoding {
                Some(e) => e.clone(),
                None => {
                    let beside = path
                        .parent()
                        .unwrap_or_else(|| Path::new("."))
                        .join("feature_encoding.json");
                    if !beside.exists() {
                        bail!(
                            "the scikit-learn export {} needs its feature encoding: pass \
                             --encoding (no feature_encoding.json beside the model)",
                            path.display()
                        );
                    }
                    beside
                }
            };
            let enc_text = std::fs::read_to_string(&enc)
                .with_context(|| format!("reading feature encoding {}", enc.display()))?;
            LoadedModel::Linear(LinearModel::from_sklearn_str(
                &text,
                &source,
                &enc_text,
                &enc.display().to_string(),
            )?)
        }
    };
    Ok((model, kind))
}

/// Parses `--rows` against `n` data rows into a half-open range.
fn parse_rows(spec: &str, n: usize) -> anyhow::Result<(usize, usize)> {
    let num = |s: &str| -> anyhow::Result<usize> {
        s.trim()
            .parse::<usize>()
            .with_context(|| format!("--rows {spec:?}: {s:?} is not a row number"))
    };
    let (start, end) = if let Some((a, b)) = spec.split_once("..=") {
        let a = if a.trim().is_empty() { 0 } else { num(a)? };
        (a, num(b)?.saturating_add(1))
    } else if let Some((a, b)) = spec.split_once("..") {
        let a = if a.trim().is_empty() { 0 } else { num(a)? };
        let b = if b.trim().is_empty() { n } else { num(b)? };
        (a, b)
    } else {
        let a = num(spec)?;
        (a, a.saturating_add(1))
    };
    if start >= end {
        bail!("--rows {spec:?} selects no rows");
    }
    if end > n {
        bail!("--rows {spec:?} goes past the end of the data ({n} rows, 0..{n})");
    }
    Ok((start, end))
}

/// Where the background came from, for the output.
struct BackgroundInfo {
    description: String,
    rows: usize,
}

/// The explainer in use.
enum Explainer<'a> {
    Tree(TreeExplainer<'a>),
    Kernel(KernelExplainer<'a>),
    Lime(LimeExplainer<'a>),
    Linear(LinearExplainer<'a>),
}

/// One explained row.
struct RowResult {
    row: usize,
    explanation: Explanation,
    lime: Option<LimeExplanation>,
}

impl Explainer<'_> {
    /// Rows per progress-bar step (each chunk is explained in parallel).
    fn chunk(&self) -> usize {
        match self {
            Explainer::Tree(_) | Explainer::Linear(_) => 512,
            Explainer::Kernel(_) | Explainer::Lime(_) => 16,
        }
    }

    fn explain(&self, x: &Matrix) -> anyhow::Result<(Vec<Explanation>, Vec<LimeExplanation>)> {
        Ok(match self {
            Explainer::Tree(e) => (e.explain(x)?, Vec::new()),
            Explainer::Kernel(e) => (e.explain(x)?, Vec::new()),
            Explainer::Linear(e) => (e.explain(x)?, Vec::new()),
            Explainer::Lime(e) => {
                let lime = e.explain(x)?;
                let n = x.n_cols();
                (lime.iter().map(|l| l.to_explanation(n)).collect(), lime)
            }
        })
    }
}

/// Additivity tolerance: absolute 1e-6, relative to the prediction's size for large outputs.
fn tolerance(prediction: f64) -> f64 {
    1e-6 * prediction.abs().max(1.0)
}

/// Rewrites an error's row index (relative to a chunk) into the data row.
fn shift_row(e: attest_ai::AiError, offset: usize) -> attest_ai::AiError {
    use attest_ai::AiError;
    match e {
        AiError::NonFinite { column, row, value } => AiError::NonFinite {
            column,
            row: row + offset,
            value,
        },
        AiError::InvalidValue {
            column,
            row,
            value,
            reason,
        } => AiError::InvalidValue {
            column,
            row: row + offset,
            value,
            reason,
        },
        other => other,
    }
}

/// Runs `attest explain`.
pub async fn run(args: ExplainArgs, g: &GlobalArgs) -> anyhow::Result<()> {
    let (model, kind) = load_model(&args)?;
    let names: Vec<String> = model.as_model().feature_names().to_vec();
    let method = match (args.method, &model) {
        (Some(m), _) => m,
        (None, LoadedModel::Tree(_)) => ExplainMethod::Tree,
        (None, LoadedModel::Linear(_)) => ExplainMethod::Linear,
    };
    if args.top == 0 {
        bail!("--top must be at least 1");
    }

    let table = Table::read_csv(&args.data)?;
    if table.is_empty() {
        bail!("no data rows in {}", args.data.display());
    }
    let x_all = table
        .matrix(&names)
        .with_context(|| format!("reading the model's features from {}", args.data.display()))?;
    let (start, end) = match (&args.rows, args.limit) {
        (Some(spec), _) => parse_rows(spec, x_all.n_rows())?,
        (None, Some(0)) => bail!("--limit must be at least 1"),
        (None, Some(l)) => (0, l.min(x_all.n_rows())),
        (None, None) => (0, x_all.n_rows()),
    };
    let x = x_all.slice_rows(start, end);

    let output = match (method, args.output) {
        (ExplainMethod::Tree | ExplainMethod::Linear, Some(OutputSpace::Probability)) => bail!(
            "--method {} explains the margin (log-odds); use --method kernel or lime for \
             --output probability",
            method.name()
        ),
        (ExplainMethod::Tree | ExplainMethod::Linear, _) => Output::Margin,
        (_, Some(o)) => o.into(),
        (_, None) => Output::Probability,
    };

    let background_matrix = |default_sample: bool| -> anyhow::Result<(Matrix, BackgroundInfo)> {
        match &args.background {
            Some(p) => {
                let t = Table::read_csv(p)?;
                if t.is_empty() {
                    bail!("no rows in background file {}", p.display());
                }
                let m = t
                    .matrix(&names)
                    .with_context(|| format!("reading background {}", p.display()))?;
                let info = BackgroundInfo {
                    description: format!("{} ({} rows)", p.display(), m.n_rows()),
                    rows: m.n_rows(),
                };
                Ok((m, info))
            }
            None if default_sample => {
                let b = Background::sample(&x_all, DEFAULT_BACKGROUND_ROWS, args.seed)?;
                let rows = b.n_rows();
                let info = BackgroundInfo {
                    description: format!(
                        "seeded sample of {rows} rows of {} (seed {}; pass --background to \
                         choose)",
                        args.data.display(),
                        args.seed
                    ),
                    rows,
                };
                Ok((b.data().clone(), info))
            }
            None => {
                let info = BackgroundInfo {
                    description: format!(
                        "all {} rows of {} (pass --background to choose)",
                        x_all.n_rows(),
                        args.data.display()
                    ),
                    rows: x_all.n_rows(),
                };
                Ok((x_all.clone(), info))
            }
        }
    };

    let mut background_info = None;
    let explainer = match method {
        ExplainMethod::Tree => match &model {
            LoadedModel::Tree(t) => Explainer::Tree(TreeExplainer::new(t)?),
            LoadedModel::Linear(_) => bail!(
                "--method tree needs a tree model (XGBoost or LightGBM), {} is a {} model; \
                 use --method linear, kernel or lime",
                args.model.display(),
                kind.name()
            ),
        },
        ExplainMethod::Linear => match &model {
            LoadedModel::Linear(l) => {
                let (bg, info) = background_matrix(false)?;
                background_info = Some(info);
                Explainer::Linear(LinearExplainer::new(l, &bg)?)
            }
            LoadedModel::Tree(_) => bail!(
                "--method linear needs a linear model, {} is a {} model; use --method tree, \
                 kernel or lime",
                args.model.display(),
                kind.name()
            ),
        },
        ExplainMethod::Kernel => {
            let (bg, info) = background_matrix(true)?;
            background_info = Some(info);
            let config = KernelConfig {
                nsamples: args.nsamples,
                output,
                seed: args.seed,
                ..KernelConfig::default()
            };
            Explainer::Kernel(KernelExplainer::new(
                model.as_model(),
                Background::new(bg)?,
                config,
            )?)
        }
        ExplainMethod::Lime => {
            let (bg, info) = background_matrix(true)?;
            background_info = Some(info);
            let categorical_features = args
                .categorical
                .iter()
                .map(|c| {
                    names.iter().position(|n| n == c).with_context(|| {
                        format!(
                            "--categorical {c:?} is not a model feature ({})",
                            names.join(", ")
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let defaults = LimeConfig::default();
            let config = LimeConfig {
                num_samples: args.nsamples.unwrap_or(defaults.num_samples),
                num_features: defaults.num_features.min(names.len()).max(1),
                categorical_features,
                output,
                seed: args.seed,
                ..defaults
            };
            Explainer::Lime(LimeExplainer::new(model.as_model(), &bg, config)?)
        }
    };
    tracing::info!(
        model = %args.model.display(),
        kind = kind.name(),
        method = method.name(),
        rows = x.n_rows(),
        "explaining"
    );

    let progress = if g.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new(x.n_rows() as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} explaining [{bar:40}] {pos}/{len} rows ({elapsed}, eta {eta})",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb
    };

    let mut results: Vec<RowResult> = Vec::with_capacity(x.n_rows());
    let chunk = explainer.chunk();
    let mut from = 0;
    while from < x.n_rows() {
        let to = (from + chunk).min(x.n_rows());
        let part = x.slice_rows(from, to);
        let (exps, limes) =
            explainer
                .explain(&part)
                .map_err(|e| match e.downcast::<attest_ai::AiError>() {
                    Ok(ai) => anyhow::Error::new(shift_row(ai, start + from)),
                    Err(other) => other,
                })?;
        let mut limes = limes.into_iter();
        for (i, e) in exps.into_iter().enumerate() {
            let row = start + from + i;
            if method.additive() {
                e.check_additivity(row, tolerance(e.prediction))
                    .with_context(|| format!("{} attributions of data row {row}", method.name()))?;
            }
            results.push(RowResult {
                row,
                explanation: e,
                lime: limes.next(),
            });
        }
        progress.inc((to - from) as u64);
        from = to;
    }
    progress.finish_and_clear();

    let attributions: Vec<Vec<f64>> = results
        .iter()
        .map(|r| r.explanation.values.clone())
        .collect();
    let measure = match method {
        ExplainMethod::Lime => "mean |LIME weight|",
        _ => "mean |SHAP|",
    };
    let importance = GlobalImportance::from_attributions(
        &format!("Global importance ({measure} over {} rows)", results.len()),
        &names,
        &attributions,
    )?;
    let mut ranked: Vec<(String, f64)> = importance.features.clone();
    ranked.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));

    let html_written = match &args.html {
        Some(path) => {
            write_html(
                path,
                &args,
                kind,
                method,
                output,
                &names,
                &x,
                start,
                &results,
                &importance,
                background_info.as_ref(),
            )?;
            Some(path.display().to_string())
        }
        None => None,
    };

    let out = &mut std::io::stdout().lock();
    if g.json {
        for r in &results {
            let e = &r.explanation;
            let xrow = x.row(r.row - start);
            let top = e.top_k(args.top, &names, xrow);
            let mut v = json!({
                "type": "row",
                "row": r.row,
                "method": method.name(),
                "output": output_name(e.output),
                "prediction": e.prediction,
                "base_value": e.base_value,
                "values": e.values,
                "top": top,
            });
            if let Some(l) = &r.lime {
                v["lime"] = json!({
                    "intercept": l.intercept,
                    "local_prediction": l.local_prediction,
                    "score": l.score,
                    "terms": l.terms,
                });
            }
            writeln!(out, "{v}")?;
        }
        let summary = json!({
            "type": "summary",
            "model": args.model.display().to_string(),
            "model_type": kind.name(),
            "method": method.name(),
            "output": output_name(output),
            "additive": method.additive(),
            "rows": results.len(),
            "first_row": start,
            "features": names,
            "global_importance": ranked
                .iter()
                .map(|(f, v)| json!({ "feature": f, "mean_abs": v }))
                .collect::<Vec<_>>(),
            "background": background_info
                .as_ref()
                .map(|b| json!({ "source": b.description, "rows": b.rows })),
            "html": html_written,
        });
        writeln!(out, "{summary}")?;
    } else {
        writeln!(
            out,
            "{} model {} ({} features), method {}, {} space, rows {}..{} of {}",
            kind.name(),
            args.model.display(),
            names.len(),
            method.name(),
            output_name(output),
            start,
            end,
            args.data.display()
        )?;
        if let Some(b) = &background_info {
            writeln!(out, "background: {}", b.description)?;
        }
        if method == ExplainMethod::Lime {
            writeln!(
                out,
                "note: LIME weights come from a local surrogate; they do not add up to the \
                 prediction (base value = surrogate intercept)"
            )?;
        }
        let width = names.iter().map(String::len).max().unwrap_or(7).max(7);
        for r in &results {
            let e = &r.explanation;
            let xrow = x.row(r.row - start);
            writeln!(out)?;
            write!(
                out,
                "row {}: prediction {:.6}, base value {:.6}",
                r.row, e.prediction, e.base_value
            )?;
            if let Some(l) = &r.lime {
                write!(
                    out,
                    ", surrogate prediction {:.6} (R² {:.3})",
                    l.local_prediction, l.score
                )?;
            }
            writeln!(out)?;
            writeln!(
                out,
                "  {:<width$}  {:>12}  {:>13}  direction",
                "feature", "value", "contribution"
            )?;
            for c in e.top_k(args.top, &names, xrow) {
                let dir = match c.direction {
                    attest_ai::Direction::Increases => "increases",
                    attest_ai::Direction::Decreases => "decreases",
                };
                writeln!(
                    out,
                    "  {:<width$}  {:>12}  {:>+13.6}  {dir}",
                    c.name,
                    fmt_value(c.value),
                    c.contribution
                )?;
            }
        }
        writeln!(out)?;
        writeln!(
            out,
            "global importance ({measure} over {} rows)",
            results.len()
        )?;
        writeln!(out, "  rank  {:<width$}  {:>12}", "feature", measure)?;
        for (i, (f, v)) in ranked.iter().enumerate() {
            writeln!(out, "  {:>4}  {:<width$}  {:>12.6}", i + 1, f, v)?;
        }
        if let Some(p) = &html_written {
            writeln!(out, "\nHTML report written to {p}")?;
        }
    }
    Ok(())
}

/// A feature value for display: integers without decimals, missing as `missing`.
fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "missing".to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.6}")
    }
}

#[allow(clippy::too_many_arguments)]
fn write_html(
    path: &Path,
    args: &ExplainArgs,
    kind: ModelType,
    method: ExplainMethod,
    output: Output,
    names: &[String],
    x: &Matrix,
    start: usize,
    results: &[RowResult],
    importance: &GlobalImportance,
    background: Option<&BackgroundInfo>,
) -> anyhow::Result<()> {
    let wrow = args.waterfall_row.unwrap_or(start);
    let Some(r) = results.iter().find(|r| r.row == wrow) else {
        bail!(
            "--waterfall-row {wrow} is not among the explained rows ({}..{})",
            start,
            start + results.len()
        );
    };
    let xrow = x.row(r.row - start);
    let e = &r.explanation;
    // Largest contributions first; the tail pooled into one bar.
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| {
        e.values[b]
            .abs()
            .partial_cmp(&e.values[a].abs())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let (base, prediction, tol) = match &r.lime {
        // LIME's surrogate is additive: intercept + weights = local prediction.
        Some(l) => (
            l.intercept,
            l.local_prediction,
            tolerance(l.local_prediction),
        ),
        None => (e.base_value, e.prediction, tolerance(e.prediction)),
    };
    let shown = if order.len() > WATERFALL_BARS {
        WATERFALL_BARS - 1
    } else {
        order.len()
    };
    let mut steps: Vec<(String, f64)> = order[..shown]
        .iter()
        .map(|&j| {
            (
                format!("{} = {}", names[j], fmt_value(xrow[j])),
                e.values[j],
            )
        })
        .collect();
    if shown < order.len() {
        let rest: f64 = order[shown..].iter().map(|&j| e.values[j]).sum();
        steps.push((format!("{} other features", order.len() - shown), rest));
    }
    let waterfall = Waterfall::new(
        &format!(
            "Row {} ({} space): base value → prediction",
            r.row,
            output_name(output)
        ),
        base,
        steps,
        prediction,
        tol,
    )
    .with_context(|| format!("waterfall of data row {}", r.row))?;
    let mut text = format!(
        "Model {} ({}), method {}, {} rows of {} explained in {} space.",
        args.model.display(),
        kind.name(),
        method.name(),
        results.len(),
        args.data.display(),
        output_name(output)
    );
    if let Some(b) = background {
        text.push_str(&format!(" Background: {}.", b.description));
    }
    if method == ExplainMethod::Lime {
        text.push_str(
            " LIME weights belong to a local surrogate: the waterfall ends at the surrogate's \
             prediction, not the model's.",
        );
    }
    HtmlReport::new("Attest explanation report")
        .paragraph(&text)
        .importance(importance)
        .waterfall(&waterfall)
        .write_to(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ranges() {
        assert_eq!(parse_rows("0..100", 200).unwrap(), (0, 100));
        assert_eq!(parse_rows("5..=9", 200).unwrap(), (5, 10));
        assert_eq!(parse_rows("..3", 200).unwrap(), (0, 3));
        assert_eq!(parse_rows("190..", 200).unwrap(), (190, 200));
        assert_eq!(parse_rows("7", 200).unwrap(), (7, 8));
        assert!(parse_rows("5..5", 200).is_err());
        assert!(parse_rows("0..201", 200).is_err());
        assert!(parse_rows("a..b", 200).is_err());
    }

    proptest::proptest! {
        #[test]
        fn row_ranges_round_trip(n in 1usize..5000, a in 0usize..5000, len in 1usize..5000) {
            let b = a + len;
            let exclusive = parse_rows(&format!("{a}..{b}"), n);
            let inclusive = parse_rows(&format!("{a}..={}", b - 1), n);
            if b <= n {
                proptest::prop_assert_eq!(exclusive.unwrap(), (a, b));
                proptest::prop_assert_eq!(inclusive.unwrap(), (a, b));
            } else {
                proptest::prop_assert!(exclusive.is_err() && inclusive.is_err());
            }
            // Reversed ranges never select rows.
            let reversed = format!("{b}..{a}");
            proptest::prop_assert!(parse_rows(&reversed, n).is_err());
        }

        #[test]
        fn values_display_without_nan(v in proptest::num::f64::ANY) {
            let s = fmt_value(v);
            proptest::prop_assert!(!s.contains("NaN"));
            if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
                proptest::prop_assert!(!s.contains('.'));
                proptest::prop_assert_eq!(s.parse::<f64>().unwrap(), v);
            }
        }
    }

    #[test]
    fn detects_formats() {
        let p = Path::new("m");
        assert_eq!(
            detect_model_type(p, "tree\nversion=v4\n").unwrap(),
            ModelType::Lightgbm
        );
        assert_eq!(
            detect_model_type(p, r#"{"learner": {}}"#).unwrap(),
            ModelType::Xgboost
        );
        assert_eq!(
            detect_model_type(
                p,
                r#"{"feature_names": [], "coefficients": [], "intercept": 0}"#
            )
            .unwrap(),
            ModelType::Linear
        );
        assert_eq!(
            detect_model_type(p, r#"{"feature_names_out": [], "coef": []}"#).unwrap(),
            ModelType::SklearnLogreg
        );
        let e = detect_model_type(p, r#"{"weights": 1}"#).unwrap_err();
        assert!(e.to_string().contains("weights"), "{e}");
        assert!(detect_model_type(p, "hello").is_err());
    }
}
