//! The console's pages: server-rendered HTML in the style of the link pages (the same
//! palette, type and focus ring; minijinja, auto-escaped), wider for tables of facts, dark
//! when the system is. The stylesheet is inline and allowed by its CSP hash; nothing else
//! may load, and no page needs JavaScript.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use jiff::tz::TimeZone;
use minijinja::{Environment, Value};
use sha2::{Digest, Sha256};

use super::texts::{say, texts};
use crate::domain::Locale;
use crate::domain::when::for_people;

/// Contrast (WCAG 2.2 AA), light: text #1f2328 and muted #57606a on white 15.8:1 and
/// 6.1:1; links and the blue button #0b57d0 6.6:1; the red #b3261e 6.5:1. Dark: text
/// #e6edf3 and muted #9da7b3 on #161b22 14.5:1 and 6.6:1; links #79b8ff 8.3:1; the
/// buttons keep white on #0b57d0 / #b3261e.
const CSS: &str = "body{margin:0;background:#f4f5f7;color:#1f2328;font:16px/1.5 -apple-system,'Segoe UI',Roboto,'Noto Sans Devanagari',sans-serif}header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:space-between;max-width:48rem;margin:0 auto;padding:1rem 1.5rem 0}header p{margin:0}.brand{font-weight:600}main{max-width:48rem;margin:0 auto;padding:1rem 1.5rem 2rem}.card{background:#fff;border-radius:.5rem;padding:1rem 1.5rem;margin:0 0 1rem}h1{font-size:1.4rem;margin:.5rem 0 1rem}h2{font-size:1.15rem;margin:0 0 .5rem}h1,h2,p,li{overflow-wrap:anywhere}ul,ol{padding-left:1.25rem;margin:.25rem 0}li{margin:0 0 .75rem}li p{margin:0}form{margin:.75rem 0 0}form.inline{margin:0}label{display:block;font-weight:600;margin:.75rem 0 .25rem}input,textarea{box-sizing:border-box;width:100%;font:inherit;padding:.5rem;border:1px solid #57606a;border-radius:.4rem;background:#fff;color:#1f2328}button,.button{display:inline-block;box-sizing:border-box;min-height:2.75rem;font:inherit;border-radius:.4rem;border:0;background:#0b57d0;color:#fff;cursor:pointer;padding:.5rem 1rem;margin:.5rem .5rem 0 0;text-decoration:none}button.danger,.button.danger{background:#b3261e}button.link{background:none;color:#0b57d0;text-decoration:underline;padding:0;min-height:auto;margin:0}a{color:#0b57d0}a:focus-visible,button:focus-visible,input:focus-visible,textarea:focus-visible{outline:3px solid #1f2328;outline-offset:2px}.muted{color:#57606a;font-size:.9rem}.notice{border-left:4px solid #0b57d0;padding:.5rem .75rem;background:#eef3fd}.problem{border-left:4px solid #b3261e;padding:.5rem .75rem;background:#fcefee}.blocked{color:#b3261e;font-weight:600}.addr{font-family:ui-monospace,monospace}@media (prefers-color-scheme:dark){body{background:#0d1117;color:#e6edf3}.card,input,textarea{background:#161b22;color:#e6edf3}input,textarea{border-color:#9da7b3}.muted{color:#9da7b3}a,button.link{color:#79b8ff}a:focus-visible,button:focus-visible,input:focus-visible,textarea:focus-visible{outline-color:#e6edf3}.notice{background:#161b22;border-color:#79b8ff}.problem{background:#161b22;border-color:#ff7b72}.blocked{color:#ff7b72}}";

const LAYOUT: &str = r#"<!doctype html>
<html lang="{{ lang }}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex"><meta name="referrer" content="same-origin"><title>{{ title }} · {{ t.console }}</title><style>{{ css|safe }}</style></head>
<body>
<header><p class="brand">{{ t.console }}</p>{% if agent %}<p>{{ signed_in }}</p><form class="inline" method="post" action="/support/sign-out"><input type="hidden" name="csrf" value="{{ csrf }}"><button type="submit" class="link">{{ t.sign_out }}</button></form>{% endif %}</header>
<main>
<h1>{{ title }}</h1>
{% if notice %}<p class="notice" role="status">{{ notice }}</p>{% endif %}
{% if problem %}<p class="problem" role="alert">{{ problem }}</p>{% endif %}
{% block content %}{% endblock %}
</main>
</body>
</html>"#;

const MESSAGE: &str = r#"{% extends "layout.html" %}{% block content %}{% if link %}<p><a href="{{ link }}">{{ link_label }}</a></p>{% endif %}{% endblock %}"#;

const SIGN_IN: &str = r#"{% extends "layout.html" %}{% block content %}<div class="card"><p>{{ t.sign_in_lead }}</p>
<form method="post" action="/support/sign-in">
<label for="name">{{ t.name_label }}</label><input id="name" name="name" autocomplete="username" required maxlength="32" value="{{ name }}">
<label for="token">{{ t.token_label }}</label><input id="token" name="token" type="password" autocomplete="current-password" required maxlength="256">
<button type="submit">{{ t.sign_in_button }}</button>
</form></div>{% endblock %}"#;

const FIND: &str = r#"{% extends "layout.html" %}{% block content %}<div class="card">
<form method="post" action="/support/find" role="search">
<input type="hidden" name="csrf" value="{{ csrf }}">
<label for="q">{{ t.find_label }}</label><input id="q" name="q" required maxlength="320" autocomplete="off" aria-describedby="q-hint">
<p id="q-hint" class="muted">{{ t.find_hint }}</p>
<button type="submit">{{ t.find_button }}</button>
</form></div>
{% if results %}<section class="card" aria-labelledby="found"><h2 id="found">{{ t.found_many }}</h2><ul>{% for r in results %}<li><a href="{{ r.href }}">{{ r.id }}</a></li>{% endfor %}</ul></section>{% endif %}{% endblock %}"#;

const CONFIRM: &str = r#"{% extends "layout.html" %}{% block content %}<div class="card"><p>{{ what }}</p>
<form method="post" action="/support/act">
<input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="id" value="{{ id }}"><input type="hidden" name="action" value="{{ action }}"><input type="hidden" name="addr" value="{{ addr }}">
<label for="reason">{{ t.reason_label }}</label><textarea id="reason" name="reason" required minlength="3" maxlength="200" rows="3" aria-describedby="reason-hint"></textarea>
<p id="reason-hint" class="muted">{{ t.reason_hint }}</p>
<button type="submit"{% if danger %} class="danger"{% endif %}>{{ t.confirm_button }}</button>
</form>
<p><a href="{{ back }}">{{ t.back }}</a></p></div>{% endblock %}"#;

/// Who is signed in, for the page's header (none on the sign-in and refusal pages).
#[derive(Default)]
pub struct Chrome<'a> {
    pub agent: Option<&'a str>,
    pub csrf: &'a str,
    /// A `Set-Cookie` the response carries (a session begun or ended).
    pub cookie: Option<String>,
}

pub struct Views {
    env: Environment<'static>,
    css_hash: String,
    time_zone: TimeZone,
}

impl Views {
    /// The console's own templates, with `pages` (a page kind's template kept beside
    /// the code that fills it, e.g. `customer.rs`).
    pub fn new(time_zone: TimeZone, pages: &[(&'static str, &'static str)]) -> Self {
        let mut env = Environment::new();
        let own = [
            ("layout.html", LAYOUT),
            ("message.html", MESSAGE),
            ("sign_in.html", SIGN_IN),
            ("find.html", FIND),
            ("confirm.html", CONFIRM),
        ];
        for &(name, source) in own.iter().chain(pages) {
            env.add_template(name, source)
                .expect("the console's templates parse");
        }
        let css_hash =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS.as_bytes()));
        Self {
            env,
            css_hash,
            time_zone,
        }
    }

    /// The console's Content-Security-Policy: its own stylesheet and forms, nothing else.
    pub fn content_security_policy(&self) -> String {
        format!(
            "default-src 'none'; style-src 'sha256-{}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            self.css_hash
        )
    }

    /// A time for people, in the page's language and the service's zone.
    pub fn when(&self, ms: i64, locale: Locale) -> String {
        for_people(ms, locale, &self.time_zone)
    }

    /// Renders `template` with `ctx` (a map) and the chrome every page has.
    pub fn render(
        &self,
        status: StatusCode,
        locale: Locale,
        template: &str,
        title: &str,
        ctx: Value,
        chrome: Chrome<'_>,
    ) -> Response {
        let signed_in = chrome
            .agent
            .map(|a| say(locale, "signed_in_as", &[a]))
            .unwrap_or_default();
        let page = minijinja::context! {
            css => CSS,
            lang => locale.as_tag(),
            t => Value::from_serialize(texts(locale)),
            title => title,
            agent => chrome.agent,
            signed_in => signed_in,
            csrf => chrome.csrf,
            ..ctx
        };
        let body = self
            .env
            .get_template(template)
            .and_then(|tpl| tpl.render(page));
        let mut resp = match body {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, template, "console template failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        };
        if let Some(cookie) = chrome.cookie
            && let Ok(v) = HeaderValue::from_str(&cookie)
        {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        resp
    }

    /// A page that only says something (a refusal, an outcome), with a link onward.
    #[allow(clippy::too_many_arguments)]
    pub fn message(
        &self,
        status: StatusCode,
        locale: Locale,
        title_key: &str,
        problem: &str,
        link: Option<(&str, &str)>,
        chrome: Chrome<'_>,
    ) -> Response {
        let t = texts(locale);
        let (href, label) = link.unwrap_or(("", ""));
        self.render(
            status,
            locale,
            "message.html",
            t.get(title_key).copied().unwrap_or(title_key),
            minijinja::context! {
                problem => problem,
                link => href,
                link_label => t.get(label).copied().unwrap_or(label),
            },
            chrome,
        )
    }
}
