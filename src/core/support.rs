//! What the support console reads and writes beyond the RPCs' use-cases: a customer found
//! by any spelling of their inbox, one customer's whole picture (addresses, suppressions,
//! mails), and the two console actions that have no RPC of their own — lifting the
//! suppression of one of the customer's addresses, and being shown the address in full —
//! both written to the customer's audit trail (and so to the feed) with the agent's note.
//! Its other actions are the RPCs' own use-cases (`resend`, `cancel`, `erase_user`).

use crate::domain::email::mask;
use crate::domain::mailbox::MailboxKey;
use crate::domain::{EmailAddress, EventType, FlowKind, Template, UserId};
use crate::error::{CoreError, CoreResult};
use crate::store::NewEvent;
pub use crate::store::{Suppression, SuppressionCause};

use super::delivery::delivery_of;
use super::{Core, DeliveryState, Status, context};

/// Most customers one search lists.
pub const MAX_FOUND: u64 = 20;
/// Most mails a customer's page lists.
const MAX_MAILS: u64 = 20;

/// One customer as support sees them.
#[derive(Debug, Clone)]
pub struct Customer {
    pub user_id: String,
    pub status: Status,
    /// The address of record, then a pending change's new address.
    pub addresses: Vec<CustomerAddress>,
    /// The latest mails, newest first.
    pub mails: Vec<MailView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRole {
    /// The address of record (verified or awaiting verification).
    Record,
    /// The new address a pending change would move to.
    ChangingTo,
}

#[derive(Debug, Clone)]
pub struct CustomerAddress {
    pub role: AddressRole,
    pub masked: String,
    /// A suppression in force for its inbox.
    pub suppression: Option<Suppression>,
}

/// One mail: what it was, where it went (masked) and what became of it.
#[derive(Debug, Clone)]
pub struct MailView {
    pub template: Template,
    pub masked_recipient: String,
    pub state: DeliveryState,
    /// The relay's reply or the report's status (never a full address).
    pub detail: String,
    pub attempts: i32,
    pub queued_at: i64,
    pub sent_at: Option<i64>,
}

/// Parses a search: an address (contains `@`) or a user id.
pub enum Search {
    Address(EmailAddress),
    User(UserId),
}

impl Search {
    pub fn parse(raw: &str) -> CoreResult<Self> {
        let raw = raw.trim();
        if raw.contains('@') {
            EmailAddress::parse(raw)
                .map(Search::Address)
                .map_err(|e| CoreError::InvalidEmail {
                    field: "email",
                    message: e.to_string(),
                })
        } else {
            UserId::parse(raw)
                .map(Search::User)
                .map_err(|e| CoreError::InvalidUserId(e.to_string()))
        }
    }
}

impl Core {
    /// The customers a search names: the user of that id, or the users whose address
    /// reaches the same inbox (any spelling: the mailbox key).
    pub async fn find_customers(&self, search: &Search) -> CoreResult<Vec<String>> {
        match search {
            Search::User(user) => Ok(self
                .store
                .user(user)
                .await?
                .map(|u| vec![u.user_id])
                .unwrap_or_default()),
            Search::Address(email) => {
                let key = email.mailbox_key();
                let users = self.store.users_with_key(&key, MAX_FOUND).await?;
                Ok(users.into_iter().map(UserId::into_string).collect())
            }
        }
    }

    /// The customer's whole picture (reads only).
    pub async fn customer(&self, user: &UserId) -> CoreResult<Customer> {
        let status = self.status(user).await?;
        let now = self.now_ms();
        let mut addresses = Vec::new();
        for (role, address) in self.addresses_of(user, &status).await? {
            let key = MailboxKey::of(&address);
            addresses.push(CustomerAddress {
                role,
                masked: mask(&address),
                suppression: self.store.suppression(&key, now).await?,
            });
        }
        let mails = self
            .store
            .mails_of(user, MAX_MAILS)
            .await?
            .into_iter()
            .map(|m| {
                let (state, detail) = delivery_of(&m);
                MailView {
                    template: m.template,
                    masked_recipient: mask(&m.recipient),
                    state,
                    detail,
                    attempts: m.attempts,
                    queued_at: m.created_at,
                    sent_at: m.sent_at,
                }
            })
            .collect();
        Ok(Customer {
            user_id: user.as_str().to_owned(),
            status,
            addresses,
            mails,
        })
    }

    /// The customer's addresses in full: the address of record, and a pending change's
    /// new address (one entry per inbox).
    async fn addresses_of(
        &self,
        user: &UserId,
        status: &Status,
    ) -> CoreResult<Vec<(AddressRole, String)>> {
        let mut out: Vec<(AddressRole, String)> = Vec::new();
        if let Some(email) = &status.email {
            out.push((AddressRole::Record, email.clone()));
        }
        if let Some(f) = self.store.pending_flow(user).await?
            && f.kind == FlowKind::Change
        {
            let key = MailboxKey::of(&f.new_email);
            if !out.iter().any(|(_, a)| MailboxKey::of(a) == key) {
                out.push((AddressRole::ChangingTo, f.new_email.clone()));
            }
        }
        Ok(out)
    }

    /// Lifts the suppression of the customer's `index`-th address (as `customer` lists
    /// them) and records `suppression_lifted` on the customer's trail. NOT_SUPPRESSED
    /// when none is in force.
    pub async fn lift_customer_suppression(&self, user: &UserId, index: usize) -> CoreResult<()> {
        let status = self.status(user).await?;
        let addresses = self.addresses_of(user, &status).await?;
        let (_, address) = addresses.get(index).ok_or(CoreError::NotSuppressed)?;
        let key = MailboxKey::of(address);
        if !self.store.lift_suppression(&key, self.now_ms()).await? {
            return Err(CoreError::NotSuppressed);
        }
        tracing::info!("suppression lifted by support");
        self.support_event(user, EventType::SuppressionLifted, &mask(address))
            .await
    }

    /// The customer's address of record in full, after `address_shown` is on their
    /// trail; `None` when they have none.
    pub async fn show_customer_address(&self, user: &UserId) -> CoreResult<Option<String>> {
        let status = self.status(user).await?;
        let Some(email) = status.email else {
            return Ok(None);
        };
        self.support_event(user, EventType::AddressShown, &mask(&email))
            .await?;
        Ok(Some(email))
    }

    /// An event of the support console on the user's trail, under the user's lock.
    async fn support_event(
        &self,
        user: &UserId,
        event_type: EventType,
        masked: &str,
    ) -> CoreResult<()> {
        let tx = self.store.begin().await?;
        if tx.lock_user(user).await?.is_none() {
            return Err(CoreError::UserNotFound);
        }
        let ctx = context::current();
        let detail = context::noted("");
        tx.event(NewEvent {
            user_id: user.clone(),
            flow_id: None,
            event_type,
            masked_address: masked,
            detail: &detail,
            at: self.now_ms(),
            actor: &ctx.actor,
            request_id: &ctx.request_id,
        })
        .await?;
        tx.commit().await
    }
}
