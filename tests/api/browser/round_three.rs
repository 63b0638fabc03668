//! Round three in a real browser (issue 22): a Nepali browser on a flow with no locale,
//! a change with a success URL (its first step stays on our page, its last goes to the
//! wallet with `outcome` and `lang`), and the back button after Confirm, then "This
//! wasn't me": the page tells what became of the address and when. (Pressing "This
//! wasn't me" on a page kept from before is `links::round_three`'s
//! `a_finished_links_buttons_tell_what_happened_and_when`: here the browser keeps none.)

use emailverify::domain::Locale;
use emailverify::http::pages::texts::texts;
use serde_json::json;

use super::{Driver, browser, needed_or_skip, other_site};
use crate::helpers::{Backend, spawn_app_with};

impl super::Session<'_> {
    async fn back(&self) {
        self.cmd(reqwest::Method::POST, "/back", Some(json!({})))
            .await;
    }

    /// The font families Chromium drew the first element matching `css` with.
    async fn fonts_of(&self, css: &str) -> Vec<String> {
        self.cdp("DOM.enable", json!({})).await;
        self.cdp("CSS.enable", json!({})).await;
        let doc = self.cdp("DOM.getDocument", json!({})).await;
        let node = self
            .cdp(
                "DOM.querySelector",
                json!({ "nodeId": doc["root"]["nodeId"], "selector": css }),
            )
            .await;
        let fonts = self
            .cdp(
                "CSS.getPlatformFontsForNode",
                json!({ "nodeId": node["nodeId"] }),
            )
            .await;
        fonts["fonts"]
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|f| f["familyName"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the page now has a "This wasn't me" button.
    async fn can_report(&self) -> bool {
        self.script(r#"return !!document.querySelector('form[action="/cancel"] button');"#)
            .await
            == json!(true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_click_no_wrong_turn_in_a_real_browser() {
    let Some((chromium, driver)) =
        needed_or_skip("after_the_click_no_wrong_turn_in_a_real_browser", browser())
    else {
        return;
    };
    let (site, _site_server) = other_site().await;
    let success_url = format!("{site}/verified");
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.success_url = Some(success_url.clone());
        s.support_contact = "help@wallet.example".into();
    })
    .await;
    let driver = Driver::start(&driver).await;
    let profile = tempfile::tempdir().unwrap();
    let w = driver.session(&chromium, profile.path()).await;

    // A change with a success URL, in English: the first page names the new address, its
    // Confirm stays on our "now check your new inbox" page.
    app.verified_user("user-2", "bikash@example.com.np").await;
    app.request_change_in("user-2", "bikash.new@example.com.np", "en")
        .await
        .unwrap();
    w.open(&app.link_in(&app.next_mail().await)).await;
    let page = w.shows("Confirm the change").await;
    assert!(
        page.contains("The new address would be b***w@example.com.np."),
        "{page}"
    );
    w.snap("change-current-en").await;
    w.click(r#"form[action="/verify"] button"#).await;
    w.shows("Now check your new inbox").await;
    assert!(
        w.url().await.starts_with(&app.http_base),
        "{}",
        w.url().await
    );
    let second = app.link_in(&app.next_mail().await);
    w.open(&second).await;
    w.shows("Confirm your new email address").await;
    w.click(r#"form[action="/verify"] button"#).await;
    let landed_on = format!("{success_url}?outcome=changed&lang=en");
    assert_eq!(w.lands_on(&landed_on).await, landed_on);
    app.next_mail().await; // the notice to the old address

    // Back to the Confirm page (restored, or fetched again), then "This wasn't me".
    w.back().await;
    let page = w.shows("address").await;
    // The button's cookie evicted the Confirm page from the back/forward cache: the
    // browser asks again, and the link's page now tells the truth without a press.
    assert!(!w.can_report().await, "a stale live Confirm page: {page}");
    let page = if page.contains("This change is already done") {
        page
    } else {
        w.shows("This change is already done").await
    };
    assert!(
        page.contains("from b***h@example.com.np to b***w@example.com.np on")
            && page.contains("help@wallet.example"),
        "{page}"
    );
    w.snap("done-changed-en").await;
    // English text, digits and punctuation: never in the Devanagari face.
    let fonts = w.fonts_of("main p").await;
    assert!(
        !fonts.is_empty() && fonts.iter().all(|f| !f.contains("Devanagari")),
        "{fonts:?}"
    );

    // A Nepali browser, a sign-up with no locale: Nepali pages, the mail in the default
    // locale (English), and the success URL told `lang=ne`.
    let agent = w.script("return navigator.userAgent;").await;
    w.cdp(
        "Emulation.setUserAgentOverride",
        json!({ "userAgent": agent, "acceptLanguage": "ne-NP" }),
    )
    .await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let mail = app.next_mail().await;
    assert!(
        mail.subject.contains("Confirm your email"),
        "{}",
        mail.subject
    );
    w.open(&app.link_in(&mail)).await;
    w.shows("आफ्नो इमेल ठेगाना पुष्टि गर्नुहोस्").await;
    assert_eq!(w.lang().await, "ne");
    w.snap("verify-browser-ne").await;
    w.click(r#"form[action="/verify"] button"#).await;
    let landed_on = format!("{success_url}?outcome=verified&lang=ne");
    assert_eq!(w.lands_on(&landed_on).await, landed_on);
    w.back().await;
    let page = w.shows("इमेल ठेगाना").await;
    assert!(!w.can_report().await, "a stale live Confirm page: {page}");
    let page = if page.contains("यो ठेगाना पहिले नै पुष्टि भइसकेको छ")
    {
        page
    } else {
        w.shows("यो ठेगाना पहिले नै पुष्टि भइसकेको छ").await
    };
    assert!(page.contains("j***@example.com"), "{page}");
    assert_eq!(w.lang().await, "ne");
    w.snap("done-verified-ne").await;
    // Nepali text with Latin in it (the address, "UTC"): each script in its own face.
    let fonts = w.fonts_of("main p").await;
    assert!(
        fonts.iter().any(|f| f.contains("Devanagari"))
            && fonts.iter().any(|f| !f.contains("Devanagari")),
        "{fonts:?}"
    );
    assert!(app.status("user-1").await.unwrap().email_verified);
    w.quit().await;
}

/// The refusal pages a browser can meet without a wrong link: a POST from another site
/// (403, in the flow's language) and a form that is not the page's (415); and a change's
/// first page, the page after it, and that first link opened again while the second is
/// pending; then every other page a link leads to. Each in English and Nepali, at both sizes, light and dark: axe-core finds
/// nothing (`Session::snap`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_kind_passes_axe_in_both_languages() {
    let Some((chromium, driver)) =
        needed_or_skip("every_page_kind_passes_axe_in_both_languages", browser())
    else {
        return;
    };
    let (site, _site_server) = other_site().await;
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let driver = Driver::start(&driver).await;
    let profile = tempfile::tempdir().unwrap();
    let w = driver.session(&chromium, profile.path()).await;
    let agent = w.script("return navigator.userAgent;").await;
    let said = |locale: &str| -> [&'static str; 5] {
        match locale {
            "en" => [
                "Please use the link in your email",
                "We could not read what was sent",
                "Confirm the change of your email address",
                "Now check your new inbox",
                "You already confirmed this change",
            ],
            _ => [
                "कृपया आफ्नो इमेलको लिङ्क प्रयोग गर्नुहोस्",
                "पठाइएको कुरा हामीले पढ्न सकेनौं",
                "इमेल ठेगाना परिवर्तन पुष्टि गर्नुहोस्",
                "अब नयाँ इमेल ठेगानाको इनबक्स हेर्नुहोस्",
                "तपाईंले यो परिवर्तन पहिले नै पुष्टि गर्नुभएको छ",
            ],
        }
    };
    for locale in ["en", "ne"] {
        let [
            cross_site,
            unreadable,
            change_first,
            check_new,
            used_pending,
        ] = said(locale);
        w.cdp(
            "Emulation.setUserAgentOverride",
            json!({ "userAgent": agent, "acceptLanguage": locale }),
        )
        .await;
        let user = format!("refused-{locale}");
        app.request_verification_in(&user, &format!("{user}@example.com"), locale)
            .await
            .unwrap();
        let link = app.link_in(&app.next_mail().await);
        let token = link.split("token=").nth(1).expect("the link has a token");

        // Another site's form posts the real token: refused, nothing changed.
        w.open(&format!("{site}/prize?to={}&token={token}", app.http_base))
            .await;
        w.click("form button").await;
        w.shows(cross_site).await;
        assert_eq!(w.lang().await, locale);
        w.snap(&format!("cross-site-{locale}")).await;

        // On our own page, a form that is not the page's (text/plain): 415, a page.
        w.open(&link).await;
        w.script(
            "const f = document.createElement('form');\
             f.method = 'post'; f.action = '/verify'; f.enctype = 'text/plain';\
             const i = document.createElement('input'); i.name = 'token'; i.value = 'x';\
             f.appendChild(i); document.body.appendChild(f); f.submit(); return true;",
        )
        .await;
        w.shows(unreadable).await;
        assert_eq!(w.lang().await, locale);
        w.snap(&format!("unreadable-form-{locale}")).await;
        assert!(
            !app.status(&user).await.unwrap().email_verified,
            "a refused POST verified the address"
        );

        // A change in this language: its first page, the page after Confirm, and the
        // first link opened again while the second is pending.
        let changer = format!("changer-{locale}");
        app.verified_user(&changer, &format!("{changer}@example.com"))
            .await;
        app.request_change_in(&changer, &format!("{changer}.new@example.com"), locale)
            .await
            .unwrap();
        let first = app.link_in(&app.next_mail().await);
        w.open(&first).await;
        w.shows(change_first).await;
        w.snap(&format!("change-first-{locale}")).await;
        w.click(r#"form[action="/verify"] button"#).await;
        w.shows(check_new).await;
        w.snap(&format!("change-check-new-{locale}")).await;
        let second = app.link_in(&app.next_mail().await);
        w.open(&first).await;
        w.shows(used_pending).await;
        assert_eq!(w.lang().await, locale);
        w.snap(&format!("change-used-pending-{locale}")).await;

        // Every other page kind a link leads to, in this language too.
        let t = texts(if locale == "ne" {
            Locale::Ne
        } else {
            Locale::En
        });
        w.open(&second).await;
        w.shows(t.change_new.0).await;
        w.snap(&format!("change-new-{locale}")).await;
        w.click(r#"form[action="/verify"] button"#).await;
        w.shows(t.changed.0).await;
        w.snap(&format!("changed-{locale}")).await;
        app.next_mail().await; // the notice to the old address
        w.open(&first).await;
        w.shows(t.done_changed.0).await;
        w.snap(&format!("done-changed-{locale}")).await;

        let signer = format!("signer-{locale}");
        app.request_verification_in(&signer, &format!("{signer}@example.com"), locale)
            .await
            .unwrap();
        let link = app.link_in(&app.next_mail().await);
        w.open(&link).await;
        w.shows(t.verify.0).await;
        w.snap(&format!("verify-{locale}")).await;
        w.click(r#"form[action="/verify"] button"#).await;
        w.shows(t.verified.0).await;
        w.snap(&format!("verified-{locale}")).await;
        w.open(&link).await;
        w.shows(t.done_verified.0).await;
        w.snap(&format!("done-verified-{locale}")).await;

        // "This wasn't me": on a sign-up, from a change's current and new addresses.
        let stranger = format!("stranger-{locale}");
        app.request_verification_in(&stranger, &format!("{stranger}@example.com"), locale)
            .await
            .unwrap();
        w.open(&app.link_in(&app.next_mail().await)).await;
        w.click(r#"form[action="/cancel"] button"#).await;
        w.shows(t.reported_sign_up.0).await;
        w.snap(&format!("reported-sign-up-{locale}")).await;
        let owner = format!("owner-{locale}");
        app.verified_user(&owner, &format!("{owner}@example.com"))
            .await;
        app.request_change_in(&owner, &format!("{owner}.new@example.com"), locale)
            .await
            .unwrap();
        w.open(&app.link_in(&app.next_mail().await)).await;
        w.click(r#"form[action="/cancel"] button"#).await;
        w.shows(t.reported_frozen.0).await;
        w.snap(&format!("reported-current-{locale}")).await;
        let mover = format!("mover-{locale}");
        app.verified_user(&mover, &format!("{mover}@example.com"))
            .await;
        app.request_change_in(&mover, &format!("{mover}.new@example.com"), locale)
            .await
            .unwrap();
        app.confirm(&app.token_in(&app.next_mail().await))
            .await
            .unwrap();
        w.open(&app.link_in(&app.next_mail().await)).await;
        w.click(r#"form[action="/cancel"] button"#).await;
        w.shows(t.reported_change_new.0).await;
        w.snap(&format!("reported-new-{locale}")).await;

        // An expired link, and "Send me a new link" (last: the clock moves on a day).
        let late = format!("late-{locale}");
        app.request_verification_in(&late, &format!("{late}@example.com"), locale)
            .await
            .unwrap();
        let old = app.link_in(&app.next_mail().await);
        app.clock.advance(std::time::Duration::from_secs(25 * 3600));
        w.open(&old).await;
        w.shows(t.expired).await;
        w.snap(&format!("expired-{locale}")).await;
        w.click(r#"form[action="/resend"] button"#).await;
        w.shows(t.resent.0).await;
        w.snap(&format!("resent-{locale}")).await;
        app.next_mail().await; // the new link
    }
    w.quit().await;
}
