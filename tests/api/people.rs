//! The person in front of the link ("Link pages and mails, refined", API.md): pages in the
//! flow's language, times for people, masks that tell a change's addresses apart, what
//! "this wasn't me" does by whose inbox it came from, a page for every route and status,
//! no button that can only fail, and mails that read well.

use std::time::Duration;

use tonic::Code;

use crate::helpers::{Backend, TestApp, assert_reason, expect_err, spawn_app, spawn_app_with};

/// The `lang` attribute of a page.
fn lang_of(html: &str) -> &str {
    html.split("<html lang=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

async fn page(app: &TestApp, path: &str, accept_language: &str) -> (u16, String) {
    let resp = app
        .http
        .get(format!("{}{path}", app.http_base))
        .header("accept-language", accept_language)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn a_nepali_flows_pages_speak_nepali_and_have_the_button_its_mail_names(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification_in("user-1", "sita@example.com", "ne")
        .await
        .unwrap();
    let mail = app.next_mail().await;
    // The browser asks for English; the flow's language wins.
    let link = app.link_in(&mail);
    let path = link.trim_start_matches(&app.http_base).to_owned();
    let (status, html) = page(&app, &path, "en-US,en;q=0.9").await;
    assert_eq!(status, 200);
    assert_eq!(lang_of(&html), "ne", "{html}");
    // The mail tells the reader to press “यो मैले गरेको होइन”: the page has that very button.
    assert!(mail.text.contains("“यो मैले गरेको होइन”"), "{}", mail.text);
    assert!(html.contains(">यो मैले गरेको होइन</button>"), "{html}");
    assert!(html.contains(">पुष्टि गर्नुहोस्</button>"), "{html}");
    assert!(
        !html.contains("Confirm"),
        "no English on a Nepali page: {html}"
    );

    // An English flow's page is English, whatever the browser asks.
    app.request_verification_in("user-2", "ram@example.com", "en")
        .await
        .unwrap();
    let link = app.link_in(&app.next_mail().await);
    let path = link.trim_start_matches(&app.http_base).to_owned();
    let (_, html) = page(&app, &path, "ne").await;
    assert_eq!(lang_of(&html), "en");
    assert!(html.contains(">This wasn’t me</button>"), "{html}");

    // Without a token, the browser's language: Nepali if asked for, else English.
    let (_, html) = page(&app, "/cancel", "ne-NP,ne;q=0.9,en;q=0.5").await;
    assert_eq!(lang_of(&html), "ne", "{html}");
    let (_, html) = page(&app, "/cancel", "de-DE").await;
    assert_eq!(lang_of(&html), "en", "{html}");
}

async fn every_route_and_status_answers_a_person_with_a_page(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in ["/verify", "/cancel", "/resend"] {
        let (status, html) = page(&app, path, "en").await;
        assert_eq!(status, 200, "{path}");
        assert!(
            html.contains("Open the link from your email"),
            "{path}: {html}"
        );
    }
    let (status, html) = page(&app, "/no/such/page", "en").await;
    assert_eq!(status, 404);
    assert!(
        html.contains("Page not found") && html.contains("<html"),
        "{html}"
    );
    let resp = app
        .http
        .put(format!("{}/verify", app.http_base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("cannot be opened this way")
    );

    // 429 says when to try again, in words and as a time.
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    let resp = app.post_form("/resend", &token).await;
    assert_eq!(resp.status(), 429);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("A new link was sent a moment ago") && html.contains("You can try again in"),
        "{html}"
    );
    assert!(
        html.contains("You can try again in 1 minute, at "),
        "{html}"
    );
    assert!(html.contains("\u{a0}UTC."), "{html}");
}

async fn this_wasnt_me_acts_by_whose_inbox_it_came_from(backend: Backend) {
    let app = spawn_app(backend).await;

    // From the CURRENT address: the change stops and changes freeze; the page says until
    // when and why.
    app.verified_user("user-1", "owner@example.com").await;
    app.request_change("user-1", "thief@example.org")
        .await
        .unwrap();
    let current = app.token_in(&app.next_mail().await);
    let resp = app.post_form("/cancel", &current).await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("no one can ask to change it until"), "{html}");
    assert!(
        html.contains("UTC") && html.contains("take it over"),
        "{html}"
    );
    assert_reason(
        &expect_err(app.request_change("user-1", "thief@example.org").await),
        Code::FailedPrecondition,
        "CHANGE_FROZEN",
    );

    // From the NEW address (its owner never asked to join this account): cancelled, and
    // the account's owner is not frozen out.
    app.verified_user("user-2", "mina@example.com").await;
    app.request_change("user-2", "mina.new@example.org")
        .await
        .unwrap();
    let first = app.token_in(&app.next_mail().await);
    app.confirm(&first).await.unwrap();
    let new = app.token_in(&app.next_mail().await);
    let resp = app.post_form("/cancel", &new).await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("Change cancelled") && !html.contains("until"),
        "{html}"
    );
    let status = app.status("user-2").await.unwrap();
    assert!(status.pending.is_none());
    assert_eq!(status.email, "mina@example.com");
    app.request_change("user-2", "mina.other@example.org")
        .await
        .expect("no freeze after a report from the new address");
    app.next_mail().await;

    // A sign-up's address: cancelled and taken off the user.
    app.request_verification("user-3", "typo@example.com")
        .await
        .unwrap();
    let signup = app.token_in(&app.next_mail().await);
    let resp = app.post_form("/cancel", &signup).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("Address removed"));
    let status = app.status("user-3").await.unwrap();
    assert!(status.pending.is_none());
    assert_eq!(status.email, "", "the unverified address is gone");
    assert!(!status.email_verified);
    app.assert_no_mail().await;
}

async fn a_changes_two_addresses_read_apart_in_mails_and_pages(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.support_contact = "help@wallet.example".into();
        s.time_zone = "Asia/Kathmandu".into();
    })
    .await;
    app.verified_user("user-1", "bikash@example.com.np").await;
    app.request_change("user-1", "bikash.new@example.com.np")
        .await
        .unwrap();
    let to_current = app.next_mail().await;
    assert!(
        to_current.text.contains("b***w@example.com.np"),
        "{}",
        to_current.text
    );
    let (_, html) = page(
        &app,
        &format!("/verify?token={}", app.token_in(&to_current)),
        "en",
    )
    .await;
    assert!(
        html.contains("b***h@example.com.np"),
        "this was sent to the old one: {html}"
    );
    app.confirm(&app.token_in(&to_current)).await.unwrap();
    let to_new = app.next_mail().await;
    assert!(
        to_new.text.contains("b***h@example.com.np"),
        "{}",
        to_new.text
    );
    app.confirm(&app.token_in(&to_new)).await.unwrap();
    let notice = app.next_mail().await;
    assert!(
        notice
            .text
            .contains("from b***h@example.com.np to b***w@example.com.np"),
        "{}",
        notice.text
    );
    // A time for people, in the configured zone; the support contact named; no reply asked.
    assert!(notice.text.contains("(Nepal\u{a0}Time)"), "{}", notice.text);
    assert!(!has_rfc3339(&notice.text), "{}", notice.text);
    assert!(
        notice.text.contains("contact help@wallet.example"),
        "{}",
        notice.text
    );
    assert!(!notice.text.contains("reply"), "{}", notice.text);
}

async fn a_nepali_notice_is_nepali_throughout_and_mails_use_typographic_marks(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "old@example.com").await;
    app.request_change_in("user-1", "new@example.com", "ne")
        .await
        .unwrap();
    let first = app.next_mail().await;
    app.confirm(&app.token_in(&first)).await.unwrap();
    let second = app.next_mail().await;
    app.confirm(&app.token_in(&second)).await.unwrap();
    let notice = app.next_mail().await;
    // No English words slip into a Nepali notice (the default support contact was one).
    let latin_words: Vec<&str> = notice
        .text
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| w.len() > 2 && !["Help", "UTC", "example", "com"].contains(w))
        .collect();
    assert!(latin_words.is_empty(), "{latin_words:?} in {}", notice.text);
    assert!(notice.raw.contains("Auto-Submitted: auto-generated"));
    for mail in [&first, &second, &notice] {
        assert!(
            !mail.text.contains('"') && !mail.text.contains(" - "),
            "{}",
            mail.text
        );
    }
    // A Nepali time: Devanagari digits, no raw stamp.
    assert!(
        !has_rfc3339(&notice.text) && notice.text.contains("UTC"),
        "{}",
        notice.text
    );
    assert!(
        notice.text.chars().any(|c| ('०'..='९').contains(&c)),
        "{}",
        notice.text
    );
}

async fn a_finished_flows_old_links_offer_no_buttons_that_can_only_fail(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    app.cancel("user-1").await.unwrap();
    app.clock.advance(Duration::from_secs(25 * 3600));
    // Cancelled and expired: neither a new link nor "this wasn't me" can work.
    let (status, html) = page(&app, &format!("/verify?token={token}"), "en").await;
    assert_eq!(status, 410);
    assert!(html.contains("This request was cancelled"), "{html}");
    assert!(!html.contains("<form"), "no buttons: {html}");

    // A pending flow's expired link offers both, and the new link works.
    app.request_verification("user-2", "ram@example.com")
        .await
        .unwrap();
    let old = app.token_in(&app.next_mail().await);
    app.clock.advance(Duration::from_secs(25 * 3600));
    let (status, html) = page(&app, &format!("/verify?token={old}"), "en").await;
    assert_eq!(status, 410);
    assert!(
        html.contains(r#"action="/resend""#) && html.contains(r#"action="/cancel""#),
        "{html}"
    );
}

async fn the_focus_ring_and_text_meet_wcag_contrast_and_reflow(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, html) = page(&app, "/cancel", "en").await;
    let css = html
        .split("<style>")
        .nth(1)
        .and_then(|rest| rest.split("</style>").next())
        .unwrap()
        .to_owned();
    let ring = css
        .split("focus-visible{outline:3px solid ")
        .nth(1)
        .map(|rest| &rest[..7])
        .expect("a visible focus ring");
    let ratio = contrast(ring, "#ffffff");
    assert!(
        ratio >= 3.0,
        "focus ring {ring} on the white card: {ratio:.2}:1"
    );
    assert!(
        css.contains("overflow-wrap:anywhere"),
        "long addresses wrap: {css}"
    );
}

/// Whether a text holds a raw RFC 3339 stamp (a digit, `T`, a digit).
fn has_rfc3339(text: &str) -> bool {
    text.as_bytes()
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == b'T' && w[2].is_ascii_digit())
}

/// WCAG 2.2 contrast ratio of two `#rrggbb` colours.
fn contrast(a: &str, b: &str) -> f64 {
    fn luminance(hex: &str) -> f64 {
        let channel = |i: usize| {
            let c = u8::from_str_radix(&hex[i..i + 2], 16).unwrap() as f64 / 255.0;
            if c <= 0.03928 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
    }
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

#[test]
fn the_contrast_formula_matches_known_pairs() {
    assert!((contrast("#000000", "#ffffff") - 21.0).abs() < 0.01);
    // The old focus ring: 1.9:1, below the 3:1 WCAG asks.
    assert!(contrast("#f9ab00", "#ffffff") < 2.0);
}

crate::on_both_backends!(
    a_nepali_flows_pages_speak_nepali_and_have_the_button_its_mail_names,
    every_route_and_status_answers_a_person_with_a_page,
    this_wasnt_me_acts_by_whose_inbox_it_came_from,
    a_changes_two_addresses_read_apart_in_mails_and_pages,
    a_nepali_notice_is_nepali_throughout_and_mails_use_typographic_marks,
    a_finished_flows_old_links_offer_no_buttons_that_can_only_fail,
    the_focus_ring_and_text_meet_wcag_contrast_and_reflow,
);
