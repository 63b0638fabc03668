//! The pages in English.

use super::Texts;

pub const EN: Texts = Texts {
    resend_button: "Send me a new link",
    report_button: "This wasn’t me",

    verify: (
        "Confirm your email address",
        "Confirm that this is the email address of your wallet account.",
    ),
    verify_button: "Confirm",
    change_current: (
        "Confirm the change of your email address",
        "A change of your wallet’s email address was requested. Confirm it here; a second link will then go to the new address.",
    ),
    change_current_button: "Confirm the change",
    changes_to: "The new address would be {}.",
    change_new: (
        "Confirm your new email address",
        "Confirm this address as the new email address of your wallet account.",
    ),
    change_new_button: "Confirm new address",
    sent_to: "This was sent to {}.",

    verified: (
        "Email address confirmed",
        "Thank you: your email address is verified. You can return to the app.",
    ),
    current_confirmed: (
        "Now check your new inbox",
        "Thank you. We sent a link to your new address: open it to finish the change. Until then, your email address stays as it was.",
    ),
    link_went_to: "The link went to {}.",
    changed: (
        "Email address changed",
        "Your wallet’s email address has been changed. You can return to the app.",
    ),

    reported_frozen: (
        "Change stopped and account protected",
        "Thank you for telling us. The change was cancelled and its links no longer work. Your email address stays as it was, and no one can ask to change it until {}.",
    ),
    reported_frozen_why: "This gives you time to check your account: someone who is not you may have tried to take it over. If you want to change your address yourself, you can do so after that time.",
    reported_change_new: (
        "Change cancelled",
        "Thank you for telling us. The change was cancelled: this address was not added to the wallet account, and the links of this request no longer work. You do not need to do anything else.",
    ),
    reported_sign_up: (
        "Address removed",
        "Thank you for telling us. The request was cancelled, its links no longer work, and this address was taken off the account that asked for it.",
    ),
    reported_sign_up_again: "If someone asks for this address again, a new email will come: you can ignore it, or press “This wasn’t me” again.",

    resent: (
        "A new link is on its way",
        "We sent a new link. Earlier links no longer work.",
    ),
    it_went_to: "It went to {}.",

    expired: "This link has expired",
    superseded: "This link was replaced",
    renewable: "For your safety, links work only for a short time and only the newest one works. You can get a new link below.",
    finished: (
        "This link no longer works",
        "Its request has ended. If you still need a link, ask for one in the app.",
    ),
    done_verified: (
        "This address is already confirmed",
        "{new} was confirmed as the email address of a wallet account on {when}. This link can no longer change that.",
    ),
    done_changed: (
        "This change is already done",
        "The wallet account’s email address was changed from {old} to {new} on {when}. This link can no longer change that.",
    ),
    done_cancelled_verify: (
        "This request was cancelled",
        "It was cancelled on {when}, and its links no longer work. {new} was not confirmed by it.",
    ),
    done_cancelled_change: (
        "This change was cancelled",
        "It was cancelled on {when}, and its links no longer work. The wallet account’s email address was not changed by it.",
    ),
    done_replaced_verify: (
        "This request was replaced",
        "A newer request replaced it on {when}, and its links no longer work. {new} was not confirmed by this request.",
    ),
    done_replaced_change: (
        "This change was replaced",
        "A newer request replaced it on {when}, and its links no longer work. The wallet account’s email address was not changed by this request.",
    ),
    help_support: "If this was not you, or was a mistake, contact {support} or open Help in the wallet app.",
    help_app: "If this was not you, or was a mistake, open Help in the wallet app.",
    used_pending: (
        "You already confirmed this change",
        "This link was used on {when} to confirm the change to {new}. A link went to that new address: the change happens only when it is confirmed there.",
    ),
    used_pending_stop: "If you did not ask for this change, stop it now with the button below.",
    unknown_link: (
        "Link not found",
        "We do not know this link. Please use the newest link we sent you.",
    ),
    invalid_link: (
        "This link is not valid",
        "The link seems incomplete. Copy the whole link from the email, or use the button in it.",
    ),
    taken: (
        "Address already in use",
        "This email address is already verified for another account, so it cannot be used here.",
    ),
    undeliverable: (
        "We cannot send mail to this address",
        "Mail to this address was refused or reported, so we are not sending mail to it for now. Please use another address in the app, or contact support.",
    ),
    cannot_complete: (
        "This request cannot be completed",
        "Please start again from the app.",
    ),
    broken: (
        "Something went wrong",
        "We could not complete this right now. Please try again in a few minutes.",
    ),

    wait_title: "Please wait a moment",
    wait_cooldown: "A new link was sent a moment ago. Please check your inbox (and spam folder) before asking for another.",
    wait_limited: "There were too many requests in a short time.",
    wait_locked: "There were too many failed attempts from your network.",
    wait_when: "You can try again in {}, at {}.",

    cross_site: (
        "Please use the link in your email",
        "This request came from another website, so we did not act on it. Nothing was changed. To confirm or cancel, open the link in the email we sent you.",
    ),
    open_from_mail: (
        "Open the link from your email",
        "This page works only with the link from the email we sent you. Open that email and press its button, or copy the whole link into your browser.",
    ),
    no_such_page: (
        "Page not found",
        "There is no page here. To confirm your email address, open the link in the email we sent you.",
    ),
    wrong_method: (
        "This page cannot be opened this way",
        "Please go back and use the button on the page, or open the link in the email we sent you.",
    ),
    unreadable_form: (
        "We could not read what was sent",
        "Nothing was changed. Please open the link in the email we sent you and press the button on its page.",
    ),
};
