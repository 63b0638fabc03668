//! The support console (API.md, "The support console (release 3)"; docs/support.md), on the
//! admin port under `/support/`: support staff find a customer by user id or by any
//! spelling of their inbox, see on one page why their mail did not arrive and which step
//! their request is at, and take the one safe action that unblocks them — each action
//! confirmed, given a reason, and written to the customer's audit trail and the feed as
//! `support:<name>` through the same core use-cases (and limits) as the API.
//!
//! Who may enter (`EMAILVERIFY_SUPPORT_AUTH`, `auth.rs`): nobody (404), the agent an
//! authenticating proxy names in a header, or an agent who signs in with a name and token.
//! Either way the console keeps a session (`session.rs`) whose CSRF token every form
//! carries; a POST the browser marks as sent from another site is refused before anything
//! else. The pages (`view.rs`, `customer.rs`) need no JavaScript and speak English and
//! Nepali (`texts.rs`, `words.rs`) after the browser's `Accept-Language`.

mod actions;
mod auth;
mod console;
mod customer;
mod front;
mod session;
mod texts;
mod view;
mod words;

pub use auth::SupportAuth;
pub use console::Console;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::response::Redirect;
use axum::routing::{get, post};

/// The console's routes, with the link pages' headers.
pub fn router(console: Arc<Console>) -> Router {
    let csp = HeaderValue::from_str(&console.views.content_security_policy())
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    let router = Router::new()
        .route(
            "/support",
            get(|| async { Redirect::permanent("/support/") }),
        )
        .route("/support/", get(front::home))
        .route("/support/sign-in", post(front::sign_in))
        .route("/support/sign-out", post(front::sign_out))
        .route("/support/find", post(front::find))
        .route("/support/customer", get(actions::customer))
        .route("/support/confirm", get(actions::confirm))
        .route("/support/act", post(actions::act))
        .route(
            "/support/{*rest}",
            get(front::no_such_page).post(front::no_such_page),
        )
        // A form carries a name and a token, a search, or a reason of 200 characters.
        .layer(DefaultBodyLimit::max(8 * 1024));
    // The link pages' headers, but Referrer-Policy `same-origin`: with `no-referrer` the
    // browser sends `Origin: null` on our own POSTs, which the cross-site check refuses.
    crate::http::with_page_headers(router, "same-origin", csp).with_state(console)
}
