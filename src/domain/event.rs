//! `EventType`: the audit trail's vocabulary. This list is what support staff read in
//! ListEvents (`type`), and what other services may key on; `detail` adds the reason or
//! the template. Events carry masked addresses only, never a token, code or full address.
//!
//! A refusal is recorded as `request_refused`, `link_refused`, `expired_link_used`,
//! `code_mismatch`, `code_locked`, `rate_limited` or `locked_out`, with the contract's
//! reason as its detail (see `core` for when a refusal is recorded). The same refusal of
//! the same user within a minute is one event with a count: its detail reads
//! `NO_PENDING_FLOW ×12`.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    // ----- flows: requested, confirmed, ended -----
    /// A sign-up / add-email flow started; a link went to the (masked) address.
    VerificationRequested,
    /// A change started; the first link went to the CURRENT address (masked).
    ChangeRequested,
    /// A change's first link was confirmed; the second goes to the new address.
    CurrentConfirmed,
    /// The address (masked) is verified now.
    EmailVerified,
    /// The address of record changed to the (masked) new one; the old one got a notice.
    EmailChanged,
    /// The caller cancelled the pending flow (CancelChange). Detail `by_caller`.
    FlowCancelled,
    /// A newer request replaced this pending flow; its links stopped working.
    FlowSuperseded,
    /// "This wasn't me" was pressed on a link page; the flow is cancelled (and a change
    /// is frozen). Detail `this_was_not_me`.
    ChangeReported,
    /// The current step's link was sent again (Resend or the page's button).
    LinkResent,

    // ----- refusals (detail: the contract's reason) -----
    /// A request was refused for a rule of the contract (e.g. SAME_EMAIL, CHANGE_FROZEN).
    RequestRefused,
    /// A link (or its code) was used, superseded or unknown when presented.
    LinkRefused,
    /// An expired link was presented.
    ExpiredLinkUsed,
    /// A wrong code; detail CODE_MISMATCH.
    CodeMismatch,
    /// The last allowed wrong code: the flow's codes are locked for a while.
    CodeLocked,
    /// A per-user or per-recipient limit refused a request.
    RateLimited,
    /// Refused while locked (codes of a flow, or a client on the link pages).
    LockedOut,

    // ----- mail delivery (actor `mail-worker`; detail: the template or the SMTP reply) -----
    /// The SMTP server accepted the mail.
    MailSent,
    /// A temporary failure; the mail will be retried.
    MailDeliveryFailed,
    /// The mail was refused for good or ran out of attempts; its link is erased.
    MailDead,
    /// `outbox retry-dead` replaced a dead link mail with a fresh link.
    MailRetried,

    // ----- after delivery (actor `inbound`: the bounce listener read a report) -----
    /// A delivery status notification said an accepted mail failed for good; detail: its
    /// status and text (e.g. `5.1.1 user unknown`). A 5.1.x status suppresses the address.
    MailBounced,
    /// A delivery status notification said the mail is delayed; the relay keeps trying.
    MailDelayed,
    /// The recipient reported the mail as spam (a feedback report); the address is
    /// suppressed until support lifts it.
    MailComplained,

    // ----- support console (actor `support:<name>`; detail: who and why) -----
    /// Support lifted the suppression of one of the user's addresses (masked).
    SuppressionLifted,
    /// Support was shown the user's address in full.
    AddressShown,

    // ----- erasure -----
    /// EraseUser removed everything the service held of the user; this is all that is
    /// left of them (no address, no detail).
    UserErased,
    // (The mailbox-key migration, m20261130_000001, also wrote `email_unverified_by_migration`
    // for an address whose inbox another account had verified earlier: actor `migration`.)
}

impl EventType {
    /// The name stored and shown (lower_snake_case).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::VerificationRequested => "verification_requested",
            EventType::ChangeRequested => "change_requested",
            EventType::CurrentConfirmed => "current_confirmed",
            EventType::EmailVerified => "email_verified",
            EventType::EmailChanged => "email_changed",
            EventType::FlowCancelled => "flow_cancelled",
            EventType::FlowSuperseded => "flow_superseded",
            EventType::ChangeReported => "change_reported",
            EventType::LinkResent => "link_resent",
            EventType::RequestRefused => "request_refused",
            EventType::LinkRefused => "link_refused",
            EventType::ExpiredLinkUsed => "expired_link_used",
            EventType::CodeMismatch => "code_mismatch",
            EventType::CodeLocked => "code_locked",
            EventType::RateLimited => "rate_limited",
            EventType::LockedOut => "locked_out",
            EventType::MailSent => "mail_sent",
            EventType::MailDeliveryFailed => "mail_delivery_failed",
            EventType::MailDead => "mail_dead",
            EventType::MailRetried => "mail_retried",
            EventType::MailBounced => "mail_bounced",
            EventType::MailDelayed => "mail_delayed",
            EventType::MailComplained => "mail_complained",
            EventType::SuppressionLifted => "suppression_lifted",
            EventType::AddressShown => "address_shown",
            EventType::UserErased => "user_erased",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
