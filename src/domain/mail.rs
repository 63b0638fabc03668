//! What a queued mail is, apart from how it is rendered: which template, in which state,
//! with which parameters. The core writes these into the outbox; the mail worker reads
//! them back and renders them (`mail::templates`). Neither needs the other's code.

use serde::{Deserialize, Serialize};

stored_enum! {
    /// The mails the service sends.
    pub enum Template {
        /// Sign-up / add email: the link to the new address.
        VerifyLink = "verify_link",
        /// A change's first step: the link to the CURRENT address, naming the new one masked.
        ChangeCurrentLink = "change_current_link",
        /// A change's second step: the link to the NEW address.
        ChangeNewLink = "change_new_link",
        /// After a change: a notice to the OLD address.
        ChangeNotice = "change_notice",
    }
}

stored_enum! {
    /// Where a queued mail stands.
    pub enum MailState {
        /// Waiting to be sent (or to be retried).
        Pending = "pending",
        /// Handed to the SMTP server; its link is erased.
        Sent = "sent",
        /// Refused for good or out of attempts; its link is erased.
        Dead = "dead",
        /// A dead mail that `outbox retry-dead` replaced with a fresh one.
        Retried = "retried",
    }
}

/// Non-secret parameters stored with a queued mail (the link is sealed separately).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailParams {
    pub expires_at: i64,
    pub ttl_secs: u64,
    pub masked_new: String,
    pub masked_old: String,
    pub changed_at: Option<i64>,
    /// Whom to contact about a change you did not make (notice only).
    #[serde(default)]
    pub support: String,
}

/// What a queued link mail keeps sealed until it is handed to SMTP.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Secrets {
    pub link: String,
    pub code: String,
}
