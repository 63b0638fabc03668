//! A customer's page, an action's confirmation page, and the action itself. Every action
//! runs the core's own use-case (the API's paths and limits) as `support:<name>`, with
//! the agent's reason noted on the events it writes; its outcome shows on the customer's
//! page (after a redirect, so a reload does not repeat it).

use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::console::{Console, Entry, locale_of};
use super::customer::{self, Facts, href};
use super::texts::{relative, say, texts};
use crate::core::CoreError;
use crate::core::context;
use crate::domain::{Locale, UserId};

/// The actions, as their forms name them.
const ACTIONS: [&str; 5] = ["resend", "cancel", "lift", "erase", "show"];
/// Events per page of the history.
const HISTORY_PAGE: i32 = 20;

#[derive(Deserialize)]
pub(super) struct CustomerQuery {
    #[serde(default)]
    id: String,
    #[serde(default)]
    page: String,
    #[serde(default)]
    done: String,
}

/// `GET /support/customer?id=…[&page=…][&done=…]`.
pub(super) async fn customer(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<CustomerQuery>,
) -> Response {
    let locale = locale_of(&headers);
    let entry = match c.entry(&headers, locale) {
        Ok(e) => e,
        Err(page) => return page,
    };
    let notice = match q.done.as_str() {
        "resend" | "cancel" | "lift" => say(locale, &format!("done_{}", q.done), &[]),
        _ => String::new(),
    };
    c.customer_page(
        &headers, &entry, locale, &q.id, &q.page, None, &notice, None,
    )
    .await
}

impl Console {
    /// The customer's page (a problem or a notice above it, the address in full after
    /// "show").
    #[allow(clippy::too_many_arguments)]
    async fn customer_page(
        &self,
        headers: &HeaderMap,
        entry: &Entry,
        locale: Locale,
        id: &str,
        page: &str,
        full: Option<&str>,
        notice: &str,
        problem: Option<(StatusCode, String)>,
    ) -> Response {
        let Ok(user) = UserId::parse(id) else {
            return self.customer_missing(entry, locale);
        };
        let ctx = Console::context(entry, headers);
        let read = context::scope(ctx, async {
            let customer = self.core.customer(&user).await?;
            let (events, older) = match self.core.list_events(&user, HISTORY_PAGE, page).await {
                Err(CoreError::InvalidPageToken) => {
                    self.core.list_events(&user, HISTORY_PAGE, "").await?
                }
                other => other?,
            };
            Ok::<_, CoreError>((customer, events, older))
        })
        .await;
        let (customer, events, older) = match read {
            Ok(r) => r,
            Err(CoreError::UserNotFound) => return self.customer_missing(entry, locale),
            Err(e) => {
                tracing::error!(error.cause_chain = ?e, "support console read failed");
                return self.views.message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    locale,
                    "console",
                    texts(locale)["broken"],
                    Some(("/support/", "back_find")),
                    entry.chrome(),
                );
            }
        };
        let mut ctx = customer::context(
            &self.views,
            locale,
            Facts {
                customer: &customer,
                full,
                events: &events,
                older: &older,
                paged: !page.is_empty(),
                now: self.core.now_ms(),
            },
        );
        let (status, problem) = problem.unwrap_or((StatusCode::OK, String::new()));
        ctx = minijinja::context! { notice => notice, problem => problem, ..ctx };
        self.views.render(
            status,
            locale,
            "customer.html",
            &say(locale, "customer_title", &[&customer.user_id]),
            ctx,
            entry.chrome(),
        )
    }

    fn customer_missing(&self, entry: &Entry, locale: Locale) -> Response {
        self.views.message(
            StatusCode::NOT_FOUND,
            locale,
            "not_found",
            "",
            Some(("/support/", "back_find")),
            entry.chrome(),
        )
    }
}

#[derive(Deserialize)]
pub(super) struct ConfirmQuery {
    #[serde(default)]
    id: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    addr: String,
}

/// `GET /support/confirm?id=…&action=…[&addr=…]`: what the action will do, and the
/// reason it needs. Reads only.
pub(super) async fn confirm(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<ConfirmQuery>,
) -> Response {
    let locale = locale_of(&headers);
    let entry = match c.entry(&headers, locale) {
        Ok(e) => e,
        Err(page) => return page,
    };
    let Some(action) = ACTIONS.iter().find(|a| **a == q.action) else {
        return c.customer_missing(&entry, locale);
    };
    if UserId::parse(&q.id).is_err() {
        return c.customer_missing(&entry, locale);
    }
    let what = if *action == "lift" {
        // Name the (masked) address whose block is lifted.
        let ctx = Console::context(&entry, &headers);
        let user = UserId::from_trusted(q.id.clone());
        let masked = context::scope(ctx, c.core.customer(&user))
            .await
            .ok()
            .and_then(|cu| {
                let i: usize = q.addr.parse().ok()?;
                cu.addresses.get(i).map(|a| a.masked.clone())
            })
            .unwrap_or_default();
        say(locale, "what_lift", &[&masked])
    } else {
        say(locale, &format!("what_{action}"), &[])
    };
    let title = say(
        locale,
        "confirm_title",
        &[texts(locale)[format!("act_{action}").as_str()]],
    );
    c.views.render(
        StatusCode::OK,
        locale,
        "confirm.html",
        &title,
        minijinja::context! {
            what => what,
            id => q.id,
            action => action,
            addr => q.addr,
            danger => matches!(*action, "erase" | "cancel"),
            back => href("/support/customer", &[("id", &q.id)]),
        },
        entry.chrome(),
    )
}

#[derive(Deserialize)]
pub(super) struct ActForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    addr: String,
    #[serde(default)]
    reason: String,
}

/// The reason as it is recorded: 3 to 200 characters, on one line, no control characters.
fn reason_of(raw: &str) -> Option<String> {
    let one_line: String = raw
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let n = one_line.chars().count();
    (3..=200).contains(&n).then_some(one_line)
}

/// `POST /support/act`: the confirmed action, as `support:<name>`, with its reason.
pub(super) async fn act(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<ActForm>,
) -> Response {
    let (entry, locale) = match c.post_entry(&headers, &f.csrf) {
        Ok(e) => e,
        Err(page) => return page,
    };
    let Some(action) = ACTIONS.iter().copied().find(|a| *a == f.action) else {
        return c.customer_missing(&entry, locale);
    };
    let Ok(user) = UserId::parse(&f.id) else {
        return c.customer_missing(&entry, locale);
    };
    let Some(reason) = reason_of(&f.reason) else {
        crate::metrics::support_action(action, "refused");
        let problem = (
            StatusCode::BAD_REQUEST,
            texts(locale)["reason_missing"].to_owned(),
        );
        return c
            .customer_page(&headers, &entry, locale, &f.id, "", None, "", Some(problem))
            .await;
    };
    let ctx = Console::context(&entry, &headers);
    let note = format!("{}: {reason}", ctx.actor);
    let core = &c.core;
    let done = context::scope_noted(ctx, note, async {
        match action {
            "resend" => core.resend(&user).await.map(|_| None),
            "cancel" => core.cancel(&user).await.map(|_| None),
            "lift" => {
                let index = f.addr.parse().map_err(|_| CoreError::NotSuppressed)?;
                core.lift_customer_suppression(&user, index)
                    .await
                    .map(|_| None)
            }
            "erase" => core.erase_user(&user).await.map(|_| None),
            _ => core.show_customer_address(&user).await,
        }
    })
    .await;
    match done {
        Ok(full) => {
            crate::metrics::support_action(action, "done");
            tracing::info!(agent = %entry.agent, action, "support console action");
            match action {
                "erase" => Redirect::to("/support/?done=erase").into_response(),
                "show" => {
                    c.customer_page(
                        &headers,
                        &entry,
                        locale,
                        &f.id,
                        "",
                        full.as_deref(),
                        "",
                        None,
                    )
                    .await
                }
                _ => Redirect::to(&href(
                    "/support/customer",
                    &[("id", &f.id), ("done", action)],
                ))
                .into_response(),
            }
        }
        Err(CoreError::UserNotFound) => {
            crate::metrics::support_action(action, "refused");
            c.customer_missing(&entry, locale)
        }
        Err(e) => {
            crate::metrics::support_action(action, "refused");
            let problem = refusal(&e, locale, c.core.now_ms());
            c.customer_page(&headers, &entry, locale, &f.id, "", None, "", Some(problem))
                .await
        }
    }
}

/// What the agent is told when the core refuses an action.
fn refusal(e: &CoreError, locale: Locale, now: i64) -> (StatusCode, String) {
    let status = crate::http::pages::http_status(e);
    let text = match e {
        CoreError::ResendCooldown { .. }
        | CoreError::RateLimited { .. }
        | CoreError::LockedOut { .. } => {
            let wait = e
                .retry_after()
                .map(|d| d.as_millis() as i64)
                .unwrap_or(60_000);
            say(locale, "err_wait", &[&relative(now, now + wait, locale)])
        }
        CoreError::AddressUndeliverable { .. } => say(locale, "err_blocked", &[]),
        CoreError::NoPendingFlow => say(locale, "err_no_pending", &[]),
        CoreError::NotSuppressed => say(locale, "err_not_blocked", &[]),
        CoreError::Unavailable(_) | CoreError::Internal(_) => {
            tracing::error!(error.cause_chain = ?e, "support console action failed");
            say(locale, "broken", &[])
        }
        _ => say(locale, "err_cannot", &[]),
    };
    (status, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_one_line_of_3_to_200_characters() {
        assert_eq!(
            reason_of("  asked\n on the  phone "),
            Some("asked on the phone".into())
        );
        assert_eq!(reason_of("ab"), None);
        assert_eq!(reason_of(&"x".repeat(201)), None);
        assert_eq!(
            reason_of("ग्राहकले फोन गर्नुभयो").as_deref(),
            Some("ग्राहकले फोन गर्नुभयो")
        );
    }
}
