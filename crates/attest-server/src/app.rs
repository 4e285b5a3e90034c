//! Application state, the router builder with its extension points, the auth gate and the
//! server loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use attest_lending::LendingService;
use attest_store::DynStore;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use prometheus_client::registry::Registry;

use crate::audit::AuditHandle;
use crate::auth::{session_key, ApiKeyInfo, AuthPolicy, KeyStore, Scope};
use crate::error::{ApiError, ServerError};
use crate::extract::DEFAULT_BODY_LIMIT;
use crate::metrics::HttpMetrics;

/// Everything a handler needs. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    lending: LendingService,
    store: DynStore,
    keys: KeyStore,
    policy: AuthPolicy,
    registry: Arc<Mutex<Registry>>,
    metrics: HttpMetrics,
    audit: AuditHandle,
    body_limit: usize,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("policy", &self.inner.policy)
            .field("body_limit", &self.inner.body_limit)
            .finish_non_exhaustive()
    }
}

/// Builds an [`AppState`].
pub struct AppStateBuilder {
    lending: LendingService,
    store: DynStore,
    keys: KeyStore,
    policy: AuthPolicy,
    registry: Option<Arc<Mutex<Registry>>>,
    audit: AuditHandle,
    body_limit: usize,
}

impl AppStateBuilder {
    /// Uses this metrics registry (shared with other components) instead of a new one.
    pub fn registry(mut self, registry: Arc<Mutex<Registry>>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Uses this audit handle (e.g. one the auditor already holds).
    pub fn audit(mut self, audit: AuditHandle) -> Self {
        self.audit = audit;
        self
    }

    /// Request-body limit in bytes (default [`DEFAULT_BODY_LIMIT`], 64 KiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Registers the HTTP metrics and builds the state.
    pub fn build(self) -> AppState {
        let registry = self
            .registry
            .unwrap_or_else(|| Arc::new(Mutex::new(Registry::default())));
        let metrics = HttpMetrics::register(&registry);
        AppState {
            inner: Arc::new(Inner {
                lending: self.lending,
                store: self.store,
                keys: self.keys,
                policy: self.policy,
                registry,
                metrics,
                audit: self.audit,
                body_limit: self.body_limit,
            }),
        }
    }
}

impl AppState {
    /// Starts building a state. `policy` comes from [`AuthPolicy::for_bind`].
    pub fn builder(
        lending: LendingService,
        store: DynStore,
        keys: KeyStore,
        policy: AuthPolicy,
    ) -> AppStateBuilder {
        AppStateBuilder {
            lending,
            store,
            keys,
            policy,
            registry: None,
            audit: AuditHandle::default(),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// The lending service.
    pub fn lending(&self) -> &LendingService {
        &self.inner.lending
    }

    /// The event store.
    pub fn store(&self) -> &DynStore {
        &self.inner.store
    }

    /// The API keys.
    pub fn keys(&self) -> &KeyStore {
        &self.inner.keys
    }

    /// Whether keys are required.
    pub fn policy(&self) -> AuthPolicy {
        self.inner.policy
    }

    /// The shared Prometheus registry: register extra metrics here; `/metrics` renders it.
    pub fn registry(&self) -> &Arc<Mutex<Registry>> {
        &self.inner.registry
    }

    /// The server's own metric families.
    pub fn metrics(&self) -> &HttpMetrics {
        &self.inner.metrics
    }

    /// The audit slot (install the auditor here).
    pub fn audit(&self) -> &AuditHandle {
        &self.inner.audit
    }

    /// Puts `router`'s routes behind the API-key gate for `scope` (see [`crate::auth`]).
    /// Use it for extension routers before passing them to [`ApiBuilder::merge`].
    pub fn protect(&self, router: Router<AppState>, scope: Scope) -> Router<AppState> {
        router.route_layer(middleware::from_fn_with_state(
            Gate {
                state: self.clone(),
                scope,
            },
            gate,
        ))
    }
}

/// The authenticated caller, in the request extensions of gated routes (absent when auth is
/// optional and no key was sent).
#[derive(Debug, Clone)]
pub struct Principal(pub ApiKeyInfo);

#[derive(Clone)]
struct Gate {
    state: AppState,
    scope: Scope,
}

fn unauthorized(code: &str, message: &str) -> Response {
    let mut res =
        ApiError::new(StatusCode::UNAUTHORIZED, code, message.to_string()).into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"attest\""),
    );
    res
}

/// Whether the client asked for an HTML page (a browser navigating), so that a missing or
/// refused sign-in cookie sends it to the sign-in form instead of a JSON 401.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// `303 See Other` to the dashboard's sign-in form, coming back to this page afterwards.
fn to_sign_in(req: &Request) -> Response {
    let back = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let query = serde_urlencoded::to_string([("next", back)]).unwrap_or_default();
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/login?{query}")) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

async fn gate(State(g): State<Gate>, mut req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    // A browser that signed in to the dashboard carries the key in a cookie; it counts for
    // safe methods only (a cross-site form cannot use it to change anything).
    let mut from_cookie = false;
    let presented = match req.headers().get(header::AUTHORIZATION) {
        None if safe => {
            let key = session_key(req.headers());
            from_cookie = key.is_some();
            key
        }
        None => None,
        Some(v) => {
            let token = v.to_str().ok().and_then(|s| {
                let (scheme, token) = s.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_string())
            });
            match token {
                Some(t) => Some(t),
                None => {
                    return unauthorized(
                        "invalid_api_key",
                        "Authorization must be `Bearer <api key>`",
                    )
                }
            }
        }
    };
    let browser = safe && wants_html(req.headers());
    let Some(key) = presented else {
        return match g.state.policy() {
            AuthPolicy::Required if browser => to_sign_in(&req),
            AuthPolicy::Required => unauthorized(
                "missing_api_key",
                "this server requires an API key: send `Authorization: Bearer <key>`",
            ),
            AuthPolicy::Optional => next.run(req).await,
        };
    };
    match g.state.keys().verify(&key).await {
        Err(e) => {
            tracing::error!(error = %e, "api key lookup failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "key_store_unavailable",
                "the API key store could not be read",
            )
            .into_response()
        }
        Ok(None) if from_cookie && browser => to_sign_in(&req),
        Ok(None) => unauthorized("invalid_api_key", "unknown or revoked API key"),
        Ok(Some(info)) if !info.allows(g.scope) && from_cookie && browser => to_sign_in(&req),
        Ok(Some(info)) if !info.allows(g.scope) => ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!(
                "API key {} lacks the {} scope needed here",
                info.id, g.scope
            ),
        )
        .into_response(),
        Ok(Some(info)) => {
            req.extensions_mut().insert(Principal(info));
            next.run(req).await
        }
    }
}

/// Builds the full router: the API routes plus any extension routers, with the shared layers
/// (trace context, metrics, body limit, JSON 404/405 fallbacks) applied to all of them.
pub struct ApiBuilder {
    state: AppState,
    extra: Vec<Router<AppState>>,
}

impl ApiBuilder {
    /// A builder for `state`'s API.
    pub fn new(state: AppState) -> Self {
        ApiBuilder {
            state,
            extra: Vec::new(),
        }
    }

    /// Adds an extension router (e.g. dashboard pages); gate its routes with
    /// [`AppState::protect`] where needed. Paths must not clash with the API's.
    pub fn merge(mut self, router: Router<AppState>) -> Self {
        self.extra.push(router);
        self
    }

    /// The finished router.
    pub fn build(self) -> Router {
        let mut router = crate::routes::api(&self.state);
        for extra in self.extra {
            router = router.merge(extra);
        }
        router
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(self.state.inner.body_limit))
            .layer(middleware::from_fn_with_state(
                self.state.metrics().clone(),
                crate::metrics::track,
            ))
            .layer(middleware::from_fn(crate::trace::trace_context))
            .with_state(self.state)
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// A bound HTTP server.
pub struct Server {
    listener: tokio::net::TcpListener,
    router: Router,
    addr: SocketAddr,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    /// Binds `addr`. Refuses a non-loopback address unless `policy` is
    /// [`AuthPolicy::Required`] (the state's policy must come from [`AuthPolicy::for_bind`]).
    pub async fn bind(
        addr: SocketAddr,
        policy: AuthPolicy,
        router: Router,
    ) -> Result<Server, ServerError> {
        if !addr.ip().is_loopback() && policy != AuthPolicy::Required {
            return Err(ServerError::AuthDisabledOnPublicAddress(addr.to_string()));
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Io {
                addr: addr.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Io {
            addr: addr.to_string(),
            source,
        })?;
        Ok(Server {
            listener,
            router,
            addr,
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
    /// finish (graceful shutdown).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let addr = self.addr;
        tracing::info!(%addr, "serving HTTP");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| ServerError::Io {
                addr: addr.to_string(),
                source,
            })
    }
}
