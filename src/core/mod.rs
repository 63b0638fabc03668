//! The service core: every rule of the contract, one file per use-case, named after the
//! RPCs. Both front doors (gRPC and the HTTP link shim) call these methods in-process.
//! A reading order:
//!
//! - `request.rs` RequestVerification and RequestChange, and the start they share — both
//!   start a flow through `flows.rs`, the steps every use-case shares (start a flow, send
//!   a link, supersede, end);
//! - `confirm.rs` ConfirmLink (and the link page's read-only look), `codes.rs` ConfirmCode;
//! - `resend.rs` Resend, `cancel.rs` CancelChange (and the link pages' buttons for both);
//! - `status.rs` GetStatus (with `delivery.rs`, what callers see of a flow and what became
//!   of its link mail),
//!   `events.rs` ListEvents and how use-cases write the trail;
//! - `suppression.rs` the inboxes no mail may go to, and LiftSuppression;
//! - `support.rs` what the support console reads, and its two actions without an RPC;
//! - `feed.rs` WatchEvents: the gap-free change feed and its cursors;
//! - `erase.rs` EraseUser: everything of one user goes, one `user_erased` event stays;
//! - `limits.rs` the per-user and per-client limits, `retry_dead.rs` the operator's
//!   `outbox retry-dead`;
//! - `finish.rs` how every use-case ends.
//!
//! # The transaction pattern
//! Every use-case that changes state:
//! 1. begins ONE transaction (`store::Tx`) and locks the user's row first (locks are
//!    always taken user → flow → token, so use-cases cannot deadlock each other);
//! 2. applies its rules, writing the state change, its audit event and the mail it causes
//!    into that transaction (transactional outbox: a committed request always gets its
//!    email, a refused one never does);
//! 3. ends in `finish`: success commits and wakes the mail worker; a refusal rolls back.
//!
//! The hot use-cases (RequestVerification, RequestChange, ConfirmLink) run the same code
//! OPTIMISTICALLY first: on PostgreSQL with no transaction and no lock, their writes sent
//! at `finish` as one statement that holds only if what they read is still so
//! (`store::optimistic`). If it is not, they run again; the last try takes the locks. The
//! store decides how each try runs (`Store::attempts`): the core writes each use-case
//! once, and starts its `Tx` from the `Attempt` it is given.
//!
//! # The one policy for auditing refusals
//! A refusal changes nothing, so the use-case's transaction never records it: `finish`
//! rolls the transaction back, then `refuse` records it in its own statement, after the
//! answer (so known and unknown users are answered alike, in the same time) — only for a
//! user that exists (unknown ids cannot fill the table), naming the flow when the refusal
//! concerns one, typed after the reason (`finish::refusal_event`), and at most once a minute
//! per user, type and reason, with a count (a caller cannot flood the trail). A wrong code
//! is the one refusal that also changes state (the count must survive): ConfirmCode commits
//! the count first, then refuses the same way.

mod cancel;
mod codes;
mod confirm;
pub mod context;
mod delivery;
mod erase;
mod events;
mod feed;
mod finish;
mod flows;
mod limits;
mod request;
mod resend;
mod retry_dead;
mod status;
pub mod support;
mod suppression;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::domain::{FlowKind, FlowStep, Keyring, Locale, Outcome, Rate};
pub use crate::error::{CoreError, CoreResult};
use crate::store::{OutboxStats, Store};
pub use confirm::LinkFlow;
pub use delivery::{DeliveryState, delivery_of, scrub};
pub use feed::FeedItem;
pub use retry_dead::RetryReport;

/// The tunable rules (from settings).
#[derive(Debug, Clone)]
pub struct Policy {
    pub verify_ttl: Duration,
    pub change_ttl: Duration,
    pub resend_cooldown: Duration,
    /// Base of links in emails, without a trailing slash.
    pub public_url: String,
    /// Requests and resends per user.
    pub user_rate: Rate,
    /// Link mails per recipient address, whatever the account asking.
    pub recipient_rate: Rate,
    /// Failed link confirmations per client IP on the link pages.
    pub ip_failure_rate: Rate,
    /// Wrong codes per user, across flows (ConfirmCode).
    pub wrong_code_rate: Rate,
    /// How long RequestChange is refused after a "this wasn't me" report.
    pub change_freeze: Duration,
    /// Named in the change notice as whom to contact.
    pub support_contact: String,
}

/// Wrong codes allowed per flow; the next one locks it.
pub const MAX_WRONG_CODES: i32 = 5;
/// How long a flow's codes stay locked after the last allowed wrong code.
pub const CODE_LOCK: Duration = Duration::from_secs(15 * 60);
/// Largest page of ListEvents.
pub const MAX_PAGE: u64 = 200;

/// What callers see of a flow: the current step's link, masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowView {
    pub flow_id: String,
    pub kind: FlowKind,
    pub step: FlowStep,
    pub masked_recipient: String,
    /// The language the flow's mails are written in, and its link pages; None: the
    /// caller chose none (mails: `EMAILVERIFY_DEFAULT_LOCALE`; pages: the browser's).
    pub locale: Option<Locale>,
    pub expires_at: i64,
    pub resend_available_at: i64,
    /// What became of the current step's link mail, and the relay's reply or the
    /// report's status (never a full address).
    pub delivery: DeliveryState,
    pub delivery_detail: String,
}

/// What "This wasn't me" did (`Core::cancel_by_token`).
#[derive(Debug, Clone)]
pub struct Report {
    pub flow: FlowView,
    pub what: Reported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// From the current address of a change: cancelled, and changes frozen until `until`.
    ChangeFrozen { until: i64 },
    /// From the new address of a change: cancelled, nothing frozen.
    ChangeCancelled,
    /// From a sign-up's address: cancelled, and the unverified address taken off the user.
    SignUpCancelled,
}

/// What a confirmation (by link or code) achieved.
#[derive(Debug, Clone)]
pub struct Confirmation {
    pub user_id: String,
    pub flow: FlowView,
    pub outcome: Outcome,
    /// The user's address of record after the confirmation.
    pub email: String,
}

/// A user's email state (GetStatus).
#[derive(Debug, Clone)]
pub struct Status {
    pub email: Option<String>,
    pub email_verified: bool,
    pub verified_at: Option<i64>,
    pub pending: Option<FlowView>,
}

/// One line of the audit trail as support staff see it.
#[derive(Debug, Clone)]
pub struct EventView {
    pub event_type: String,
    pub at: i64,
    pub flow_id: String,
    pub masked_address: String,
    pub detail: String,
}

pub struct Core {
    store: Store,
    keys: Keyring,
    clock: Arc<dyn Clock>,
    policy: Policy,
    /// Notified after every commit that queued mail.
    mail_ready: Arc<Notify>,
}

impl Core {
    pub fn new(
        store: Store,
        keys: Keyring,
        clock: Arc<dyn Clock>,
        policy: Policy,
        mail_ready: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            keys,
            clock,
            policy,
            mail_ready,
        }
    }

    /// The core's clock (Unix ms); adapters use it too (metrics).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether the database answers (readiness).
    pub async fn ready(&self) -> bool {
        self.store.ping().await
    }

    /// The outbox's depth and age (metrics).
    pub async fn outbox_stats(&self) -> CoreResult<OutboxStats> {
        self.store.outbox_stats(self.now_ms()).await
    }
}
