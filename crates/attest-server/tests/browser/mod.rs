//! A real headless Chromium driven over the DevTools protocol (chromiumoxide, no fetcher:
//! nothing downloads a browser). Each visit collects the page's visible text and HTML, every
//! console call of level error/assert, every uncaught exception and every Log entry of level
//! error (network failures, CSP violations, ...), and saves a full-page PNG screenshot.
//!
//! The browser is `$ATTEST_CHROMIUM` or `/usr/bin/chromium` (Debian's `chromium` package,
//! installed by `.ci/run`). A missing browser is a test failure with a clear message, never a
//! silent skip.

#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::Page;
use futures::{FutureExt, StreamExt};
use tokio::task::JoinHandle;

/// Where the browser is expected.
pub const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// The chromium binary to use; panics with installation advice when it is missing.
pub fn chromium_path() -> PathBuf {
    let path = std::env::var_os("ATTEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CHROMIUM));
    assert!(
        path.is_file(),
        "headless Chromium not found at {} — install Debian's `chromium` package \
         (`apt-get install -y chromium`; .ci/run does this) or set ATTEST_CHROMIUM to its path. \
         The dashboard browser test does not skip without a browser.",
        path.display()
    );
    path
}

/// Directory for screenshots: `$CARGO_TARGET_TMPDIR/dashboard-screenshots`.
pub fn artifact_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("create screenshot directory");
    dir
}

/// What one page load showed.
#[derive(Debug)]
pub struct Visit {
    /// `document.body.innerText`.
    pub text: String,
    /// `document.documentElement.outerHTML`.
    pub html: String,
    /// `document.title`.
    pub title: String,
    /// Console errors and failed assertions.
    pub console_errors: Vec<String>,
    /// Uncaught exceptions.
    pub exceptions: Vec<String>,
    /// Log entries of level error (failed loads, CSP violations, ...).
    pub log_errors: Vec<String>,
    /// Where the screenshot was saved.
    pub screenshot: PathBuf,
}

impl Visit {
    /// Panics with every problem the page reported.
    pub fn assert_clean(&self, what: &str) {
        assert!(
            self.console_errors.is_empty()
                && self.exceptions.is_empty()
                && self.log_errors.is_empty(),
            "{what}: console errors {:?}, exceptions {:?}, log errors {:?}",
            self.console_errors,
            self.exceptions,
            self.log_errors
        );
    }

    /// Panics unless the visible text contains `needle`.
    pub fn assert_text(&self, needle: &str) {
        assert!(
            self.text.contains(needle),
            "page {:?} does not show {needle:?}; visible text:\n{}",
            self.title,
            self.text
        );
    }

    /// The visible text of the element with this id (from the HTML).
    pub fn element_text(&self, id: &str) -> Option<String> {
        let marker = format!("id=\"{id}\"");
        let start = self.html.find(&marker)?;
        let open_end = start + self.html[start..].find('>')? + 1;
        let close = open_end + self.html[open_end..].find('<')?;
        Some(self.html[open_end..close].to_string())
    }
}

/// A running headless Chromium with a fresh profile.
pub struct Chromium {
    browser: Browser,
    handler: JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Launches the browser (headless, no sandbox as root, no background networking).
    pub async fn launch() -> Chromium {
        let exe = chromium_path();
        let profile = tempfile::tempdir().expect("profile dir");
        let config = BrowserConfig::builder()
            .chrome_executable(&exe)
            .no_sandbox()
            .user_data_dir(profile.path())
            .window_size(1280, 1000)
            .viewport(Viewport {
                width: 1280,
                height: 1000,
                ..Viewport::default()
            })
            .launch_timeout(Duration::from_secs(60))
            .request_timeout(Duration::from_secs(60))
            .args([
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--no-proxy-server",
            ])
            .build()
            .expect("browser config");
        let (browser, mut handler) = Browser::launch(config)
            .await
            .unwrap_or_else(|e| panic!("launching {} failed: {e}", exe.display()));
        let handler = tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                if let Err(e) = event {
                    tracing::debug!(error = %e, "cdp handler");
                }
            }
        });
        Chromium {
            browser,
            handler,
            _profile: profile,
        }
    }

    /// Loads `url` in a new tab, collects problems and text, saves `<name>.png`.
    pub async fn visit(&self, url: &str, name: &str) -> Visit {
        let page = self
            .browser
            .new_page("about:blank")
            .await
            .expect("open a tab");
        let visit = visit_page(&page, url, name).await;
        let _ = page.close().await;
        visit
    }

    /// Signs this browser in to the dashboard at `base` with `key`: fills and submits the
    /// sign-in form like a user, then waits until the browser has left `/login` (the cookie
    /// it received then serves every later visit). Returns the path it landed on.
    pub async fn sign_in(&self, base: &str, key: &str) -> String {
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "unexpected key format"
        );
        let page = self
            .browser
            .new_page(format!("{base}/login?next=%2Fincidents"))
            .await
            .expect("open the sign-in page");
        let _: bool = eval(
            &page,
            &format!(
                "(() => {{ document.querySelector('input[name=key]').value = '{key}'; \
                 document.getElementById('signin').submit(); return true; }})()"
            ),
        )
        .await;
        let mut landed = String::from("/login");
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(v) = page.evaluate("location.pathname").await {
                if let Ok(path) = v.into_value::<String>() {
                    landed = path;
                    if landed != "/login" {
                        break;
                    }
                }
            }
        }
        let _ = page.close().await;
        landed
    }

    /// Closes the browser and waits for it to exit.
    pub async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

async fn visit_page(page: &Page, url: &str, name: &str) -> Visit {
    let mut console = page
        .event_listener::<EventConsoleApiCalled>()
        .await
        .expect("console listener");
    let mut exceptions = page
        .event_listener::<EventExceptionThrown>()
        .await
        .expect("exception listener");
    let mut logs = page
        .event_listener::<EventEntryAdded>()
        .await
        .expect("log listener");
    page.enable_runtime().await.expect("Runtime.enable");
    page.enable_log().await.expect("Log.enable");
    page.goto(url)
        .await
        .unwrap_or_else(|e| panic!("loading {url} failed: {e}"));
    let text: String = eval(page, "document.body ? document.body.innerText : ''").await;
    let html: String = eval(page, "document.documentElement.outerHTML").await;
    let title: String = eval(page, "document.title").await;
    let png = page
        .screenshot(
            ScreenshotParams::builder()
                .format(CaptureScreenshotFormat::Png)
                .full_page(true)
                .build(),
        )
        .await
        .expect("screenshot");
    let screenshot = artifact_dir().join(format!("{name}.png"));
    std::fs::write(&screenshot, &png).expect("write screenshot");
    println!("screenshot of {url}: {}", screenshot.display());
    // One more round trip so events sent before it have been delivered to the listeners.
    let _: String = eval(page, "document.readyState").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut console_errors = Vec::new();
    while let Some(Some(e)) = console.next().now_or_never() {
        if matches!(
            e.r#type,
            ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert
        ) {
            console_errors.push(format!("{:?}: {:?}", e.r#type, e.args));
        }
    }
    let mut exception_texts = Vec::new();
    while let Some(Some(e)) = exceptions.next().now_or_never() {
        exception_texts.push(format!(
            "{} {:?}",
            e.exception_details.text, e.exception_details.exception
        ));
    }
    let mut log_errors = Vec::new();
    while let Some(Some(e)) = logs.next().now_or_never() {
        if matches!(e.entry.level, LogEntryLevel::Error) {
            log_errors.push(format!(
                "{:?}: {} ({:?})",
                e.entry.source, e.entry.text, e.entry.url
            ));
        }
    }
    Visit {
        text,
        html,
        title,
        console_errors,
        exceptions: exception_texts,
        log_errors,
        screenshot,
    }
}

async fn eval<T: serde::de::DeserializeOwned>(page: &Page, expr: &str) -> T {
    page.evaluate(expr)
        .await
        .unwrap_or_else(|e| panic!("evaluating {expr} failed: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("{expr} returned an unexpected value: {e}"))
}
