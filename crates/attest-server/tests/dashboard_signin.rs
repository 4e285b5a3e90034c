//! Browser sign-in when the server requires API keys, over plain HTTP: redirects to the form,
//! the form's checks, the cookie's attributes, what the cookie may and may not authorize
//! (safe methods only), open-redirect protection and sign-out.

mod browser;

use attest_server::Scope;
use browser::server::TestServer;
use reqwest::header::{ACCEPT, CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{redirect, Client, StatusCode};
use serde_json::Value;

const HTML: &str = "text/html,application/xhtml+xml";

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

async fn post_form(c: &Client, base: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    c.post(format!("{base}/login"))
        .header(ACCEPT, HTML)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(fields).unwrap())
        .send()
        .await
        .unwrap()
}

fn header(res: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn sign_in_cookie_reads_pages_but_never_writes() {
    let (srv, keys) = TestServer::start_requiring_keys(&[
        &[Scope::Read],
        &[Scope::Decide],
        &[Scope::Read, Scope::Decide],
    ])
    .await;
    let (read, decide, both) = (&keys[0], &keys[1], &keys[2]);
    let c = client();
    let base = &srv.base;

    // A browser without a key is sent to the form, coming back to where it was.
    let res = c
        .get(format!("{base}/decisions/abc?x=1"))
        .header(ACCEPT, HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header(&res, LOCATION),
        "/login?next=%2Fdecisions%2Fabc%3Fx%3D1"
    );
    // An API client still gets the JSON 401.
    let res = c.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_api_key");

    // The form, with a CSP that lets it post to this origin only.
    let res = c
        .get(format!("{base}/login?next=%2Fincidents"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header(&res, CONTENT_SECURITY_POLICY).contains("form-action 'self'"));
    let page = res.text().await.unwrap();
    assert!(
        page.contains("name=\"next\" value=\"/incidents\""),
        "{page}"
    );

    // Wrong key, key without the read scope, malformed body: the form again, with why.
    let res = post_form(&c, base, &[("key", "atk_nope"), ("next", "/")]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&res, SET_COOKIE).is_empty());
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("Unknown or revoked API key."));
    let res = post_form(&c, base, &[("key", decide), ("next", "/")]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(header(&res, SET_COOKIE).is_empty());
    let res = c
        .post(format!("{base}/login"))
        .header("content-type", "application/json")
        .body("{\"key\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(header(&res, SET_COOKIE).is_empty());

    // The read key: a cookie the page scripts cannot read and other sites cannot send.
    let res = post_form(&c, base, &[("key", read), ("next", "/incidents")]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&res, LOCATION), "/incidents");
    let set = header(&res, SET_COOKIE);
    assert!(set.starts_with(&format!("attest_key={read}")), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let cookie = format!("attest_key={read}");

    // With it: pages and API reads.
    for path in ["/", "/incidents", "/models"] {
        let res = c
            .get(format!("{base}{path}"))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let res = c
        .get(format!(
            "{base}/v1/decisions/00000000-0000-0000-0000-000000000000"
        ))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "read through the API");
    // Never a write, even for a key that has the scope: the cookie only counts on GET/HEAD.
    let cookie_both = format!("attest_key={both}");
    let res = c
        .post(format!("{base}/v1/decisions/whatever/outcome"))
        .header(COOKIE, &cookie_both)
        .json(&serde_json::json!({"outcome": "repaid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_api_key");

    // A stale cookie sends a browser back to the form; an API client gets 401.
    let res = c
        .get(format!("{base}/"))
        .header(COOKIE, "attest_key=atk_0000000000000000_00")
        .header(ACCEPT, HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = c
        .get(format!("{base}/"))
        .header(COOKIE, "attest_key=atk_0000000000000000_00")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Only local paths are followed after sign-in.
    for evil in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let res = post_form(&c, base, &[("key", read), ("next", evil)]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(header(&res, LOCATION), "/", "{evil}");
    }
    // Behind an HTTPS proxy the cookie is Secure.
    let res = c
        .post(format!("{base}/login"))
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("key", read.as_str())]).unwrap())
        .send()
        .await
        .unwrap();
    assert!(header(&res, SET_COOKIE).contains("Secure"));

    // Sign-out clears the cookie.
    let res = c.post(format!("{base}/logout")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&res, LOCATION), "/login");
    let set = header(&res, SET_COOKIE);
    assert!(
        set.starts_with("attest_key=;") && set.contains("Max-Age=0"),
        "{set}"
    );

    srv.stop().await;
}
