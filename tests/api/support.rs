//! The support console (issue 23) on the real server's admin port: an agent signs in (with
//! a token, or through a proxy's header), finds a customer whose mail bounced by another
//! spelling of the address, sees why, lifts the block, sends the link again — and the mail
//! arrives at the SMTP sink; every action is on the customer's trail (ListEvents) with the
//! agent's name and reason, and the full address shows only after the audited "show".
//! The refusals are in `support_refused.rs`.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{Backend, TestApp, spawn_app_with};

/// The agents of the tests' `EMAILVERIFY_SUPPORT_TOKENS`.
pub const TOKENS: &str = "alice:correct-horse-battery-staple,bob:0123456789abcdef01";
/// The header a proxy sets in the `header` mode.
pub const HEADER: &str = "X-Auth-Request-User";

/// How the console is entered.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Tokens,
    Header,
}

pub async fn console_app(backend: Backend, mode: Mode) -> TestApp {
    spawn_app_with(backend, |s| match mode {
        Mode::Tokens => {
            s.support_auth = Some("tokens".into());
            s.support_tokens = Some(TOKENS.into());
        }
        Mode::Header => s.support_auth = Some(format!("header:{HEADER}")),
    })
    .await
}

/// A browser of one agent on the console: its cookie, and the proxy's header if any.
pub struct Agent<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    pub cookie: Option<String>,
    pub header: Option<String>,
}

/// One answer: status, body, `Location`.
pub struct Page {
    pub status: StatusCode,
    pub body: String,
    pub location: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Page {
    /// The CSRF token of the page's forms.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF token in {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

impl<'a> Agent<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
            header: None,
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder, extra: &[(&str, &str)]) -> Page {
        let mut req = req;
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if let Some(name) = &self.header {
            req = req.header(HEADER, name);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        for set in resp.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap().to_owned();
            self.cookie = if pair.ends_with('=') {
                None
            } else {
                Some(pair)
            };
        }
        Page {
            status: resp.status(),
            location: resp
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned())
                .unwrap_or_default(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let url = format!("{}{path}", self.app.admin_base);
        let req = self.http.get(url);
        self.send(req, &[]).await
    }

    pub async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Page {
        let url = format!("{}{path}", self.app.admin_base);
        let req = self.http.post(url).form(form);
        self.send(req, extra).await
    }

    /// Signs in as the mode wants; the search page's CSRF token.
    pub async fn sign_in(&mut self, mode: Mode, name: &str, token: &str) -> String {
        match mode {
            Mode::Tokens => {
                let form = self.get("/support/").await;
                assert_eq!(form.status, 200);
                assert!(form.body.contains("name=\"token\""), "{}", form.body);
                let done = self
                    .post("/support/sign-in", &[("name", name), ("token", token)], &[])
                    .await;
                assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
                let cookie = done.headers["set-cookie"].to_str().unwrap();
                assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
            }
            Mode::Header => self.header = Some(name.to_owned()),
        }
        let home = self.get("/support/").await;
        assert_eq!(home.status, 200, "{}", home.body);
        assert!(home.body.contains(name), "the page names the agent");
        home.csrf()
    }

    /// Confirms `action` on user `id` with `reason` (the confirmation page first).
    pub async fn act(&mut self, id: &str, action: &str, addr: &str, reason: &str) -> Page {
        let confirm = self
            .get(&format!(
                "/support/confirm?id={id}&action={action}&addr={addr}"
            ))
            .await;
        assert_eq!(confirm.status, 200, "{}", confirm.body);
        assert!(confirm.body.contains("name=\"reason\""));
        let csrf = confirm.csrf();
        self.post(
            "/support/act",
            &[
                ("csrf", &csrf),
                ("id", id),
                ("action", action),
                ("addr", addr),
                ("reason", reason),
            ],
            &[],
        )
        .await
    }
}

/// The address the customer typed, and another spelling of the same inbox.
const TYPED: &str = "Jane.Doe+wallet@GoogleMail.com";
const STORED: &str = "Jane.Doe+wallet@googlemail.com";
const SPELLED: &str = "janedoe@gmail.com";

/// A customer whose link mail bounced (the relay said 550 5.1.1): the mail is dead and the
/// inbox suppressed.
pub async fn bounced_customer(app: &TestApp, user: &str) {
    app.smtp
        .reply_next(&["550 5.1.1 <jane.doe@googlemail.com>: no such user"]);
    app.request_verification(user, TYPED).await.unwrap();
    app.eventually_count("outbox WHERE state = 'dead'", 1).await;
    app.eventually_count("suppressions", 1).await;
}

async fn the_desk(backend: Backend, mode: Mode) {
    let app = console_app(backend, mode).await;
    bounced_customer(&app, "user-1").await;
    let (name, token) = ("alice", "correct-horse-battery-staple");
    let mut agent = Agent::new(&app);
    let csrf = agent.sign_in(mode, name, token).await;

    // Found by another spelling of the same inbox.
    let found = agent
        .post("/support/find", &[("csrf", &csrf), ("q", SPELLED)], &[])
        .await;
    assert_eq!(found.status, StatusCode::SEE_OTHER, "{}", found.body);
    assert_eq!(found.location, "/support/customer?id=user-1");
    let page = agent.get(&found.location).await;
    assert_eq!(page.status, 200);
    for why in [
        "Could not be delivered",
        "550 5.1.1",
        "Blocked: mail bounced (no such mailbox), until",
        "J***@googlemail.com",
        "Verifying an address",
        "Link to verify the address",
    ] {
        assert!(page.body.contains(why), "{why} missing from {}", page.body);
    }
    assert!(
        !page.body.contains(STORED),
        "the full address shows unasked"
    );
    assert!(
        !page.body.contains("mail_dead"),
        "event type names are not words"
    );
    for header in [
        "content-security-policy",
        "x-frame-options",
        "referrer-policy",
    ] {
        assert!(page.headers.contains_key(header), "{header}");
    }
    assert_eq!(page.headers["cache-control"], "no-store");

    // Without a reason nothing is done.
    let confirm = agent
        .get("/support/confirm?id=user-1&action=lift&addr=0")
        .await;
    let no_reason = agent
        .post(
            "/support/act",
            &[
                ("csrf", &confirm.csrf()),
                ("id", "user-1"),
                ("action", "lift"),
                ("addr", "0"),
                ("reason", " "),
            ],
            &[],
        )
        .await;
    assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.count("suppressions").await, 1);

    // Lift the block, then send the link again: it arrives.
    let lifted = agent
        .act("user-1", "lift", "0", "customer fixed the mailbox")
        .await;
    assert_eq!(lifted.status, StatusCode::SEE_OTHER, "{}", lifted.body);
    assert_eq!(app.count("suppressions").await, 0);
    assert!(
        agent
            .get(&lifted.location)
            .await
            .body
            .contains("The block was lifted.")
    );
    app.clock.advance(Duration::from_secs(61));
    let resent = agent
        .act("user-1", "resend", "0", "asked on the phone")
        .await;
    assert_eq!(resent.status, StatusCode::SEE_OTHER, "{}", resent.body);
    let mail = app.next_mail().await;
    assert_eq!(mail.to, vec![STORED.to_string()]);
    // The same limits as the API: at once again, the cooldown refuses it.
    let again = agent.act("user-1", "resend", "0", "asked again").await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        again.body.contains("A limit refused this"),
        "{}",
        again.body
    );

    // The full address, only after the audited "show".
    let shown = agent
        .act("user-1", "show", "0", "customer cannot read it")
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert!(shown.body.contains(STORED), "{}", shown.body);
    assert!(
        !agent
            .get("/support/customer?id=user-1")
            .await
            .body
            .contains(STORED)
    );

    let cancelled = agent.act("user-1", "cancel", "0", "customer gave up").await;
    assert_eq!(
        cancelled.status,
        StatusCode::SEE_OTHER,
        "{}",
        cancelled.body
    );
    assert!(app.status("user-1").await.unwrap().pending.is_none());

    // Every action is on the trail with the agent's name and reason (ListEvents).
    let events = app.events("user-1", 200, "").await.unwrap().events;
    let by = |kind: &str, reason: &str| {
        let want = format!("support:{name}: {reason}");
        assert!(
            events
                .iter()
                .any(|e| e.r#type == kind && e.detail.ends_with(&want)),
            "no {kind} by {want} in {events:#?}"
        );
    };
    by("suppression_lifted", "customer fixed the mailbox");
    by("link_resent", "asked on the phone");
    by("address_shown", "customer cannot read it");
    by("flow_cancelled", "customer gave up");
    // The history reads in words, newest first.
    let page = agent.get("/support/customer?id=user-1").await;
    let cancelled_at = page
        .body
        .find("The request in progress was cancelled")
        .unwrap();
    let lifted_at = page.body.find("Support lifted the block on").unwrap();
    assert!(cancelled_at < lifted_at, "newest first");

    // Erase: the customer is gone; one event stays, by the agent.
    let erased = agent.act("user-1", "erase", "0", "right to erasure").await;
    assert_eq!(erased.status, StatusCode::SEE_OTHER, "{}", erased.body);
    assert_eq!(app.count("users").await, 0);
    let erased_by = format!(
        "events WHERE event_type = 'user_erased' AND actor = 'support:{name}' \
         AND detail = 'support:{name}: right to erasure'"
    );
    assert_eq!(app.count(&erased_by).await, 1);
    assert_eq!(agent.get("/support/customer?id=user-1").await.status, 404);

    let metrics = app.metrics().await;
    for line in [
        "emailverify_support_actions_total{action=\"lift\",outcome=\"done\"}",
        "emailverify_support_actions_total{action=\"resend\",outcome=\"refused\"}",
        "emailverify_support_sign_ins_total",
    ] {
        assert!(metrics.contains(line), "{line}");
    }
}

async fn an_agent_signs_in_with_a_token_finds_the_customer_and_unblocks_them(backend: Backend) {
    the_desk(backend, Mode::Tokens).await;
}

async fn an_agent_behind_the_proxy_finds_the_customer_and_unblocks_them(backend: Backend) {
    the_desk(backend, Mode::Header).await;
}

async fn the_console_speaks_nepali_and_lists_several_customers_of_one_inbox(backend: Backend) {
    let app = console_app(backend, Mode::Header).await;
    app.request_verification("user-a", "jane+a@example.com")
        .await
        .unwrap();
    app.request_verification("user-b", "JANE+b@example.com")
        .await
        .unwrap();
    let mut agent = Agent::new(&app);
    let csrf = agent.sign_in(Mode::Header, "carol", "").await;
    let found = agent
        .post(
            "/support/find",
            &[("csrf", &csrf), ("q", "jane@example.com")],
            &[],
        )
        .await;
    assert_eq!(found.status, 200);
    assert!(found.body.contains("user-a") && found.body.contains("user-b"));
    let nepali = agent
        .post("/support/find", &[("csrf", &csrf), ("q", "user-a")], &[])
        .await;
    assert_eq!(nepali.location, "/support/customer?id=user-a");
    let url = format!("{}/support/customer?id=user-a", app.admin_base);
    let page = reqwest::Client::new()
        .get(url)
        .header(HEADER, "carol")
        .header("accept-language", "ne-NP,ne;q=0.9")
        .send()
        .await
        .unwrap();
    let body = page.text().await.unwrap();
    assert!(body.contains("lang=\"ne\""));
    assert!(body.contains("ठेगाना प्रमाणित गर्ने लिङ्क"), "{body}");
    // Neither a user id nor an address.
    let bad = agent
        .post(
            "/support/find",
            &[("csrf", &csrf), ("q", "not valid @@")],
            &[],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let none = agent
        .post(
            "/support/find",
            &[("csrf", &csrf), ("q", "nobody@example.com")],
            &[],
        )
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
}

async fn the_history_is_paged_newest_first(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.support_auth = Some(format!("header:{HEADER}"));
        s.resend_cooldown = "0s".into();
        s.limit_per_user = "100/1h".into();
        s.limit_per_recipient = "100/1h".into();
    })
    .await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    // 26 events at least: more than the 20 of a page.
    for _ in 0..25 {
        app.resend("user-1").await.unwrap();
    }
    let mut agent = Agent::new(&app);
    agent.sign_in(Mode::Header, "dave", "").await;
    let first = agent.get("/support/customer?id=user-1").await;
    let history = |page: &str| {
        let after = page
            .split("History, newest first")
            .nth(1)
            .unwrap_or_default();
        after
            .split("</ol>")
            .next()
            .unwrap_or_default()
            .matches("<li>")
            .count()
    };
    assert_eq!(history(&first.body), 20, "a page of 20");
    // The older pages, followed to the end (bounded): the oldest event is on the last.
    let older_link = |body: &str| {
        let p = body.find("page=")?;
        let at = body[..p].rfind("href=")?;
        let rest = &body[at + "href=\"".len()..];
        // As HTML escapes it.
        Some(
            rest[..rest.find('"')?]
                .replace("&amp;", "&")
                .replace("&#x2f;", "/"),
        )
    };
    let mut link = older_link(&first.body).expect("an older page");
    let mut last = String::new();
    for _ in 0..10 {
        let page = agent.get(&link).await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("Back to the newest"));
        last = page.body;
        match older_link(&last) {
            Some(next) => link = next,
            None => break,
        }
    }
    assert!(
        last.contains("Asked to verify an address"),
        "the oldest event is on the last page"
    );
    assert!(!first.body.contains("Asked to verify an address"));
    // A cursor that is not ours shows the newest page.
    assert_eq!(
        agent
            .get("/support/customer?id=user-1&page=nonsense")
            .await
            .status,
        200
    );
}

crate::on_both_backends!(
    the_history_is_paged_newest_first,
    an_agent_signs_in_with_a_token_finds_the_customer_and_unblocks_them,
    an_agent_behind_the_proxy_finds_the_customer_and_unblocks_them,
    the_console_speaks_nepali_and_lists_several_customers_of_one_inbox,
);
