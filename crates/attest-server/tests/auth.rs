//! API-key authentication: the policy by bind address, and 401/403/200 by scope.

mod common;

use attest_server::{Scope, ServerError};
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::start_with;

#[tokio::test]
async fn non_loopback_bind_without_keys_is_refused() {
    match start_with("0.0.0.0:0", false, &[]).await {
        Err(ServerError::NoApiKeys { .. }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a public bind without keys must be refused"),
    }
    match start_with("127.0.0.1:0", true, &[]).await {
        Err(ServerError::NoApiKeys { .. }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("--require-auth without keys must be refused"),
    }
}

#[tokio::test]
async fn the_server_refuses_a_public_address_with_optional_auth() {
    let (_dir, store, lending, keys) = common::open_parts().await;
    let state =
        attest_server::AppState::builder(lending, store, keys, attest_server::AuthPolicy::Optional)
            .build();
    let router = attest_server::ApiBuilder::new(state.clone()).build();
    let r = attest_server::Server::bind(
        "0.0.0.0:0".parse().unwrap(),
        attest_server::AuthPolicy::Optional,
        router,
    )
    .await;
    assert!(matches!(
        r,
        Err(ServerError::AuthDisabledOnPublicAddress(_))
    ));
}

#[tokio::test]
async fn keys_are_checked_by_scope_on_a_public_bind() {
    let (s, keys) = start_with(
        "0.0.0.0:0",
        false,
        &[&[Scope::Decide], &[Scope::Read], &[Scope::Admin]],
    )
    .await
    .unwrap();
    let (decide, read, admin) = (&keys[0].key, &keys[1].key, &keys[2].key);
    let body = s.valid_request("auth-1");
    let post = |key: Option<&str>| {
        let mut r = s.client.post(s.url("/v1/decisions")).json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };

    let res = post(None).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().contains_key("www-authenticate"));
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        json!("missing_api_key")
    );
    let forged = format!("{}0", &decide[..decide.len() - 1]);
    let forged = if &forged == decide {
        format!("{}1", &decide[..decide.len() - 1])
    } else {
        forged
    };
    let res = post(Some(&forged)).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        json!("invalid_api_key")
    );
    let res = post(Some("not-a-key")).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = post(Some(read)).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        json!("insufficient_scope")
    );
    let res = post(Some(decide)).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["decision_id"]
        .as_str()
        .unwrap()
        .to_string();

    let get = |key: Option<&str>| {
        let mut r = s.client.get(s.url(&format!("/v1/decisions/{id}")));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(Some(decide)).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(get(Some(read)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(get(Some(admin)).await.unwrap().status(), StatusCode::OK);

    // Erasure needs admin; afterwards the decision shows the attributes as erased.
    let erase = |key: &str| {
        s.client
            .delete(s.url("/v1/applicants/auth-1/protected"))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(erase(read).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(erase(admin).await.unwrap().status(), StatusCode::NO_CONTENT);
    let view = get(Some(read))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(view["protected"]["status"], json!("erased"));

    // Public operational routes need no key.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let res = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }

    // A revoked key stops working at once.
    assert!(s.keys.revoke(&keys[1].info.id).await.unwrap());
    assert_eq!(
        get(Some(read)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    s.stop().await;
}

#[tokio::test]
async fn loopback_without_require_auth_still_checks_presented_keys() {
    let (s, keys) = start_with("127.0.0.1:0", false, &[&[Scope::Read]])
        .await
        .unwrap();
    let body = s.valid_request("auth-2");
    let res = s
        .client
        .post(s.url("/v1/decisions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = s
        .client
        .post(s.url("/v1/decisions"))
        .bearer_auth(&keys[0].key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    s.stop().await;
}

#[tokio::test]
async fn require_auth_on_loopback() {
    let (s, keys) = start_with("127.0.0.1:0", true, &[&[Scope::Decide, Scope::Read]])
        .await
        .unwrap();
    let res = s
        .client
        .get(s.url("/v1/audit/fairness"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = s
        .client
        .get(s.url("/v1/audit/fairness"))
        .bearer_auth(&keys[0].key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    s.stop().await;
}
