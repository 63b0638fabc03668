//! SMTP enhanced status codes (RFC 3463), as relays write them in replies and delivery
//! reports: which one a text carries, and which ones mean the mailbox does not exist.

/// The first RFC 3463 enhanced status code in `text` (`class.subject.detail`, class 2, 4
/// or 5; subject and detail of 1 to 3 digits), e.g. `5.1.1` in `550 5.1.1 no such user`.
pub fn enhanced_status(text: &str) -> Option<&str> {
    text.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ';' | ',' | '#'))
        .map(|w| w.trim_end_matches([':', '.']))
        .find(|w| is_enhanced_status(w))
}

fn is_enhanced_status(w: &str) -> bool {
    let mut parts = w.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |p: &str| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    matches!(class, "2" | "4" | "5") && digits(subject) && digits(detail)
}

/// What an event and a flow's `delivery_detail` say of a delivery report: the enhanced
/// status code found in `text` and a fixed `word` (`bounced`, `delayed`, `complained`),
/// nothing else — a report is anyone's to write (API.md, release 3).
pub fn report_detail(text: &str, word: &str) -> String {
    match enhanced_status(text) {
        Some(code) => format!("{code} {word}"),
        None => word.to_owned(),
    }
}

/// Whether a status means "no such mailbox / bad destination" (5.1.x): the address is
/// suppressed. Other permanent failures (5.7.x policy, 5.2.2 full, …) are not.
pub fn suppresses(status: &str) -> bool {
    status.starts_with("5.1.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_status_codes_are_found_in_replies_and_reports() {
        assert_eq!(enhanced_status("550 5.1.1 no such user"), Some("5.1.1"));
        assert_eq!(enhanced_status("smtp reply 550"), None);
        assert_eq!(
            enhanced_status("permanent error (550): 5.7.1 relaying denied"),
            Some("5.7.1")
        );
        assert_eq!(enhanced_status("Status: 5.1.10"), Some("5.1.10"));
        assert_eq!(enhanced_status("version 1.2.3"), None);
        assert!(suppresses("5.1.1") && !suppresses("5.7.1") && !suppresses("4.1.1"));
        assert_eq!(
            report_detail("5.1.1 550 no such user", "bounced"),
            "5.1.1 bounced"
        );
        assert_eq!(
            report_detail(
                "4.4.1 URGENT call +1-555-0100 jane＠victim.example",
                "delayed"
            ),
            "4.4.1 delayed"
        );
        assert_eq!(report_detail("URGENT", "complained"), "complained");
    }
}
