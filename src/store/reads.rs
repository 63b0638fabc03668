//! What the store's reads answer beyond one table's row: the request read (`flows.rs`,
//! also kept ahead by an optimistic use-case, `optimistic.rs`) and a suppression in force
//! (`suppressions.rs`).

use super::entity::flow;
use crate::domain::UserId;

/// What `Tx::request_read` found.
pub struct RequestRead {
    pub verified_owner: Option<UserId>,
    pub pending: Option<flow::Model>,
    pub suppression: Option<Suppression>,
}

/// Why an inbox is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressionCause {
    /// A 5.1.x refusal or bounce: no such mailbox.
    Bounced,
    /// The recipient marked a mail as spam (an ARF report).
    Complained,
}

impl SuppressionCause {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionCause::Bounced => "bounced",
            SuppressionCause::Complained => "complained",
        }
    }

    pub(super) fn parse(s: &str) -> Self {
        match s {
            "complained" => SuppressionCause::Complained,
            _ => SuppressionCause::Bounced,
        }
    }
}

/// A suppression in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub cause: SuppressionCause,
    /// When it ends (Unix ms); `None`: until lifted.
    pub until: Option<i64>,
}
