//! Reading what comes back, with a MIME parser (`mail-parser`): a delivery status
//! notification (RFC 3464, `multipart/report; report-type=delivery-status`) or a
//! complaint feedback report (RFC 5965 ARF, `report-type=feedback-report`), and which
//! mail it is about (the original message's Message-ID; the tag is the listener's).

use mail_parser::{Message, MessageParser, MimeHeaders};

/// What a report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A delivery status notification: one entry per recipient it reports on.
    Delivery {
        recipients: Vec<RecipientStatus>,
        original: Original,
    },
    /// A complaint (ARF): the recipient reported the mail, e.g. as spam.
    Complaint {
        /// `Feedback-Type` (`abuse`, `fraud`, …).
        feedback_type: String,
        original: Original,
    },
}

/// What a report tells about the mail it concerns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Original {
    /// The original message's Message-ID, without angle brackets.
    pub message_id: Option<String>,
    /// The original envelope sender (ARF `Original-Mail-From`): it carries the tag.
    pub mail_from: Option<String>,
}

/// One per-recipient block of a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// `failed`, `delayed`, `delivered`, `relayed`, `expanded` (lower case).
    pub action: String,
    /// The RFC 3463 status, e.g. `5.1.1`.
    pub status: String,
    /// The remote server's text (`Diagnostic-Code` without its type), may be empty.
    pub diagnostic: String,
}

/// Parses a received message as a report; `None` when it is not one we understand.
pub fn parse(raw: &[u8]) -> Option<Report> {
    let msg = MessageParser::default().parse(raw)?;
    let ct = msg.content_type()?;
    let report_type = ct.attribute("report-type").map(str::to_ascii_lowercase);
    let is_report = ct.ctype().eq_ignore_ascii_case("multipart")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"));
    if !is_report {
        return None;
    }
    let mut fields = None;
    let mut original = Original::default();
    for part in &msg.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let kind = (
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or_default().to_ascii_lowercase(),
        );
        match (kind.0.as_str(), kind.1.as_str()) {
            ("message", "delivery-status" | "global-delivery-status" | "feedback-report") => {
                fields = Some(field_groups(&String::from_utf8_lossy(part.contents())));
            }
            ("message", "rfc822" | "global") => {
                if let Some(m) = part.message() {
                    original.message_id = message_id_of(m);
                }
            }
            ("text", "rfc822-headers") | ("message", "global-headers") => {
                let mut headers = part.contents().to_vec();
                headers.extend_from_slice(b"\r\n\r\n");
                if let Some(m) = MessageParser::default().parse(&headers) {
                    original.message_id = message_id_of(&m);
                }
            }
            _ => {}
        }
    }
    let groups = fields?;
    match report_type.as_deref() {
        Some("delivery-status") => {
            let recipients = groups
                .iter()
                .filter_map(|g| {
                    let action = field(g, "action")?.to_ascii_lowercase();
                    let status = field(g, "status")
                        .and_then(crate::domain::status::enhanced_status)
                        .unwrap_or_default()
                        .to_owned();
                    let diagnostic = field(g, "diagnostic-code")
                        .map(|d| d.split_once(';').map_or(d, |(_, text)| text).trim())
                        .unwrap_or_default()
                        .to_owned();
                    Some(RecipientStatus {
                        action,
                        status,
                        diagnostic,
                    })
                })
                .collect::<Vec<_>>();
            (!recipients.is_empty()).then_some(Report::Delivery {
                recipients,
                original,
            })
        }
        Some("feedback-report") => {
            let first = groups.first()?;
            original.mail_from = field(first, "original-mail-from").map(|a| {
                a.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            });
            let feedback_type = field(first, "feedback-type")?.to_ascii_lowercase();
            Some(Report::Complaint {
                feedback_type,
                original,
            })
        }
        _ => None,
    }
}

fn message_id_of(m: &Message<'_>) -> Option<String> {
    m.message_id()
        .map(|id| id.trim_matches(['<', '>']).to_owned())
}

/// `name: value` lines (folded lines unfolded, names lower-cased), in blank-line
/// separated groups: a DSN's per-message group, then one per recipient.
fn field_groups(text: &str) -> Vec<Vec<(String, String)>> {
    let mut groups: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if groups.last().is_some_and(|g| !g.is_empty()) {
                groups.push(Vec::new());
            }
            continue;
        }
        let group = groups.last_mut().expect("at least one group");
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = group.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            group.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    groups.retain(|g| !g.is_empty());
    groups
}

fn field<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3464's example shape, as Postfix writes it.
    const POSTFIX: &str = "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
To: bounces+m1@mail.wallet.example\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"B1\"\r\n\
\r\n\
--B1\r\n\
Content-Type: text/plain\r\n\
\r\n\
I'm sorry to have to inform you that your message could not be delivered.\r\n\
--B1\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.net\r\n\
Arrival-Date: Mon, 30 Nov 2026 18:00:00 +0000 (UTC)\r\n\
\r\n\
Final-Recipient: rfc822; jane@example.com\r\n\
Original-Recipient: rfc822;jane@example.com\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Remote-MTA: dns; mx.example.com\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <jane@example.com>: Recipient address\r\n\
\x20   rejected: User unknown\r\n\
\r\n\
--B1\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
From: Wallet <no-reply@wallet.example>\r\n\
To: jane@example.com\r\n\
Message-ID: <m1@wallet.example>\r\n\
Subject: Confirm your email\r\n\
\r\n\
--B1--\r\n";

    #[test]
    fn a_postfix_bounce_reads_as_a_failed_recipient_with_its_status() {
        let Some(Report::Delivery {
            recipients,
            original,
        }) = parse(POSTFIX.as_bytes())
        else {
            panic!("a DSN")
        };
        assert_eq!(original.message_id.as_deref(), Some("m1@wallet.example"));
        assert_eq!(recipients.len(), 1);
        assert_eq!(recipients[0].action, "failed");
        assert_eq!(recipients[0].status, "5.1.1");
        assert_eq!(
            recipients[0].diagnostic,
            "550 5.1.1 <jane@example.com>: Recipient address rejected: User unknown"
        );
    }

    #[test]
    fn anything_else_is_not_a_report() {
        assert_eq!(parse(b"Subject: hi\r\n\r\nhello\r\n"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(&[0xff; 64]), None);
    }
}
