//! The link pages, round three (API.md, release 3; issue 22): the success URL only for a
//! final outcome, pages that tell the truth about a finished link, a flow with no locale,
//! the change page naming its target, and the smaller pages (415, cross-site, waits).

use std::time::Duration;

use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};

/// A POST of the page's form, as a browser asking for `accept_language` sends it.
async fn press(
    app: &TestApp,
    path: &str,
    token: &str,
    accept_language: &str,
) -> (u16, String, String) {
    let resp = app
        .http
        .post(format!("{}{path}", app.http_base))
        .header("accept-language", accept_language)
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (resp.status().as_u16(), location, resp.text().await.unwrap())
}

async fn open(app: &TestApp, path: &str, accept_language: &str) -> (u16, String) {
    let resp = app
        .http
        .get(format!("{}{path}", app.http_base))
        .header("accept-language", accept_language)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn lang_of(html: &str) -> &str {
    html.split(r#"<html lang=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
}

async fn the_success_url_is_for_final_outcomes_only_with_outcome_and_lang(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.success_url = Some("https://wallet.example/done?from=mail".into())
    })
    .await;
    // A sign-up with no locale, from a Nepali browser: verified, in Nepali.
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    let (status, location, _) = press(&app, "/verify", &token, "ne-NP,en;q=0.5").await;
    assert_eq!(status, 303);
    assert_eq!(
        location,
        "https://wallet.example/done?from=mail&outcome=verified&lang=ne"
    );

    // A change: its first step shows the built-in "now check your new inbox" page.
    app.verified_user("user-2", "bikash@example.com.np").await;
    app.request_change_in("user-2", "bikash.new@example.com.np", "en")
        .await
        .unwrap();
    let first = app.token_in(&app.next_mail().await);
    let (status, location, html) = press(&app, "/verify", &first, "ne").await;
    assert_eq!(status, 200, "{location}");
    assert!(html.contains("Now check your new inbox"), "{html}");
    assert!(html.contains("b***w@example.com.np"), "{html}");
    // Its last step redirects, with the flow's language (not the browser's).
    let second = app.token_in(&app.next_mail().await);
    let (status, location, _) = press(&app, "/verify", &second, "ne").await;
    assert_eq!(status, 303);
    assert_eq!(
        location,
        "https://wallet.example/done?from=mail&outcome=changed&lang=en"
    );
}

/// The back button after Confirm, then "This wasn't me" (or Confirm again): the page says
/// what became of the address, when, and how to reach support — for every way a flow
/// ends — and offers no button that can only fail.
async fn a_finished_links_buttons_tell_what_happened_and_when(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.support_contact = "help@wallet.example".into()
    })
    .await;
    // Verified.
    app.request_verification_in("user-1", "jane@example.com", "en")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    assert_eq!(press(&app, "/verify", &token, "en").await.0, 200);
    for path in ["/cancel", "/verify"] {
        let (status, _, html) = press(&app, path, &token, "en").await;
        assert_eq!(status, if path == "/cancel" { 410 } else { 409 });
        assert!(
            html.contains("This address is already confirmed")
                && html.contains("j***@example.com was confirmed")
                && html.contains("\u{a0}UTC")
                && html.contains("contact help@wallet.example"),
            "{html}"
        );
        assert!(!html.contains("<form"), "no button can work: {html}");
        assert!(!html.contains("no longer active"), "{html}");
    }
    assert!(app.status("user-1").await.unwrap().email_verified);

    // Changed, in Nepali: from and to, masked apart.
    app.verified_user("user-2", "bikash@example.com.np").await;
    app.request_change_in("user-2", "bikash.new@example.com.np", "ne")
        .await
        .unwrap();
    let first = app.token_in(&app.next_mail().await);
    assert_eq!(press(&app, "/verify", &first, "en").await.0, 200);
    // The first link, used while the change waits for the new address: no "nothing more
    // to do", and "this wasn't me" still works.
    let (status, html) = open(&app, &format!("/verify?token={first}"), "en").await;
    assert_eq!(status, 409);
    assert!(
        html.contains("तपाईंले यो परिवर्तन पहिले नै पुष्टि गर्नुभएको छ")
            && html.contains("b***w@example.com.np")
            && html.contains(r#"action="/cancel""#),
        "{html}"
    );
    assert!(!html.contains("अरू केही गर्नुपर्दैन"), "{html}");
    let second = app.token_in(&app.next_mail().await);
    assert_eq!(press(&app, "/verify", &second, "en").await.0, 200);
    app.next_mail().await; // the notice to the old address
    let (status, _, html) = press(&app, "/cancel", &first, "en").await;
    assert_eq!(status, 410);
    assert_eq!(lang_of(&html), "ne");
    assert!(
        html.contains("यो परिवर्तन पहिले नै पूरा भइसकेको छ")
            && html.contains("b***h@example.com.np बाट b***w@example.com.np मा"),
        "{html}"
    );

    // Cancelled by the caller; replaced by a newer request.
    app.request_verification_in("user-3", "ram@example.com", "en")
        .await
        .unwrap();
    let cancelled = app.token_in(&app.next_mail().await);
    app.cancel("user-3").await.unwrap();
    let (status, _, html) = press(&app, "/cancel", &cancelled, "en").await;
    assert_eq!(status, 410);
    assert!(
        html.contains("This request was cancelled")
            && html.contains("r***@example.com was not confirmed by it"),
        "{html}"
    );
    app.request_verification_in("user-4", "sita@example.com", "en")
        .await
        .unwrap();
    let replaced = app.token_in(&app.next_mail().await);
    app.request_verification_in("user-4", "sita2@example.com", "en")
        .await
        .unwrap();
    app.next_mail().await;
    let (status, _, html) = press(&app, "/cancel", &replaced, "en").await;
    assert_eq!(status, 410);
    assert!(html.contains("This request was replaced"), "{html}");
}

/// The sign-up "Address removed" page promises no silence the service would break: a new
/// request for the address is mailed at once, and the page says so.
async fn the_address_removed_page_promises_only_what_happens(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification_in("user-1", "jane@example.com", "en")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    let (status, _, html) = press(&app, "/cancel", &token, "en").await;
    assert_eq!(status, 200);
    assert!(html.contains("Address removed"), "{html}");
    assert!(!html.contains("no more mail"), "{html}");
    assert!(html.contains("a new email will come"), "{html}");
    // And it does: another account asks, and the mail goes out.
    app.request_verification("user-2", "jane@example.com")
        .await
        .unwrap();
    assert_eq!(
        app.next_mail().await.to,
        vec!["jane@example.com".to_owned()]
    );
}

async fn an_empty_locale_follows_the_browser_and_mails_use_the_default(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.default_locale = "ne".into()).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let mail = app.next_mail().await;
    assert!(
        mail.subject.contains("इमेल ठेगाना पुष्टि"),
        "the default locale's mail: {}",
        mail.subject
    );
    let path = app
        .link_in(&mail)
        .trim_start_matches(&app.http_base)
        .to_owned();
    for (browser, want) in [
        ("ne-NP", "ne"),
        ("ne-NP,en;q=0.8", "ne"),
        ("en-US,en;q=0.9", "en"),
        ("ne;q=0, en;q=0.5", "en"),
        ("de", "en"),
    ] {
        let (status, html) = open(&app, &path, browser).await;
        assert_eq!(status, 200);
        assert_eq!(lang_of(&html), want, "{browser}");
    }
    // Token-less pages too.
    assert_eq!(lang_of(&open(&app, "/cancel", "ne-NP").await.1), "ne");
    assert_eq!(lang_of(&open(&app, "/cancel", "ne;q=0").await.1), "en");
    assert_eq!(lang_of(&open(&app, "/nowhere", "ne-NP").await.1), "ne");
    // A flow that chose English keeps it, whatever the default.
    app.request_verification_in("user-2", "ram@example.com", "en")
        .await
        .unwrap();
    assert!(app.next_mail().await.subject.contains("Confirm your email"));
}

async fn the_default_locale_must_be_one_the_service_speaks(backend: Backend) {
    let _ = backend;
    for bad in ["fr", "", "ne-NP-x", "english"] {
        let settings = emailverify::settings::Settings {
            default_locale: bad.into(),
            token_keys: Some(emailverify::domain::Keyring::generate_key_base64()),
            data_dir: std::env::temp_dir(),
            ..Default::default()
        };
        let Err(err) = settings.resolve() else {
            panic!("{bad:?} was accepted as EMAILVERIFY_DEFAULT_LOCALE");
        };
        let err = err.to_string();
        assert!(err.contains("EMAILVERIFY_DEFAULT_LOCALE"), "{bad}: {err}");
    }
}

async fn a_changes_first_page_names_the_masked_new_address(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "bikash@example.com.np").await;
    app.request_change_in("user-1", "bikash.new@example.com.np", "en")
        .await
        .unwrap();
    let path = app
        .link_in(&app.next_mail().await)
        .trim_start_matches(&app.http_base)
        .to_owned();
    let (status, html) = open(&app, &path, "en").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("The new address would be b***w@example.com.np.")
            && html.contains("This was sent to b***h@example.com.np."),
        "{html}"
    );
    assert!(
        !html.contains("bikash.new"),
        "never the whole address: {html}"
    );
}

async fn a_post_that_is_not_the_form_gets_a_page(backend: Backend) {
    let app = spawn_app(backend).await;
    let resp = app
        .http
        .post(format!("{}/verify", app.http_base))
        .header("content-type", "application/json")
        .header("accept-language", "ne-NP")
        .body(r#"{"token":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let html = resp.text().await.unwrap();
    assert_eq!(lang_of(&html), "ne");
    assert!(html.contains("पठाइएको कुरा हामीले पढ्न सकेनौं"), "{html}");
    let resp = app
        .http
        .post(format!("{}/cancel", app.http_base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", "A".repeat(8 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("We could not read what was sent")
    );
}

async fn a_cross_site_post_is_refused_in_the_flows_language(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification_in("user-1", "sita@example.com", "ne")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    let resp = app
        .http
        .post(format!("{}/cancel", app.http_base))
        .header("origin", "https://prize.example")
        .header("accept-language", "en")
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let html = resp.text().await.unwrap();
    assert_eq!(lang_of(&html), "ne", "{html}");
    assert!(app.status("user-1").await.unwrap().pending.is_some());
}

async fn a_wait_past_a_minute_is_said_in_minutes(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.resend_cooldown = "104s".into()).await;
    app.request_verification_in("user-1", "jane@example.com", "en")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    app.clock.advance(Duration::from_secs(1));
    let (status, _, html) = press(&app, "/resend", &token, "en").await;
    assert_eq!(status, 429);
    assert!(
        html.contains("You can try again in 2 minutes, at "),
        "{html}"
    );
    assert!(!html.contains("seconds"), "{html}");
}

/// Dark mode, and the Devanagari face for Devanagari only: declared with a
/// `unicode-range` of the Devanagari blocks, never as a family in the stack (where it
/// would draw English digits and punctuation).
async fn the_stylesheet_has_dark_mode_and_keeps_devanagari_to_its_script(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, html) = open(&app, "/cancel", "en").await;
    let css = html
        .split("<style>")
        .nth(1)
        .and_then(|rest| rest.split("</style>").next())
        .unwrap();
    assert!(css.contains("@media (prefers-color-scheme:dark)"), "{css}");
    assert!(html.contains(r#"<meta name="color-scheme" content="light dark">"#));
    let face = css
        .split("@font-face{")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("a Devanagari face");
    assert!(face.contains("unicode-range:U+0900-097F"), "{face}");
    let stack = css
        .split("font:16px/1.5 ")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap();
    assert!(!stack.contains("Noto Sans Devanagari"), "{stack}");
    assert!(stack.ends_with("sans-serif"), "{stack}");
}

crate::on_both_backends!(
    the_stylesheet_has_dark_mode_and_keeps_devanagari_to_its_script,
    the_success_url_is_for_final_outcomes_only_with_outcome_and_lang,
    a_finished_links_buttons_tell_what_happened_and_when,
    the_address_removed_page_promises_only_what_happens,
    an_empty_locale_follows_the_browser_and_mails_use_the_default,
    a_changes_first_page_names_the_masked_new_address,
    a_post_that_is_not_the_form_gets_a_page,
    a_cross_site_post_is_refused_in_the_flows_language,
    a_wait_past_a_minute_is_said_in_minutes,
);

#[tokio::test]
async fn a_default_locale_the_service_does_not_speak_is_refused() {
    the_default_locale_must_be_one_the_service_speaks(Backend::Sqlite).await;
}
