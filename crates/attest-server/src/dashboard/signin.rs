//! Signing in to the dashboard from a browser, for servers that require API keys (any
//! non-loopback bind, or `--require-auth`). A browser cannot send `Authorization: Bearer`, so:
//!
//! - a page request without a key (or with a refused one) is redirected to `GET /login`;
//! - `POST /login` checks the key (it needs the `read` scope) and stores it in the
//!   [`SESSION_COOKIE`] cookie: `HttpOnly` (no script reads it), `SameSite=Strict` (no other
//!   site sends it), `Path=/`, 12 hours, `Secure` when a proxy says the request came over
//!   HTTPS (`X-Forwarded-Proto: https`);
//! - the API-key gate accepts that cookie on GET and HEAD requests only, so it can show pages
//!   and read the API but never change anything;
//! - `POST /logout` clears it.
//!
//! The cookie holds the key itself (no server-side session): revoking the key
//! (`attest keys revoke`) ends every browser session that uses it.

use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::Utc;
use cookie::{Cookie, SameSite};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{session_key, Scope, SESSION_COOKIE};

use super::render;

/// How long a sign-in lasts.
const SESSION_HOURS: i64 = 12;

/// The sign-in routes (not behind the gate).
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(form).post(sign_in))
        .route("/logout", post(sign_out))
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    key: String,
    next: Option<String>,
}

/// Where to go after signing in: a local path only (no open redirect).
fn local_path(next: Option<String>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/".to_string(),
    }
}

fn page(status: StatusCode, next: &str, message: Option<&str>, headers: &HeaderMap) -> Response {
    let signed_in = session_key(headers).is_some();
    super::form_html(
        status,
        render::sign_in(next, message, signed_in, &Utc::now()),
    )
}

fn redirect(to: &str, cookie: Cookie<'_>) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(to) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        h.insert(header::SET_COOKIE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn form(headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    page(StatusCode::OK, &local_path(q.next), None, &headers)
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return page(
            StatusCode::BAD_REQUEST,
            "/",
            Some("The sign-in form was not understood; enter the API key and try again."),
            &headers,
        );
    };
    let next = local_path(form.next);
    let key = form.key.trim();
    match state.keys().verify(key).await {
        Err(e) => {
            tracing::error!(error = %e, "api key lookup failed at sign-in");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                &next,
                Some("The API key store could not be read; try again."),
                &headers,
            )
        }
        Ok(None) => page(
            StatusCode::UNAUTHORIZED,
            &next,
            Some("Unknown or revoked API key."),
            &headers,
        ),
        Ok(Some(info)) if !info.allows(Scope::Read) => page(
            StatusCode::FORBIDDEN,
            &next,
            Some("This key lacks the read scope the dashboard needs."),
            &headers,
        ),
        Ok(Some(info)) => {
            tracing::info!(key = %info.id, "dashboard sign-in");
            let https = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.eq_ignore_ascii_case("https"));
            let cookie = Cookie::build((SESSION_COOKIE, key.to_string()))
                .http_only(true)
                .same_site(SameSite::Strict)
                .path("/")
                .max_age(cookie::time::Duration::hours(SESSION_HOURS))
                .secure(https)
                .build();
            redirect(&next, cookie)
        }
    }
}

async fn sign_out() -> Response {
    let mut cookie = Cookie::build((SESSION_COOKIE, ""))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .build();
    cookie.make_removal();
    redirect("/login", cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        let p = |s: &str| local_path(Some(s.to_string()));
        assert_eq!(p("/decisions/x?y=1"), "/decisions/x?y=1");
        assert_eq!(p("//evil.example/"), "/");
        assert_eq!(p("https://evil.example/"), "/");
        assert_eq!(p("/\\evil.example"), "/");
        assert_eq!(p("/a\r\nSet-Cookie: x=1"), "/");
        assert_eq!(local_path(None), "/");
    }
}
