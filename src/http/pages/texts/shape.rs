//! What every link page may say, sentence by sentence: one `Texts` per language
//! (`en.rs`, `ne.rs`).

/// A page's heading and first paragraph.
pub type Said = (&'static str, &'static str);

pub struct Texts {
    pub resend_button: &'static str,
    pub report_button: &'static str,

    pub verify: Said,
    pub verify_button: &'static str,
    pub change_current: Said,
    pub change_current_button: &'static str,
    /// `{}`: the masked new address a change's first link changes to.
    pub changes_to: &'static str,
    pub change_new: Said,
    pub change_new_button: &'static str,
    pub sent_to: &'static str,

    pub verified: Said,
    pub current_confirmed: Said,
    pub link_went_to: &'static str,
    pub changed: Said,

    /// `{}`: until when changes are frozen.
    pub reported_frozen: Said,
    pub reported_frozen_why: &'static str,
    pub reported_change_new: Said,
    pub reported_sign_up: Said,
    pub reported_sign_up_again: &'static str,

    pub resent: Said,
    pub it_went_to: &'static str,

    pub expired: &'static str,
    pub superseded: &'static str,
    pub renewable: &'static str,
    /// A link whose flow cannot be found any more (the fallback of the pages below).
    pub finished: Said,
    /// A finished flow's link, by what became of it: `{when}`, `{new}`, `{old}`.
    pub done_verified: Said,
    pub done_changed: Said,
    pub done_cancelled_verify: Said,
    pub done_cancelled_change: Said,
    pub done_replaced_verify: Said,
    pub done_replaced_change: Said,
    /// How to reach support: with `EMAILVERIFY_SUPPORT_CONTACT` (`{support}`), without.
    pub help_support: &'static str,
    pub help_app: &'static str,
    /// A change's first link, used, while the second is pending: `{when}`, `{new}`.
    pub used_pending: Said,
    pub used_pending_stop: &'static str,
    pub unknown_link: Said,
    pub invalid_link: Said,
    pub taken: Said,
    pub undeliverable: Said,
    pub cannot_complete: Said,
    pub broken: Said,

    /// `{}`: how long, then when.
    pub wait_title: &'static str,
    pub wait_cooldown: &'static str,
    pub wait_limited: &'static str,
    pub wait_locked: &'static str,
    pub wait_when: &'static str,

    pub cross_site: Said,
    pub open_from_mail: Said,
    pub no_such_page: Said,
    pub wrong_method: Said,
    /// A POST whose body is not the page's form (415, 413, 400).
    pub unreadable_form: Said,
}
