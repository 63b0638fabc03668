//! One customer's page: the address (masked, or in full after the audited "show"), each
//! address's block, the request in progress and its step with times in words, each mail's
//! fate with the mail server's status code, and the history newest first, in words.

use minijinja::Value;
use serde::Serialize;

use super::texts::{relative, say};
use super::view::Views;
use super::words;
use crate::core::support::{AddressRole, Customer, SuppressionCause};
use crate::core::{DeliveryState, EventView};
use crate::domain::{FlowKind, FlowStep, Locale};

pub const TEMPLATE: &str = r#"{% extends "layout.html" %}{% block content %}
<section class="card" aria-labelledby="h-address"><h2 id="h-address">{{ t.address_h }}</h2>
{% if addresses %}<ul>{% for a in addresses %}<li><p><strong>{{ a.role }}:</strong> <span class="addr">{{ a.shown }}</span></p>
{% if a.full %}<p class="muted">{{ t.shown_full }}</p>{% endif %}
{% if a.verified %}<p class="muted">{{ a.verified }}</p>{% endif %}
<p{% if a.blocked %} class="blocked"{% endif %}>{{ a.block }}</p>
{% if a.show_href %}<a class="button" href="{{ a.show_href }}">{{ t.act_show }}</a>{% endif %}{% if a.lift_href %}<a class="button" href="{{ a.lift_href }}">{{ t.act_lift }}</a>{% endif %}</li>{% endfor %}</ul>
{% else %}<p>{{ t.no_address }}</p>{% endif %}</section>
<section class="card" aria-labelledby="h-pending"><h2 id="h-pending">{{ t.pending_h }}</h2>
{% if pending %}<p>{{ pending.step }}</p><p>{{ pending.sent_to }}</p><p>{{ pending.delivery }}</p><p>{{ pending.expires }}</p><p class="muted">{{ pending.resend }}</p>
<a class="button" href="{{ pending.resend_href }}">{{ t.act_resend }}</a><a class="button danger" href="{{ pending.cancel_href }}">{{ t.act_cancel }}</a>
{% else %}<p>{{ t.no_pending }}</p>{% endif %}</section>
<section class="card" aria-labelledby="h-mails"><h2 id="h-mails">{{ t.mails_h }}</h2>
{% if mails %}<ul>{% for m in mails %}<li><p><strong>{{ m.what }}</strong></p><p>{{ m.state }}{% if m.detail %} — {{ m.detail }}{% endif %}</p><p class="muted">{{ m.when }} · {{ m.attempts }}</p></li>{% endfor %}</ul>
{% else %}<p>{{ t.no_mails }}</p>{% endif %}</section>
<section class="card" aria-labelledby="h-history"><h2 id="h-history">{{ t.history_h }}</h2>
{% if events %}<ol>{% for e in events %}<li><p>{{ e.words }}</p><p class="muted">{{ e.when }}{% if e.detail %} · {{ e.detail }}{% endif %}</p></li>{% endfor %}</ol>
{% else %}<p>{{ t.no_history }}</p>{% endif %}
{% if older %}<p><a href="{{ older }}">{{ t.older }}</a></p>{% endif %}{% if newest %}<p><a href="{{ newest }}">{{ t.newest }}</a></p>{% endif %}</section>
<section class="card" aria-labelledby="h-actions"><h2 id="h-actions">{{ t.actions_h }}</h2>
<a class="button danger" href="{{ erase_href }}">{{ t.act_erase }}</a>
<p><a href="/support/">{{ t.back_find }}</a></p></section>{% endblock %}"#;

#[derive(Serialize)]
struct AddressRow {
    role: String,
    shown: String,
    full: bool,
    verified: String,
    blocked: bool,
    block: String,
    show_href: String,
    lift_href: String,
}

#[derive(Serialize)]
struct PendingRow {
    step: String,
    sent_to: String,
    delivery: String,
    expires: String,
    resend: String,
    resend_href: String,
    cancel_href: String,
}

#[derive(Serialize)]
struct MailRow {
    what: String,
    state: String,
    detail: String,
    when: String,
    attempts: String,
}

#[derive(Serialize)]
struct EventRow {
    words: String,
    when: String,
    detail: String,
}

/// A console URL with its query (values form-encoded).
pub fn href(path: &str, query: &[(&str, &str)]) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    format!("{path}?{q}")
}

/// The customer page's context. `full`: the address of record in full (after "show");
/// `events`: one page of the history; `older`: the next page's cursor; `paged`: whether
/// this is not the newest page.
pub struct Facts<'a> {
    pub customer: &'a Customer,
    pub full: Option<&'a str>,
    pub events: &'a [EventView],
    pub older: &'a str,
    pub paged: bool,
    pub now: i64,
}

pub fn context(views: &Views, locale: Locale, f: Facts<'_>) -> Value {
    let c = f.customer;
    let id = c.user_id.as_str();
    let confirm = |action: &str, addr: &str| {
        href(
            "/support/confirm",
            &[("id", id), ("action", action), ("addr", addr)],
        )
    };
    let addresses: Vec<AddressRow> = c
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let record = a.role == AddressRole::Record;
            let full = record && f.full.is_some();
            let (blocked, block) = match &a.suppression {
                None => (false, say(locale, "not_blocked", &[])),
                Some(s) => match (s.cause, s.until) {
                    (SuppressionCause::Complained, _) | (_, None) => {
                        (true, say(locale, "blocked_complained", &[]))
                    }
                    (SuppressionCause::Bounced, Some(until)) => {
                        let when = format!(
                            "{} ({})",
                            views.when(until, locale),
                            relative(f.now, until, locale)
                        );
                        (true, say(locale, "blocked_bounced", &[&when]))
                    }
                },
            };
            let verified = match (record, c.status.email_verified, c.status.verified_at) {
                (true, true, Some(at)) => say(locale, "verified_since", &[&views.when(at, locale)]),
                (true, false, _) => say(locale, "not_verified", &[]),
                _ => String::new(),
            };
            AddressRow {
                role: say(
                    locale,
                    if record {
                        "role_record"
                    } else {
                        "role_changing_to"
                    },
                    &[],
                ),
                shown: if full {
                    f.full.unwrap_or_default().to_owned()
                } else {
                    a.masked.clone()
                },
                full,
                verified,
                blocked,
                block,
                show_href: if record && !full {
                    confirm("show", "0")
                } else {
                    String::new()
                },
                lift_href: if blocked {
                    confirm("lift", &i.to_string())
                } else {
                    String::new()
                },
            }
        })
        .collect();
    let pending = c.status.pending.as_ref().map(|p| {
        let step = match (p.kind, p.step) {
            (FlowKind::Verify, _) => "pending_verify",
            (FlowKind::Change, FlowStep::ConfirmCurrent) => "pending_change_current",
            (FlowKind::Change, _) => "pending_change_new",
        };
        let mut delivery = words::delivery(p.delivery, locale).to_owned();
        if !p.delivery_detail.is_empty() {
            delivery = format!("{delivery} — {}", p.delivery_detail);
        }
        let expires = format!(
            "{} ({})",
            relative(f.now, p.expires_at, locale),
            views.when(p.expires_at, locale)
        );
        PendingRow {
            step: say(locale, step, &[]),
            sent_to: say(locale, "sent_to", &[&p.masked_recipient]),
            delivery: say(locale, "link_mail", &[&delivery]),
            expires: say(locale, "expires", &[&expires]),
            resend: if p.resend_available_at <= f.now {
                say(locale, "resend_now", &[])
            } else {
                say(
                    locale,
                    "resend_when",
                    &[&relative(f.now, p.resend_available_at, locale)],
                )
            },
            resend_href: confirm("resend", "0"),
            cancel_href: confirm("cancel", "0"),
        }
    });
    let mails: Vec<MailRow> = c
        .mails
        .iter()
        .map(|m| MailRow {
            what: say(
                locale,
                "mail_line",
                &[words::template(m.template, locale), &m.masked_recipient],
            ),
            state: words::delivery(m.state, locale).to_owned(),
            detail: match m.state {
                DeliveryState::Queued | DeliveryState::Sent => String::new(),
                _ if m.detail.is_empty() => String::new(),
                _ => say(locale, "relay_said", &[&m.detail]),
            },
            when: say(locale, "queued_at", &[&views.when(m.queued_at, locale)]),
            attempts: say(locale, "attempts", &[&m.attempts.to_string()]),
        })
        .collect();
    let events: Vec<EventRow> = f
        .events
        .iter()
        .map(|e| EventRow {
            words: words::event(&e.event_type, &e.masked_address, locale),
            when: format!(
                "{} ({})",
                views.when(e.at, locale),
                relative(f.now, e.at, locale)
            ),
            detail: e.detail.clone(),
        })
        .collect();
    minijinja::context! {
        addresses => Value::from_serialize(&addresses),
        pending => pending.map(|p| Value::from_serialize(&p)),
        mails => Value::from_serialize(&mails),
        events => Value::from_serialize(&events),
        older => if f.older.is_empty() { String::new() } else { href("/support/customer", &[("id", id), ("page", f.older)]) },
        newest => if f.paged { href("/support/customer", &[("id", id)]) } else { String::new() },
        erase_href => confirm("erase", "0"),
    }
}
