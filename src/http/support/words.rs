//! The audit trail, mail states and mail kinds in words a support agent reads (never the
//! event type names), in English and Nepali.

use crate::core::DeliveryState;
use crate::domain::{Locale, Template};

/// (event type, English, Nepali); `{}` is the event's masked address.
const EVENTS: &[(&str, &str, &str)] = &[
    (
        "verification_requested",
        "Asked to verify an address; a link went to {}",
        "ठेगाना प्रमाणित गर्न अनुरोध; {} मा लिङ्क गयो",
    ),
    (
        "change_requested",
        "Asked to change the address; the first link went to the current address {}",
        "ठेगाना परिवर्तनको अनुरोध; पहिलो लिङ्क हालको ठेगाना {} मा गयो",
    ),
    (
        "current_confirmed",
        "Confirmed from the current address; a link went to the new address {}",
        "हालको ठेगानाबाट पुष्टि; नयाँ ठेगाना {} मा लिङ्क गयो",
    ),
    (
        "email_verified",
        "The address {} was verified",
        "ठेगाना {} प्रमाणित भयो",
    ),
    (
        "email_changed",
        "The address changed to {}",
        "ठेगाना {} मा परिवर्तन भयो",
    ),
    (
        "flow_cancelled",
        "The request in progress was cancelled",
        "चलिरहेको अनुरोध रद्द भयो",
    ),
    (
        "flow_superseded",
        "A newer request replaced the one in progress",
        "नयाँ अनुरोधले चलिरहेको अनुरोधलाई बदल्यो",
    ),
    (
        "change_reported",
        "Someone pressed “This wasn't me” on a link sent to {}",
        "{} मा पठाइएको लिङ्कमा कसैले “यो म होइन” थिच्यो",
    ),
    (
        "link_resent",
        "The link was sent again to {}",
        "लिङ्क फेरि {} मा पठाइयो",
    ),
    (
        "request_refused",
        "A request was refused",
        "एउटा अनुरोध अस्वीकार भयो",
    ),
    (
        "link_refused",
        "A link was opened that no longer works",
        "काम नगर्ने लिङ्क खोलियो",
    ),
    (
        "expired_link_used",
        "An expired link was opened",
        "म्याद सकिएको लिङ्क खोलियो",
    ),
    (
        "code_mismatch",
        "A wrong code was entered",
        "गलत कोड हालियो",
    ),
    (
        "code_locked",
        "Too many wrong codes: codes are locked for a while",
        "धेरै गलत कोड: केही समय कोड बन्द",
    ),
    (
        "rate_limited",
        "Refused: too many requests",
        "अस्वीकार: धेरै अनुरोध",
    ),
    (
        "locked_out",
        "Refused while locked out",
        "बन्द भएका बेला अस्वीकार",
    ),
    (
        "mail_sent",
        "The mail server accepted a mail to {}",
        "मेल सर्भरले {} लाई मेल स्वीकार्यो",
    ),
    (
        "mail_delivery_failed",
        "A mail to {} failed for now; it will be tried again",
        "{} लाई मेल अहिले असफल; फेरि प्रयास हुनेछ",
    ),
    (
        "mail_dead",
        "A mail to {} could not be delivered",
        "{} लाई मेल पुर्‍याउन सकिएन",
    ),
    (
        "mail_retried",
        "An operator sent a failed mail again",
        "सञ्चालकले असफल मेल फेरि पठाए",
    ),
    (
        "mail_bounced",
        "A mail to {} bounced back",
        "{} लाई पठाएको मेल फर्कियो",
    ),
    (
        "mail_delayed",
        "A mail to {} is delayed",
        "{} लाई मेल ढिला भइरहेको छ",
    ),
    (
        "mail_complained",
        "The customer marked a mail to {} as spam",
        "ग्राहकले {} लाई आएको मेललाई स्प्याम भन्नुभयो",
    ),
    (
        "suppression_lifted",
        "Support lifted the block on {}",
        "सहायताले {} को रोक हटायो",
    ),
    (
        "address_shown",
        "Support was shown the full address {}",
        "सहायतालाई पूरा ठेगाना {} देखाइयो",
    ),
    (
        "user_erased",
        "Everything about the customer was erased",
        "ग्राहकको सबै कुरा मेटाइयो",
    ),
    (
        "email_unverified_by_migration",
        "The address was marked unverified: another account had verified its inbox",
        "ठेगाना अप्रमाणित गरियो: अर्को खाताले यसको इनबक्स प्रमाणित गरेको थियो",
    ),
];

/// What an event says, in words; an event type this release does not know is shown as
/// it is stored.
pub fn event(event_type: &str, masked: &str, locale: Locale) -> String {
    let Some((_, en, ne)) = EVENTS.iter().find(|(k, _, _)| *k == event_type) else {
        return event_type.to_owned();
    };
    let text = match locale {
        Locale::En => *en,
        Locale::Ne => *ne,
    };
    let shown = if masked.is_empty() { "—" } else { masked };
    text.replacen("{}", shown, 1)
}

/// A mail's delivery state in words.
pub fn delivery(state: DeliveryState, locale: Locale) -> &'static str {
    let (en, ne) = match state {
        DeliveryState::Unspecified => ("No mail to report on", "बताउनु पर्ने मेल छैन"),
        DeliveryState::Queued => ("Waiting to be sent", "पठाउन बाँकी"),
        DeliveryState::Sent => ("Accepted by the mail server", "मेल सर्भरले स्वीकार्यो"),
        DeliveryState::Retrying => (
            "Failed for now, will be tried again",
            "अहिले असफल, फेरि प्रयास हुनेछ",
        ),
        DeliveryState::Failed => ("Could not be delivered", "पुर्‍याउन सकिएन"),
        DeliveryState::Bounced => ("Bounced back", "फर्कियो"),
    };
    match locale {
        Locale::En => en,
        Locale::Ne => ne,
    }
}

/// What a mail was.
pub fn template(t: Template, locale: Locale) -> &'static str {
    let (en, ne) = match t {
        Template::VerifyLink => ("Link to verify the address", "ठेगाना प्रमाणित गर्ने लिङ्क"),
        Template::ChangeCurrentLink => (
            "Change, link to the current address",
            "परिवर्तन, हालको ठेगानामा लिङ्क",
        ),
        Template::ChangeNewLink => (
            "Change, link to the new address",
            "परिवर्तन, नयाँ ठेगानामा लिङ्क",
        ),
        Template::ChangeNotice => (
            "Notice of the change to the old address",
            "पुरानो ठेगानामा परिवर्तनको सूचना",
        ),
    };
    match locale {
        Locale::En => en,
        Locale::Ne => ne,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventType;

    #[test]
    fn every_event_type_has_words() {
        for t in [
            EventType::VerificationRequested,
            EventType::LinkResent,
            EventType::MailDead,
            EventType::MailBounced,
            EventType::SuppressionLifted,
            EventType::AddressShown,
            EventType::UserErased,
        ] {
            for locale in [Locale::En, Locale::Ne] {
                assert_ne!(event(t.as_str(), "j***@x.np", locale), t.as_str());
            }
        }
        assert_eq!(
            event("link_resent", "j***@x.np", Locale::En),
            "The link was sent again to j***@x.np"
        );
    }
}
