//! The dashboard in a real headless Chromium: a real server (SQLite in a tempdir, ephemeral
//! port), decisions and outcomes made through the HTTP API, then every page loaded in the
//! browser: the expected figures must be in the DOM, with no console error, no uncaught
//! exception and no error log entry. A full-page screenshot of each page is saved under
//! `$CARGO_TARGET_TMPDIR/dashboard-screenshots/` (the paths are printed).
//!
//! Needs `/usr/bin/chromium` (or `$ATTEST_CHROMIUM`); fails, never skips, without it.

mod browser;

use std::collections::BTreeMap;

use attest_lending::audit::WindowKind;
use attest_lending::synth::Generator;
use attest_lending::{Decision, Outcome};
use browser::server::TestServer;
use browser::Chromium;

fn first_model(
    made: &[(
        attest_lending::DecisionResponse,
        attest_lending::synth::Applicant,
    )],
) -> String {
    made[0].0.model.to_string()
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Repaid => "repaid",
        Outcome::Defaulted => "defaulted",
    }
}

/// Decisions made through the API.
const N: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_load_in_headless_chromium_with_expected_figures() {
    // Fail first, with the installation hint, if there is no browser.
    browser::chromium_path();
    let srv = TestServer::start().await;
    let auditor = srv.start_auditor().await;
    let chrome = Chromium::launch().await;

    // The harness itself must notice console errors and uncaught exceptions.
    let bad = chrome
        .visit(
            "data:text/html,<p>bad</p><script>console.error('boom');throw%20new%20Error('kaput')</script>",
            "harness-self-check",
        )
        .await;
    assert!(
        !bad.console_errors.is_empty(),
        "the harness missed console.error"
    );
    assert!(
        !bad.exceptions.is_empty(),
        "the harness missed an uncaught exception"
    );

    // Zero decisions: every page renders sensibly.
    srv.settle().await;
    let empty = chrome
        .visit(&format!("{}/", srv.base), "overview-empty")
        .await;
    empty.assert_clean("empty overview");
    assert_eq!(empty.element_text("decision-count").as_deref(), Some("0"));
    assert_eq!(empty.element_text("approval-rate").as_deref(), Some("n/a"));
    empty.assert_text("No decisions yet.");
    let empty_incidents = chrome
        .visit(&format!("{}/incidents", srv.base), "incidents-empty")
        .await;
    empty_incidents.assert_clean("empty incidents");
    empty_incidents.assert_text("No incidents.");

    // A few decisions and outcomes through the API.
    let mut generator = Generator::new(11, 0.0);
    let mut made = Vec::new();
    for _ in 0..N {
        let (req, applicant) = generator.next_application();
        let res = srv.decide(&req).await;
        made.push((res, applicant));
    }
    let (mut repaid, mut defaulted) = (0, 0);
    for (res, applicant) in made.iter().take(4) {
        let o = generator.outcome_for(applicant);
        match o {
            Outcome::Repaid => repaid += 1,
            Outcome::Defaulted => defaulted += 1,
        }
        srv.outcome(&res.decision_id, outcome_word(o)).await;
    }
    srv.settle().await;
    let sliding_decisions = |s: &attest_lending::audit::AuditState| {
        s.current
            .iter()
            .filter(|w| w.window.kind == WindowKind::Sliding)
            .map(|w| w.decisions)
            .sum::<u64>()
    };
    let snapshot = srv
        .audit_settle(&auditor, |s| sliding_decisions(s) == N as u64)
        .await;
    let sliding = snapshot
        .current
        .iter()
        .find(|w| w.window.kind == WindowKind::Sliding)
        .expect("a sliding window");
    let window_name = format!("{} sliding", sliding.label);
    // Expected approval rate per declared sex, from the API's own answers.
    let mut by_sex: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (r, applicant) in &made {
        let sex = applicant
            .protected
            .sex
            .clone()
            .unwrap_or_else(|| "unknown".into());
        let e = by_sex.entry(sex).or_default();
        e.0 += 1;
        if r.decision == Decision::Approve {
            e.1 += 1;
        }
    }
    let approvals = made
        .iter()
        .filter(|(r, _)| r.decision == Decision::Approve)
        .count();
    let expected_rate = format!("{:.1}%", approvals as f64 * 100.0 / made.len() as f64);

    let overview = chrome.visit(&format!("{}/", srv.base), "overview").await;
    overview.assert_clean("overview");
    assert_eq!(overview.element_text("decision-count"), Some(N.to_string()));
    assert_eq!(
        overview.element_text("approval-rate"),
        Some(expected_rate.clone())
    );
    assert_eq!(
        overview.element_text("outcome-count"),
        Some(format!("{repaid} / {defaulted}"))
    );
    assert_eq!(
        overview.element_text("decisions-last-hour"),
        Some(N.to_string())
    );
    assert_eq!(
        overview.element_text("open-incidents").as_deref(),
        Some("0")
    );
    for (r, _) in &made {
        overview.assert_text(&r.decision_id);
    }
    overview.assert_text("dashboard read model");
    // Figures from the real auditor: approval rate per group, disparities, drift, its lag.
    overview.assert_text("Approval rate by group");
    for (sex, (n, approved)) in &by_sex {
        let row = format!(
            "<td>{}</td><td class=\"text\">sex</td><td class=\"text\">{sex}</td><td class=\"text\">{window_name}</td><td>{n}</td><td>{:.1}%</td>",
            first_model(&made),
            *approved as f64 * 100.0 / *n as f64
        );
        assert!(
            overview.html.contains(&row),
            "overview lacks the group row {row}; text:\n{}",
            overview.text
        );
    }
    assert!(overview.html.contains("class=\"chart bars\""));
    overview.assert_text("Drift per feature");
    for name in attest_lending::synth::feature_names() {
        overview.assert_text(&name);
    }
    overview.assert_text("auditor");
    assert!(overview.html.contains("class=\"chart rate\""));

    // The first decision's page: its top features, model, trace id, outcome, waterfall.
    let (first, applicant) = &made[0];
    let page = chrome
        .visit(
            &format!("{}/decisions/{}", srv.base, first.decision_id),
            "decision",
        )
        .await;
    page.assert_clean("decision page");
    assert!(!first.top_contributions.is_empty());
    for c in &first.top_contributions {
        page.assert_text(&c.feature);
    }
    page.assert_text(&first.trace_id);
    page.assert_text(&first.model.to_string());
    assert_eq!(
        page.element_text("probability"),
        Some(format!("{:.4}", first.probability))
    );
    assert!(page
        .element_text("outcome")
        .is_some_and(|t| t.starts_with(outcome_word(generator.outcome_for(applicant)))));
    assert!(
        page.html.contains("class=\"chart waterfall\""),
        "no waterfall chart on the decision page: {}",
        page.text
    );
    page.assert_text("base value");

    // Global importance of the active model.
    let models = chrome
        .visit(&format!("{}/models", srv.base), "models")
        .await;
    models.assert_clean("models page");
    models.assert_text(&first.model.to_string());
    for name in attest_lending::synth::feature_names() {
        models.assert_text(&name);
    }
    let rows: usize = models
        .element_text("importance-rows")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(
        rows > 0,
        "importance computed over no rows: {}",
        models.text
    );

    let incidents = chrome
        .visit(&format!("{}/incidents", srv.base), "incidents")
        .await;
    incidents.assert_clean("incidents page");
    assert_eq!(
        incidents.element_text("incident-open-count").as_deref(),
        Some("0")
    );

    chrome.close().await;
    srv.stop().await;
}

/// On a server that requires API keys, a browser is sent to the sign-in form, signs in with a
/// `read` key through the form, and then sees the pages (the key travels in an HttpOnly
/// cookie); a key without the read scope is refused on the form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_signs_in_with_an_api_key_when_keys_are_required() {
    browser::chromium_path();
    let (srv, keys) = TestServer::start_requiring_keys(&[
        &[attest_server::Scope::Read],
        &[attest_server::Scope::Decide],
    ])
    .await;
    let chrome = Chromium::launch().await;

    let before = chrome
        .visit(&format!("{}/", srv.base), "signin-redirect")
        .await;
    before.assert_clean("sign-in page");
    assert_eq!(before.title, "Attest · Sign in");
    before.assert_text("This server requires an API key");

    // A key without the read scope: refused on the form, still on /login.
    assert_eq!(chrome.sign_in(&srv.base, &keys[1]).await, "/login");
    let refused = chrome
        .visit(&format!("{}/", srv.base), "signin-still-required")
        .await;
    assert_eq!(refused.title, "Attest · Sign in");

    // The read key: the form takes the browser to the page it asked for.
    assert_eq!(chrome.sign_in(&srv.base, &keys[0]).await, "/incidents");
    let overview = chrome
        .visit(&format!("{}/", srv.base), "overview-signed-in")
        .await;
    overview.assert_clean("overview after sign-in");
    assert_eq!(overview.title, "Attest · Overview");
    assert_eq!(
        overview.element_text("decision-count").as_deref(),
        Some("0")
    );

    chrome.close().await;
    srv.stop().await;
}
