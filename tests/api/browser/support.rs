//! The support console in a real browser (the same headless Chromium as the link pages):
//! an agent signs in, finds a customer whose mail bounced, opens an action's confirmation
//! and lifts the block — in English and in Nepali, at a desktop and a phone size. On every
//! page axe-core (`target/axe/node_modules/axe-core/axe.min.js`, or `AXE_CORE_JS`;
//! `.ci/run` installs it from npm) must find no violation of WCAG 2.1 A/AA or its best
//! practices, and the screenshots of each page go to `docs/support/` for docs/support.md.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Driver, ELEMENT, Session, browser, needed_or_skip};
use crate::helpers::{Backend, poll_until};
use crate::support::{Mode, bounced_customer, console_app};

/// axe-core's script, or why the test cannot run.
fn axe_source() -> Result<String, String> {
    let path = std::env::var("AXE_CORE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/axe/node_modules/axe-core/axe.min.js")
        });
    std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (npm install --prefix target/axe axe-core@4.11.0)",
            path.display()
        )
    })
}

/// The window sizes every page is checked and shot at.
const SIZES: [(&str, u32, u32); 2] = [("desktop", 1280, 900), ("phone", 390, 844)];

impl Session<'_> {
    async fn run(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Waits (at most 15 s) until the page shows `text`.
    async fn showing(&self, text: &str) -> String {
        let shown = poll_until(Duration::from_secs(15), async || {
            let now = self.text().await;
            now.contains(text).then_some(now)
        })
        .await;
        match shown {
            Some(page) => page,
            None => panic!("the page never showed {text:?}: {}", self.text().await),
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// axe-core on the page at each size (no violation allowed), and its screenshots at
    /// `docs/support/<name>-<size>.png`.
    async fn audit(&self, axe: &str, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/support");
        std::fs::create_dir_all(&dir).unwrap();
        for (size, width, height) in SIZES {
            self.cmd(
                reqwest::Method::POST,
                "/window/rect",
                Some(json!({ "width": width, "height": height })),
            )
            .await;
            if self.run("return typeof axe;").await != "object" {
                self.run(axe).await;
            }
            let violations = self
                .cmd(
                    reqwest::Method::POST,
                    "/execute/async",
                    Some(json!({
                        "script": "const done = arguments[arguments.length - 1];\
                            axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] })\
                              .then(r => done(r.violations.map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))))\
                              .catch(e => done(['axe failed: ' + e]));",
                        "args": [],
                    })),
                )
                .await;
            assert_eq!(
                violations,
                json!([]),
                "{name} at the {size} size: axe-core found violations"
            );
            let png = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
            let png = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                png.as_str().unwrap_or_default(),
            )
            .unwrap();
            std::fs::write(dir.join(format!("{name}-{size}.png")), png).unwrap();
        }
    }
}

impl Driver {
    /// A window whose browser asks for `lang` (`Accept-Language`).
    async fn window_in(
        &self,
        chromium: &PathBuf,
        profile: &std::path::Path,
        lang: &str,
    ) -> Session<'_> {
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.display()),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--no-pings".into(),
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication".into(),
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1".into(),
            "--proxy-server=http://127.0.0.1:9".into(),
            format!("--lang={lang}"),
        ];
        let value = self
            .send(
                reqwest::Method::POST,
                "/session",
                Some(json!({
                    "capabilities": { "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": {
                            "binary": chromium,
                            "args": args,
                            "prefs": { "intl": { "accept_languages": lang } },
                        },
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_uses_every_console_page_in_a_real_browser_with_no_axe_violation() {
    let found = browser().and_then(|b| axe_source().map(|axe| (b, axe)));
    let Some(((chromium, driver), axe)) = needed_or_skip("the console's browser test", found)
    else {
        return;
    };
    let app = console_app(Backend::Sqlite, Mode::Tokens).await;
    bounced_customer(&app, "user-1").await;
    bounced_customer_ne(&app).await;
    let driver = Driver::start(&driver).await;

    for (lang, customer, spelled, shows) in [
        (
            "en",
            "user-1",
            "janedoe@gmail.com",
            [
                "Find a customer",
                "Could not be delivered",
                "Confirm: Lift the block",
                "The block was lifted.",
            ],
        ),
        (
            "ne",
            "user-2",
            "RAM@example.com.np",
            [
                "ग्राहक खोज्नुहोस्",
                "पुर्‍याउन सकिएन",
                "पुष्टि गर्नुहोस्: रोक हटाउनुहोस्",
                "रोक हटाइयो।",
            ],
        ),
    ] {
        let profile = tempfile::tempdir().unwrap();
        let w = driver.window_in(&chromium, profile.path(), lang).await;
        w.open(&format!("{}/support/", app.admin_base)).await;
        w.showing(if lang == "en" {
            "Sign in"
        } else {
            "साइन इन"
        })
        .await;
        assert_eq!(w.run("return document.documentElement.lang;").await, lang);
        w.audit(&axe, &format!("sign-in-{lang}")).await;
        w.type_into("#name", "alice").await;
        w.type_into("#token", "correct-horse-battery-staple").await;
        w.click("form[action=\"/support/sign-in\"] button").await;
        w.showing(shows[0]).await;
        w.audit(&axe, &format!("find-{lang}")).await;

        w.type_into("#q", spelled).await;
        w.click("form[action=\"/support/find\"] button").await;
        w.showing(shows[1]).await;
        assert!(w.url().await.ends_with(&format!("id={customer}")));
        w.audit(&axe, &format!("customer-{lang}")).await;

        w.click("a.button[href*=\"action=lift\"]").await;
        w.showing(shows[2]).await;
        w.audit(&axe, &format!("confirm-{lang}")).await;
        w.type_into("#reason", "customer fixed the mailbox").await;
        w.click("form[action=\"/support/act\"] button").await;
        w.showing(shows[3]).await;
        w.audit(&axe, &format!("lifted-{lang}")).await;
        let sign_out = w.find("form[action=\"/support/sign-out\"] button").await;
        assert!(!sign_out.is_empty());
        let _ = ELEMENT;
        w.quit().await;
    }
    assert_eq!(app.count("suppressions").await, 0);
}

/// A second customer, whose mail went to a Nepali address and bounced.
async fn bounced_customer_ne(app: &crate::helpers::TestApp) {
    app.smtp.reply_next(&["550 5.1.1 no such user"]);
    app.request_verification_in("user-2", "ram@example.com.np", "ne")
        .await
        .unwrap();
    app.eventually_count("outbox WHERE state = 'dead'", 2).await;
    app.eventually_count("suppressions", 2).await;
}
