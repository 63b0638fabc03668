//! `Flow.delivery`: what became of the current step's link mail, derived from its outbox
//! row (state, attempts, last error) and the bounce a delivery status notification
//! recorded. The detail is the relay's reply or the report's status, with any address in
//! it masked: never a full address.

use crate::domain::MailState;
use crate::domain::email::{mask, mask_apart};
use crate::domain::{FlowKind, FlowState, FlowStep, Keyring, Locale};
use crate::store::entity::{flow, outbox};

use super::{Core, FlowView};

/// Where the current step's link mail stands (API.md `DeliveryState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// No link mail to report on (a flow that ended).
    Unspecified,
    /// Committed, not yet accepted by the relay.
    Queued,
    /// The relay accepted it.
    Sent,
    /// A temporary failure (4xx, no connection): it will be retried.
    Retrying,
    /// Refused for good (5xx) or out of attempts.
    Failed,
    /// Accepted, then a delivery status notification said it failed.
    Bounced,
}

/// The delivery state of a link mail, and its detail.
pub fn delivery_of(mail: &outbox::Model) -> (DeliveryState, String) {
    let error = || scrub(mail.last_error.as_deref().unwrap_or_default());
    match mail.state {
        MailState::Pending if mail.attempts == 0 && mail.last_error.is_none() => {
            (DeliveryState::Queued, String::new())
        }
        MailState::Pending => (DeliveryState::Retrying, error()),
        MailState::Sent => match &mail.bounce {
            // The status and a fixed word only, also of a bounce recorded before release 3
            // (which kept the report's text).
            Some(bounce) => (DeliveryState::Bounced, bounced_detail(bounce)),
            None => (DeliveryState::Sent, String::new()),
        },
        MailState::Dead | MailState::Retried => (DeliveryState::Failed, error()),
    }
}

/// What a recorded bounce shows: its enhanced status code and `bounced`, never the
/// report's text (a report is anyone's to write).
fn bounced_detail(bounce: &str) -> String {
    crate::domain::status::report_detail(bounce, "bounced")
}

/// `text` with every word that holds an `@` masked (a relay may quote the recipient).
pub fn scrub(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains('@') {
                let bare = word.trim_matches(|c: char| "<>:;,.()[]\"'".contains(c));
                mask(bare)
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Core {
    /// What callers see of `f`; a pending step's link mail as just queued (see
    /// `delivered_view` for what became of it).
    pub(super) fn view(&self, f: &flow::Model) -> FlowView {
        let delivery = match (f.state, f.step) {
            (FlowState::Pending, FlowStep::ConfirmCurrent | FlowStep::ConfirmNew) => {
                DeliveryState::Queued
            }
            _ => DeliveryState::Unspecified,
        };
        FlowView {
            flow_id: f.flow_id.clone(),
            kind: f.kind,
            step: f.step,
            masked_recipient: {
                let (old, new) = masks_of(&self.keys, f);
                match (f.kind, f.step) {
                    (FlowKind::Change, FlowStep::ConfirmCurrent) => old,
                    _ => new,
                }
            },
            locale: Locale::requested(&f.locale),
            expires_at: f.expires_at,
            resend_available_at: f.resend_available_at,
            delivery,
            delivery_detail: String::new(),
        }
    }

    /// `view` of a pending flow with its link mail's delivery read from the outbox.
    pub(super) fn delivered_view(&self, f: &flow::Model, mail: Option<&outbox::Model>) -> FlowView {
        let mut view = self.view(f);
        if let Some(mail) = mail {
            (view.delivery, view.delivery_detail) = delivery_of(mail);
        }
        view
    }
}

/// A flow's old (empty for a sign-up) and new address, masked so a reader tells them
/// apart (a keyed fingerprint where their shown characters read alike: `mask`).
pub(super) fn masks_of(keys: &Keyring, f: &flow::Model) -> (String, String) {
    match &f.old_email {
        Some(old) => mask_apart(old, &f.new_email, &keys.mask_key()),
        None => (String::new(), mask(&f.new_email)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_never_carry_a_full_address() {
        assert_eq!(
            scrub("550 5.1.1 <jane.doe@example.com>: Recipient address rejected"),
            format!(
                "550 5.1.1 {} Recipient address rejected",
                mask("jane.doe@example.com")
            )
        );
        assert_eq!(scrub("451 4.3.0 try again"), "451 4.3.0 try again");
    }

    #[test]
    fn a_bounce_shows_its_status_and_a_fixed_word_only() {
        assert_eq!(bounced_detail("5.1.1 bounced"), "5.1.1 bounced");
        assert_eq!(
            bounced_detail("5.1.1 550 5.1.1 call +1-555-0100 jane＠victim.example"),
            "5.1.1 bounced"
        );
        assert_eq!(bounced_detail("URGENT"), "bounced");
    }
}
