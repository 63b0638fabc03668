//! The console's words, in English and Nepali: one table, looked up by key (the templates
//! get the whole table of the page's language as `t`). `{}` is filled by the caller.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::domain::Locale;
use crate::domain::when::digits;

/// (key, English, Nepali).
const TEXTS: &[(&str, &str, &str)] = &[
    ("console", "Support console", "सहायता कन्सोल"),
    ("skip", "Skip to the content", "मुख्य भागमा जानुहोस्"),
    ("sign_in_title", "Sign in", "साइन इन"),
    (
        "sign_in_lead",
        "Sign in with your agent name and token.",
        "आफ्नो एजेन्ट नाम र टोकनले साइन इन गर्नुहोस्।",
    ),
    ("name_label", "Agent name", "एजेन्टको नाम"),
    ("token_label", "Token", "टोकन"),
    ("sign_in_button", "Sign in", "साइन इन गर्नुहोस्"),
    ("sign_out", "Sign out", "साइन आउट"),
    ("signed_in_as", "Signed in as {}", "{} को रूपमा साइन इन"),
    ("signed_out", "You are signed out.", "तपाईं साइन आउट हुनुभयो।"),
    (
        "wrong_token",
        "That name and token do not match. Check them and try again.",
        "त्यो नाम र टोकन मिलेनन्। जाँचेर फेरि प्रयास गर्नुहोस्।",
    ),
    (
        "throttled",
        "Too many failed sign-ins. Wait 15 minutes, then try again.",
        "धेरै पटक साइन इन असफल भयो। १५ मिनेट पर्खेर फेरि प्रयास गर्नुहोस्।",
    ),
    (
        "refused_title",
        "You cannot enter the support console",
        "तपाईं सहायता कन्सोलमा प्रवेश गर्न सक्नुहुन्न",
    ),
    (
        "refused_header",
        "Your sign-in did not reach the console. Open it through the company sign-in page.",
        "तपाईंको साइन इन कन्सोलसम्म आइपुगेन। कम्पनीको साइन इन पेजबाट खोल्नुहोस्।",
    ),
    (
        "expired",
        "Your session ended. Sign in again to continue. Nothing was changed.",
        "तपाईंको सत्र सकियो। जारी राख्न फेरि साइन इन गर्नुहोस्। केही परिवर्तन भएन।",
    ),
    ("cross_site_title", "Nothing was done", "केही गरिएन"),
    (
        "cross_site",
        "This form was sent from another site, so nothing was done.",
        "यो फारम अर्को साइटबाट पठाइएको थियो, त्यसैले केही गरिएन।",
    ),
    (
        "csrf",
        "This form is out of date, so nothing was done. Open the page again and retry.",
        "यो फारम पुरानो भयो, त्यसैले केही गरिएन। पेज फेरि खोलेर प्रयास गर्नुहोस्।",
    ),
    ("find_title", "Find a customer", "ग्राहक खोज्नुहोस्"),
    (
        "find_label",
        "User id or email address",
        "प्रयोगकर्ता आईडी वा इमेल ठेगाना",
    ),
    (
        "find_hint",
        "Any spelling of an address finds the same inbox.",
        "ठेगानाको जुनसुकै लेखाइले एउटै इनबक्स भेट्टाउँछ।",
    ),
    ("find_button", "Find", "खोज्नुहोस्"),
    ("found_none", "No customer found.", "कुनै ग्राहक भेटिएन।"),
    (
        "found_many",
        "Customers with this inbox",
        "यो इनबक्स भएका ग्राहकहरू",
    ),
    (
        "bad_query",
        "That is neither a user id nor an email address.",
        "त्यो न प्रयोगकर्ता आईडी हो न इमेल ठेगाना।",
    ),
    ("customer_title", "Customer {}", "ग्राहक {}"),
    ("address_h", "Email address", "इमेल ठेगाना"),
    (
        "no_address",
        "No email address on record.",
        "कुनै इमेल ठेगाना दर्ता छैन।",
    ),
    ("verified_since", "Verified since {}", "{} देखि प्रमाणित"),
    (
        "not_verified",
        "Not verified yet",
        "अहिलेसम्म प्रमाणित भएको छैन",
    ),
    (
        "shown_full",
        "Shown in full at your request; this was recorded.",
        "तपाईंको अनुरोधमा पूरा देखाइयो; यो रेकर्ड गरियो।",
    ),
    ("role_record", "Address of record", "दर्ता भएको ठेगाना"),
    (
        "role_changing_to",
        "New address of the change",
        "परिवर्तनको नयाँ ठेगाना",
    ),
    (
        "blocked_bounced",
        "Blocked: mail bounced (no such mailbox), until {}",
        "रोकिएको: मेल फर्कियो (यस्तो मेलबक्स छैन), {} सम्म",
    ),
    (
        "blocked_complained",
        "Blocked: the customer marked a mail as spam, until lifted",
        "रोकिएको: ग्राहकले मेललाई स्प्याम भन्नुभयो, नहटाएसम्म",
    ),
    (
        "not_blocked",
        "Mail can be sent to it",
        "यसमा मेल पठाउन सकिन्छ",
    ),
    ("pending_h", "Request in progress", "चलिरहेको अनुरोध"),
    (
        "no_pending",
        "No request in progress.",
        "कुनै अनुरोध चलिरहेको छैन।",
    ),
    (
        "pending_verify",
        "Verifying an address: waiting for the customer to open the link.",
        "ठेगाना प्रमाणित गर्दै: ग्राहकले लिङ्क खोल्ने प्रतीक्षामा।",
    ),
    (
        "pending_change_current",
        "Changing the address, step 1 of 2: waiting for the link sent to the current address.",
        "ठेगाना परिवर्तन, चरण १ मध्ये २: हालको ठेगानामा पठाइएको लिङ्कको प्रतीक्षामा।",
    ),
    (
        "pending_change_new",
        "Changing the address, step 2 of 2: waiting for the link sent to the new address.",
        "ठेगाना परिवर्तन, चरण २ मध्ये २: नयाँ ठेगानामा पठाइएको लिङ्कको प्रतीक्षामा।",
    ),
    ("sent_to", "The link went to {}", "लिङ्क {} मा गयो"),
    ("link_mail", "The link's mail: {}", "लिङ्कको मेल: {}"),
    (
        "expires",
        "The link stops working {}",
        "लिङ्कले {} काम गर्न छोड्छ",
    ),
    (
        "resend_when",
        "It can be sent again {}",
        "यो फेरि {} पठाउन सकिन्छ",
    ),
    (
        "resend_now",
        "It can be sent again now",
        "यो अहिले फेरि पठाउन सकिन्छ",
    ),
    ("mails_h", "Mails", "मेलहरू"),
    ("no_mails", "No mails kept.", "कुनै मेल राखिएको छैन।"),
    ("mail_line", "{} to {}", "{} — {} लाई"),
    ("queued_at", "Queued {}", "{} लाममा राखियो"),
    ("attempts", "Attempts: {}", "प्रयास: {}"),
    (
        "relay_said",
        "The mail server said: {}",
        "मेल सर्भरले भन्यो: {}",
    ),
    ("history_h", "History, newest first", "इतिहास, नयाँ पहिले"),
    ("no_history", "Nothing recorded.", "केही रेकर्ड छैन।"),
    ("older", "Older history", "पुरानो इतिहास"),
    ("newest", "Back to the newest", "नयाँमा फर्कनुहोस्"),
    ("actions_h", "Actions", "कार्यहरू"),
    ("by", "By {}", "{} द्वारा"),
    ("act_resend", "Send the link again", "लिङ्क फेरि पठाउनुहोस्"),
    ("act_cancel", "Cancel the request", "अनुरोध रद्द गर्नुहोस्"),
    ("act_lift", "Lift the block", "रोक हटाउनुहोस्"),
    ("act_erase", "Erase the customer", "ग्राहक मेटाउनुहोस्"),
    ("act_show", "Show in full", "पूरा देखाउनुहोस्"),
    (
        "what_resend",
        "A new link goes to the customer's current step; earlier links stop working. The usual limits apply.",
        "ग्राहकको हालको चरणमा नयाँ लिङ्क जान्छ; पहिलेका लिङ्कले काम गर्न छोड्छन्। सामान्य सीमा लागू हुन्छन्।",
    ),
    (
        "what_cancel",
        "The request in progress is cancelled and its links stop working.",
        "चलिरहेको अनुरोध रद्द हुन्छ र यसका लिङ्कले काम गर्न छोड्छन्।",
    ),
    (
        "what_lift",
        "Mail may go to {} again. Lift the block only if the customer confirmed the address works.",
        "{} मा फेरि मेल जान सक्छ। ग्राहकले ठेगाना चल्छ भनी पुष्टि गरेपछि मात्र रोक हटाउनुहोस्।",
    ),
    (
        "what_erase",
        "Everything held about this customer is deleted for good: address, requests, mails and history. This cannot be undone.",
        "यो ग्राहकको बारेमा राखिएको सबै कुरा सधैँका लागि मेटिन्छ: ठेगाना, अनुरोध, मेल र इतिहास। यो फिर्ता गर्न सकिँदैन।",
    ),
    (
        "what_show",
        "The full address is shown to you, and this is recorded in the customer's history.",
        "पूरा ठेगाना तपाईंलाई देखाइन्छ, र यो ग्राहकको इतिहासमा रेकर्ड हुन्छ।",
    ),
    ("confirm_title", "Confirm: {}", "पुष्टि गर्नुहोस्: {}"),
    (
        "reason_label",
        "Reason (recorded in the customer's history)",
        "कारण (ग्राहकको इतिहासमा रेकर्ड हुन्छ)",
    ),
    (
        "reason_hint",
        "3 to 200 characters. Do not write the customer's address or other personal details.",
        "३ देखि २०० अक्षर। ग्राहकको ठेगाना वा अन्य व्यक्तिगत विवरण नलेख्नुहोस्।",
    ),
    (
        "reason_missing",
        "Write a reason of 3 to 200 characters. Nothing was done.",
        "३ देखि २०० अक्षरको कारण लेख्नुहोस्। केही गरिएन।",
    ),
    ("confirm_button", "Yes, do it", "हो, गर्नुहोस्"),
    ("back", "Back to the customer", "ग्राहकमा फर्कनुहोस्"),
    ("back_find", "Find another customer", "अर्को ग्राहक खोज्नुहोस्"),
    (
        "done_resend",
        "The link was sent again.",
        "लिङ्क फेरि पठाइयो।",
    ),
    (
        "done_cancel",
        "The request was cancelled.",
        "अनुरोध रद्द गरियो।",
    ),
    ("done_lift", "The block was lifted.", "रोक हटाइयो।"),
    ("done_erase", "The customer was erased.", "ग्राहक मेटाइयो।"),
    ("not_found", "There is no such customer.", "यस्तो ग्राहक छैन।"),
    ("no_such_page", "There is no such page.", "यस्तो पेज छैन।"),
    (
        "broken",
        "Something went wrong. Nothing was changed; try again in a moment.",
        "केही गडबड भयो। केही परिवर्तन भएन; केही बेरमा फेरि प्रयास गर्नुहोस्।",
    ),
    (
        "err_wait",
        "A limit refused this; it can be tried again {}.",
        "सीमाले यो रोक्यो; यो {} फेरि प्रयास गर्न सकिन्छ।",
    ),
    (
        "err_blocked",
        "Mail to this address is blocked. Lift the block first.",
        "यो ठेगानामा मेल रोकिएको छ। पहिले रोक हटाउनुहोस्।",
    ),
    (
        "err_no_pending",
        "There is no request in progress.",
        "कुनै अनुरोध चलिरहेको छैन।",
    ),
    (
        "err_not_blocked",
        "That address is not blocked.",
        "त्यो ठेगाना रोकिएको छैन।",
    ),
    (
        "err_cannot",
        "This cannot be done now.",
        "यो अहिले गर्न सकिँदैन।",
    ),
    ("in", "in about {}", "करिब {}मा"),
    ("ago", "about {} ago", "करिब {} अघि"),
];

/// The table of `locale`.
pub fn texts(locale: Locale) -> &'static BTreeMap<&'static str, &'static str> {
    static EN: OnceLock<BTreeMap<&'static str, &'static str>> = OnceLock::new();
    static NE: OnceLock<BTreeMap<&'static str, &'static str>> = OnceLock::new();
    match locale {
        Locale::En => EN.get_or_init(|| TEXTS.iter().map(|(k, en, _)| (*k, *en)).collect()),
        Locale::Ne => NE.get_or_init(|| TEXTS.iter().map(|(k, _, ne)| (*k, *ne)).collect()),
    }
}

/// The text of `key` with each `{}` filled in order.
pub fn say(locale: Locale, key: &str, values: &[&str]) -> String {
    let mut text = texts(locale).get(key).copied().unwrap_or(key).to_owned();
    for v in values {
        text = text.replacen("{}", v, 1);
    }
    text
}

/// "in about 3 hours" / "about 3 hours ago" (rounded to the largest unit).
pub fn relative(now: i64, at: i64, locale: Locale) -> String {
    let secs = (at - now).unsigned_abs() / 1000;
    let (n, en, ne) = match secs {
        s if s >= 2 * 86_400 => (s / 86_400, "days", "दिन"),
        s if s >= 86_400 => (1, "day", "दिन"),
        s if s >= 7_200 => (s / 3_600, "hours", "घण्टा"),
        s if s >= 3_600 => (1, "hour", "घण्टा"),
        s if s >= 120 => (s / 60, "minutes", "मिनेट"),
        s if s >= 60 => (1, "minute", "मिनेट"),
        s => (s.max(1), if s > 1 { "seconds" } else { "second" }, "सेकेन्ड"),
    };
    let amount = match locale {
        Locale::En => format!("{n} {en}"),
        Locale::Ne => format!("{} {ne}", digits(&n.to_string(), locale)),
    };
    say(locale, if at >= now { "in" } else { "ago" }, &[&amount])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_said_in_both_languages_and_times_read_as_words() {
        for (key, en, ne) in TEXTS {
            assert!(!en.is_empty() && !ne.is_empty(), "{key}");
            assert_eq!(en.matches("{}").count(), ne.matches("{}").count(), "{key}");
        }
        assert_eq!(relative(0, 3 * 3_600_000, Locale::En), "in about 3 hours");
        assert_eq!(relative(90_000, 0, Locale::En), "about 1 minute ago");
        assert_eq!(relative(0, 3 * 3_600_000, Locale::Ne), "करिब ३ घण्टामा");
    }
}
