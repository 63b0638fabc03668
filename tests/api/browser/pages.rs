//! Every page a flow has, in a real browser, in English and Nepali, with screenshots at a
//! desktop and a phone size (`target/browser-screenshots/`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Driver, Session, browser, needed_or_skip};
use crate::helpers::{Backend, poll_until};

/// axe-core's script (`npm install --prefix target/axe axe-core`, as `.ci/run` does), or
/// `EMAILVERIFY_AXE_JS`. Without it the accessibility check says so and is skipped,
/// except under `CI=true`.
fn axe_source() -> Option<&'static str> {
    static SOURCE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SOURCE
        .get_or_init(|| {
            let path = std::env::var("EMAILVERIFY_AXE_JS")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("target/axe/node_modules/axe-core/axe.min.js")
                });
            match std::fs::read_to_string(&path) {
                Ok(source) => Some(source),
                Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                    panic!("axe-core is needed under CI ({}): {e}", path.display())
                }
                Err(e) => {
                    eprintln!("SKIPPED the axe-core check: {} ({e})", path.display());
                    None
                }
            }
        })
        .as_deref()
}

impl Session<'_> {
    /// Waits (at most 15 s) until the page shows `text`; gives what it shows then.
    pub(super) async fn shows(&self, text: &str) -> String {
        poll_until(Duration::from_secs(15), async || {
            let now = self.text().await;
            now.contains(text).then_some(now)
        })
        .await
        .unwrap_or_else(|| panic!("the page never showed {text:?}"))
    }

    pub(super) async fn script(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Screenshots of the page at a desktop and a phone size, light and dark, under
    /// `target/browser-screenshots/<name>-{desktop,phone}[-dark].png`; axe-core must find
    /// no violation in any of the four; at the phone size the text is also doubled
    /// (WCAG's 200 % text size) and must still fit the width.
    pub(super) async fn snap(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        for (size, width, height) in [("desktop", 1280, 900), ("phone", 390, 844)] {
            self.cmd(
                reqwest::Method::POST,
                "/window/rect",
                Some(json!({ "width": width, "height": height })),
            )
            .await;
            for scheme in ["light", "dark"] {
                self.color_scheme(scheme).await;
                let png = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
                let png = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    png.as_str().unwrap_or_default(),
                )
                .unwrap();
                let suffix = if scheme == "dark" { "-dark" } else { "" };
                std::fs::write(dir.join(format!("{name}-{size}{suffix}.png")), png).unwrap();
                self.axe(&format!("{name} {size} {scheme}")).await;
            }
        }
        self.color_scheme("light").await;
        let fits = self
            .script(
                "document.body.style.fontSize = '32px';\
                 const fits = document.documentElement.scrollWidth <= window.innerWidth;\
                 document.body.style.fontSize = ''; return fits;",
            )
            .await;
        assert_eq!(
            fits, true,
            "{name}: at 200 % text on a phone the page runs past the screen"
        );
    }

    /// A Chrome DevTools command, through chromedriver.
    pub(super) async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
    }

    /// Emulates `prefers-color-scheme` (`light` or `dark`); the page's own colours must
    /// then follow (checked on the body's background).
    async fn color_scheme(&self, scheme: &str) {
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
        )
        .await;
        let dark = self
            .script("return getComputedStyle(document.body).backgroundColor === 'rgb(13, 17, 23)';")
            .await;
        assert_eq!(
            dark,
            scheme == "dark",
            "the page ignores prefers-color-scheme: {scheme}"
        );
    }

    /// axe-core on the page as it is: no violation (`what` names the page in the failure).
    pub(super) async fn axe(&self, what: &str) {
        let Some(source) = axe_source() else {
            return;
        };
        self.script(&format!("{source}\n;return true;")).await;
        let found = self
            .cmd(
                reqwest::Method::POST,
                "/execute/async",
                Some(json!({
                    "script": "const done = arguments[arguments.length - 1];\
                        axe.run(document, { resultTypes: ['violations'] })\
                          .then(r => done(r.violations.map(v => v.id + ': ' + v.nodes.map(n => n.html).join(' | '))))\
                          .catch(e => done(['axe failed: ' + e]));",
                    "args": [],
                })),
            )
            .await;
        assert_eq!(found, json!([]), "axe-core on {what}");
    }

    pub(super) async fn lang(&self) -> String {
        self.script("return document.documentElement.lang;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A person meets every page a flow has, in a real browser, in English and in Nepali:
/// sign-up, a change in Nepali, an expired link renewed, "this wasn't me" from each address
/// of a change, and a reopened result page. Screenshots of each page at a desktop and a
/// phone size go to `target/browser-screenshots/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_meets_every_page_in_a_real_browser_in_english_and_nepali() {
    let Some((chromium, driver)) = needed_or_skip(
        "a_person_meets_every_page_in_a_real_browser_in_english_and_nepali",
        browser(),
    ) else {
        return;
    };
    let app = crate::helpers::spawn_app(Backend::Sqlite).await;
    let driver = Driver::start(&driver).await;
    let profile = tempfile::tempdir().unwrap();
    let w = driver.session(&chromium, profile.path()).await;

    // Sign-up, in English.
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    w.open(&app.link_in(&app.next_mail().await)).await;
    let page = w.shows("Confirm your email address").await;
    assert!(
        page.contains("This wasn’t me") && page.contains("j***@example.com"),
        "{page}"
    );
    assert_eq!(w.lang().await, "en");
    w.snap("verify-en").await;
    w.click(r#"form[action="/verify"] button"#).await;
    w.shows("Email address confirmed").await;
    w.snap("verified-en").await;
    assert!(app.status("user-1").await.unwrap().email_verified);

    // A change, in Nepali: both links, both pages in Nepali, the masks apart.
    app.verified_user("user-2", "bikash@example.com.np").await;
    app.request_change_in("user-2", "bikash.new@example.com.np", "ne")
        .await
        .unwrap();
    let first = app.link_in(&app.next_mail().await);
    w.open(&first).await;
    let page = w.shows("परिवर्तन पुष्टि गर्नुहोस्").await;
    assert!(
        page.contains("यो मैले गरेको होइन")
            && page.contains("b***h@example.com.np")
            && page.contains("नयाँ ठेगाना b***w@example.com.np हुनेछ"),
        "{page}"
    );
    assert_eq!(w.lang().await, "ne");
    w.snap("change-current-ne").await;
    w.click(r#"form[action="/verify"] button"#).await;
    w.shows("नयाँ इमेल ठेगानाको इनबक्स").await;
    w.snap("change-current-confirmed-ne").await;
    // The first link again while the change waits: what was done, and it can still stop.
    w.open(&first).await;
    let page = w.shows("तपाईंले यो परिवर्तन पहिले नै पुष्टि गर्नुभएको छ").await;
    assert!(!page.contains("अरू केही गर्नुपर्दैन"), "{page}");
    w.snap("used-pending-ne").await;
    w.open(&app.link_in(&app.next_mail().await)).await;
    let page = w.shows("नयाँ ठेगाना पुष्टि गर्नुहोस्").await;
    assert!(page.contains("b***w@example.com.np"), "{page}");
    w.snap("change-new-ne").await;
    w.click(r#"form[action="/verify"] button"#).await;
    w.shows("इमेल ठेगाना परिवर्तन भयो").await;
    w.snap("changed-ne").await;
    assert_eq!(
        app.status("user-2").await.unwrap().email,
        "bikash.new@example.com.np"
    );
    app.next_mail().await; // the notice to the old address

    // An expired link: "Send me a new link", and the new mail's link works.
    app.request_verification("user-3", "ram@example.com")
        .await
        .unwrap();
    let old = app.link_in(&app.next_mail().await);
    app.clock.advance(Duration::from_secs(25 * 3600));
    w.open(&old).await;
    w.shows("This link has expired").await;
    w.snap("expired-en").await;
    w.click(r#"form[action="/resend"] button"#).await;
    w.shows("A new link is on its way").await;
    w.snap("resent-en").await;
    w.open(&app.link_in(&app.next_mail().await)).await;
    w.shows("Confirm your email address").await;
    w.click(r#"form[action="/verify"] button"#).await;
    w.shows("Email address confirmed").await;
    assert!(app.status("user-3").await.unwrap().email_verified);

    // "This wasn't me" from the CURRENT address: stopped, frozen, and the page says until when.
    app.verified_user("user-4", "owner@example.com").await;
    app.request_change("user-4", "thief@example.org")
        .await
        .unwrap();
    w.open(&app.link_in(&app.next_mail().await)).await;
    w.shows("Confirm the change").await;
    w.click(r#"form[action="/cancel"] button"#).await;
    let page = w.shows("Change stopped").await;
    assert!(page.contains("no one can ask to change it until"), "{page}");
    w.snap("reported-current-en").await;
    assert!(
        app.request_change("user-4", "thief@example.org")
            .await
            .is_err()
    );

    // From the NEW address: cancelled, nothing frozen.
    app.verified_user("user-5", "mina@example.com").await;
    app.request_change("user-5", "mina.new@example.org")
        .await
        .unwrap();
    app.confirm(&app.token_in(&app.next_mail().await))
        .await
        .unwrap();
    w.open(&app.link_in(&app.next_mail().await)).await;
    w.shows("Confirm your new email address").await;
    w.click(r#"form[action="/cancel"] button"#).await;
    w.shows("Change cancelled").await;
    w.snap("reported-new-en").await;
    let status = app.status("user-5").await.unwrap();
    assert!(status.pending.is_none() && status.email == "mina@example.com");

    // The browser now sits on /cancel: reopening it says where the link is.
    w.open(&format!("{}/cancel", app.http_base)).await;
    w.shows("Open the link from your email").await;
    w.snap("reopened-en").await;
    w.open(&format!("{}/nowhere", app.http_base)).await;
    w.shows("Page not found").await;
    w.snap("not-found-en").await;

    // The same token-less pages for a Nepali browser (a region, as phones send it).
    let agent = w.script("return navigator.userAgent;").await;
    w.cdp(
        "Emulation.setUserAgentOverride",
        json!({ "userAgent": agent, "acceptLanguage": "ne-NP,ne;q=0.9" }),
    )
    .await;
    w.open(&format!("{}/cancel", app.http_base)).await;
    w.shows("आफ्नो इमेलको लिङ्क खोल्नुहोस्").await;
    assert_eq!(w.lang().await, "ne");
    w.snap("reopened-ne").await;
    w.open(&format!("{}/nowhere", app.http_base)).await;
    w.shows("पेज भेटिएन").await;
    w.snap("not-found-ne").await;
    w.quit().await;
}
