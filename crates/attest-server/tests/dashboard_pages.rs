//! The dashboard pages over HTTP (no browser): content type and security headers, escaping of
//! user-provided text, 404 pages, and global importance computed once per model version.

mod browser;

use attest_lending::synth::Generator;
use attest_lending::ProtectedAttributes;
use browser::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_html_with_a_strict_csp_and_render_with_zero_decisions() {
    let srv = TestServer::start().await;
    srv.settle().await;
    for path in ["/", "/models", "/incidents"] {
        let (status, ct, csp, body) = srv.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(ct, "text/html; charset=utf-8", "{path}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(body.starts_with("<!DOCTYPE html>"), "{path}");
        assert!(!body.contains("<script"), "{path} has a script");
        assert!(!body.contains(" src="), "{path} loads a resource");
    }
    let (_, _, _, overview) = srv.get("/").await;
    assert!(overview.contains("id=\"decision-count\">0<"));
    assert!(overview.contains("No decisions yet."));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_provided_text_is_escaped_and_unknown_decisions_are_404_pages() {
    let srv = TestServer::start().await;
    let (status, ct, _, body) = srv
        .get("/decisions/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(ct, "text/html; charset=utf-8");
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );
    assert!(!body.contains("<script>"));

    let mut generator = Generator::new(3, 0.0);
    let (mut req, _) = generator.next_application();
    req.protected = ProtectedAttributes {
        sex: Some("<img src=x onerror=alert(1)>".into()),
        race: Some("\"quoted\" & 'single'".into()),
        age_band: None,
    };
    let res = srv.decide(&req).await;
    srv.settle().await;
    let (status, _, _, body) = srv.get(&format!("/decisions/{}", res.decision_id)).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("<img"), "unescaped attribute in {body}");
    assert!(body.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(body.contains("&quot;quoted&quot; &amp; &#39;single&#39;"));
    assert!(body.contains(&res.trace_id));
    for c in &res.top_contributions {
        assert!(body.contains(&c.feature), "missing {}", c.feature);
    }
    let (_, _, _, overview) = srv.get("/").await;
    assert!(overview.contains("id=\"decision-count\">1<"), "{overview}");
    assert!(overview.contains(&format!("href=\"/decisions/{}\"", res.decision_id)));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_importance_is_computed_once_per_model_version() {
    let srv = TestServer::start().await;
    let model = srv.state.lending().active_model();
    let a = srv
        .dashboard
        .importance()
        .get(srv.state.lending(), &model)
        .await
        .expect("importance");
    let b = srv
        .dashboard
        .importance()
        .get(srv.state.lending(), &model)
        .await
        .expect("importance again");
    assert!(
        std::sync::Arc::ptr_eq(&a, &b),
        "recomputed instead of cached"
    );
    assert!(a.rows > 0);
    let names = attest_lending::synth::feature_names();
    assert_eq!(a.features.len(), names.len());
    for w in a.features.windows(2) {
        assert!(w[0].1 >= w[1].1, "not sorted: {:?}", a.features);
    }
    assert!(a.features.iter().all(|(_, v)| v.is_finite() && *v >= 0.0));
    assert!(a.features.iter().any(|(_, v)| *v > 0.0));
    let (status, _, _, body) = srv.get("/models").await;
    assert_eq!(status, 200);
    assert!(body.contains(&format!("id=\"importance-rows\">{}<", a.rows)));
    for (name, _) in &a.features {
        assert!(body.contains(name.as_str()));
    }
    srv.stop().await;
}
