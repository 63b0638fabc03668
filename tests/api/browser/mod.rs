//! The link pages in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver by plain HTTP to chromedriver. A person opens
//! the link of a real mail and presses Confirm; the browser must end at the configured
//! success URL, which it follows only if the pages' CSP `form-action` allows that origin.
//! A form on another site that posts to our pages is refused in the same browser.
//!
//! Without Chromium the test says so and passes, except under `CI=true` (`.ci/run` installs
//! it). The browser is kept on loopback: every other host resolves to nothing and goes to a
//! proxy that does not exist, and its background services are off.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::response::Html;
use serde_json::{Value, json};

use crate::connections::which;
use crate::helpers::{Backend, free_port, poll_until, spawn_app_with};

mod pages;
mod round_three;
mod support;

/// The WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium and chromedriver, or why the test cannot run.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let chromium = ["chromium", "chromium-browser"]
        .iter()
        .find_map(|p| which(p))
        .ok_or("chromium is not installed (apt-get install chromium chromium-driver)")?;
    let driver = which("chromedriver")
        .ok_or("chromedriver is not installed (apt-get install chromium-driver)")?;
    Ok((chromium, driver))
}

/// What a browser test needs, or `None` once it has said why the test is skipped; under
/// `CI=true` a missing piece fails the test instead of skipping it.
fn needed_or_skip<T>(test: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(found) => Some(found),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test} cannot run under CI: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// A chromedriver process on a loopback port (killed when dropped).
struct Driver {
    _child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
}

impl Driver {
    async fn start(driver: &PathBuf) -> Self {
        let port = free_port();
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let d = Self {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        let ready = poll_until(Duration::from_secs(20), async || {
            let status = d.http.get(format!("{}/status", d.base)).send().await.ok()?;
            let body: Value = serde_json::from_str(&status.text().await.ok()?).ok()?;
            (body["value"]["ready"] == true).then_some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "chromedriver did not become ready within 20 s"
        );
        d
    }

    /// One WebDriver command; its `value`, or the test fails with the driver's error.
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_send(method.clone(), path, body).await {
            Ok(value) => value,
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    /// One WebDriver command: its `value`, or the driver's error.
    async fn try_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if status.is_success() {
            Ok(body["value"].clone())
        } else {
            Err(format!("{status} {}", body["value"]["message"]))
        }
    }

    async fn session(&self, chromium: &PathBuf, profile: &std::path::Path) -> Session<'_> {
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.display()),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            // Nothing but loopback: no background services, no name lookups, and any other
            // host goes to a proxy that is not there.
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-default-apps".into(),
            "--disable-extensions".into(),
            "--disable-domain-reliability".into(),
            "--disable-client-side-phishing-detection".into(),
            "--disable-breakpad".into(),
            "--no-pings".into(),
            "--metrics-recording-only".into(),
            "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication".into(),
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1".into(),
            "--proxy-server=http://127.0.0.1:9".into(),
        ];
        let value = self
            .send(
                reqwest::Method::POST,
                "/session",
                Some(json!({
                    "capabilities": { "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": { "binary": chromium, "args": args },
                    }}
                })),
            )
            .await;
        let id = value["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Session { driver: self, id }
    }
}

/// One browser window.
struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    async fn cmd(&self, method: reqwest::Method, what: &str, body: Option<Value>) -> Value {
        self.driver
            .send(method, &format!("/session/{}{what}", self.id), body)
            .await
    }

    async fn open(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The text the window shows now ("" while a page is loading).
    async fn text(&self) -> String {
        self.driver
            .try_send(
                reqwest::Method::POST,
                &format!("/session/{}/execute/sync", self.id),
                Some(json!({
                    "script": "return document.body ? document.body.innerText : '';",
                    "args": [],
                })),
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Waits (at most 15 s) until the window shows `url`; gives what it shows then.
    async fn lands_on(&self, url: &str) -> String {
        poll_until(Duration::from_secs(15), async || {
            let now = self.url().await;
            (now == url).then_some(now)
        })
        .await
        .unwrap_or(self.url().await)
    }

    async fn quit(self) {
        self.cmd(reqwest::Method::DELETE, "", None).await;
    }
}

/// The wallet's own site on loopback: the success page, and an attacker's page whose form
/// posts to the pages at `/prize?to=<pages base URL>`.
async fn other_site() -> (String, tokio::task::JoinHandle<()>) {
    #[derive(serde::Deserialize)]
    struct Target {
        to: String,
        /// A real link's token (default: a well-formed one that matches nothing).
        token: Option<String>,
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/verified",
            axum::routing::get(|| async {
                Html("<!doctype html><title>Wallet</title><p>Welcome back: your address is confirmed.</p>")
            }),
        )
        .route(
            "/prize",
            axum::routing::get(|q: axum::extract::Query<Target>| async move {
                Html(format!(
                    r#"<!doctype html><title>Win</title><form method="post" action="{}/verify"><input type="hidden" name="token" value="{}"><button type="submit">Claim</button></form>"#,
                    q.to,
                    q.token.clone().unwrap_or_else(|| "A".repeat(43))
                ))
            }),
        );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirming_in_a_real_browser_lands_on_the_success_url() {
    let Some((chromium, driver)) = needed_or_skip(
        "confirming_in_a_real_browser_lands_on_the_success_url",
        browser(),
    ) else {
        return;
    };
    // The other site runs first: its address is a setting of the service.
    let (site, _site_server) = other_site().await;
    let success_url = format!("{site}/verified");
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.success_url = Some(success_url.clone());
        s.limit_failed_confirms_per_ip = "1/10m".into();
    })
    .await;

    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let link = app.link_in(&app.next_mail().await);

    let driver = Driver::start(&driver).await;
    let profile = tempfile::tempdir().unwrap();
    let window = driver.session(&chromium, profile.path()).await;

    // Another site's form posting to our pages: refused, and counted against nobody.
    window
        .open(&format!("{site}/prize?to={}", app.http_base))
        .await;
    window.click("button").await;
    let refused = poll_until(Duration::from_secs(15), async || {
        let text = window.text().await;
        text.contains("another website").then_some(text)
    })
    .await;
    assert!(
        refused.is_some(),
        "the cross-site form was not refused: {}",
        window.text().await
    );

    // The person: opens the link from the mail, sees Confirm, presses it.
    window.open(&link).await;
    let page = window.text().await;
    assert!(page.contains("Confirm your email address"), "{page}");
    window.click(r#"form[action="/verify"] button"#).await;
    // A final outcome: the success URL, told which outcome and in which language.
    let landed_on = format!("{success_url}?outcome=verified&lang=en");
    let landed = window.lands_on(&landed_on).await;
    assert_eq!(
        landed,
        landed_on,
        "the browser did not follow the redirect: {}",
        window.text().await
    );
    assert!(window.text().await.contains("Welcome back"));
    assert!(app.status("user-1").await.unwrap().email_verified);
    window.quit().await;
}
