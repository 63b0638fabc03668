//! A queued outbox row turned into the message handed to SMTP: the template rendered in
//! the flow's language, the sealed link opened, headers and envelope set.

use std::sync::Arc;

use lettre::Message;
use lettre::address::Envelope;
use lettre::message::dkim::DkimConfig;
use lettre::message::header::{
    self, ContentTransferEncoding, ContentType, HeaderName, HeaderValue,
};
use lettre::message::{Body, Mailbox, MultiPart};

use super::dkim::DkimKey;
use super::templates::Templates;
use crate::domain::{Keyring, Locale, MailParams, Secrets, Template};
use crate::store::entity::outbox;

/// What composing a message needs: the keys that open sealed links, the templates, the
/// From address.
pub struct Composer {
    keys: Keyring,
    templates: Arc<Templates>,
    from: Mailbox,
    /// The right-hand side of every Message-ID: the From address's domain (as ASCII).
    id_domain: String,
    /// `EMAILVERIFY_BOUNCE_ADDRESS`: tagged per mail, the envelope sender.
    bounce: Option<lettre::Address>,
    /// `EMAILVERIFY_DKIM_*`: every message is signed, d = the From domain.
    dkim: Option<DkimConfig>,
}

impl Composer {
    /// `keys` open sealed links; `from` is every mail's From; `bounce`, when set
    /// (`EMAILVERIFY_BOUNCE_ADDRESS`), tagged per mail, is the envelope sender; `dkim`,
    /// when set, signs every message for the From domain; times are written for
    /// `time_zone`.
    pub fn new(
        keys: Keyring,
        from: Mailbox,
        bounce: Option<lettre::Address>,
        dkim: Option<&DkimKey>,
        time_zone: jiff::tz::TimeZone,
    ) -> Result<Self, String> {
        let id_domain = message_id_domain(from.email.domain());
        let dkim = dkim.map(|key| key.config(&id_domain)).transpose()?;
        Ok(Self {
            keys,
            templates: Arc::new(Templates::new(time_zone)),
            id_domain,
            from,
            bounce,
            dkim,
        })
    }

    pub fn compose(&self, mail: &outbox::Model) -> Result<Message, String> {
        let template = mail.template;
        let params: MailParams =
            serde_json::from_str(&mail.params).map_err(|_| "unreadable mail parameters")?;
        let secrets: Option<Secrets> = match &mail.sealed_link {
            Some(sealed) => {
                let opened = self
                    .keys
                    .unseal(sealed, mail.mail_id.as_bytes())
                    .map_err(|_| "the link cannot be unsealed with the configured keys")?;
                Some(serde_json::from_slice(&opened).map_err(|_| "the sealed link is unreadable")?)
            }
            None if template == Template::ChangeNotice => None,
            None => return Err("the link was erased".into()),
        };
        let rendered = self
            .templates
            .render(
                template,
                Locale::from_tag(&mail.locale),
                &params,
                secrets.as_ref(),
            )
            .map_err(|e| format!("template: {e}"))?;
        // Not `Mailbox::from_str`: lettre's parser refuses RFC 6531 local parts with
        // combining marks (`नमस्ते`), which `EmailAddress::parse` accepted.
        let to = crate::domain::EmailAddress::from_trusted(mail.recipient.clone())
            .to_lettre()
            .ok_or("the recipient does not parse")?;
        // lettre would derive the envelope by parsing the To header again: give it.
        let sender = envelope_sender(self.bounce.as_ref(), &mail.mail_id)
            .unwrap_or_else(|| self.from.email.clone());
        let envelope =
            Envelope::new(Some(sender), vec![to.clone()]).map_err(|e| format!("envelope: {e}"))?;
        let (content_type, body) = top_level(MultiPart::alternative_plain_html(
            readable_body(rendered.text),
            readable_body(rendered.html),
        ))?;
        let mut message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .envelope(envelope)
            .subject(rendered.subject)
            // Deterministic per outbox row: a duplicate delivery is recognisable, and a
            // bounce that quotes it finds its mail.
            .message_id(Some(format!("<{}@{}>", mail.mail_id, self.id_domain)))
            // RFC 3834: no out-of-office or other automatic replies to this.
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".into(),
            ))
            .header(header::MIME_VERSION_1_0)
            .header(content_type)
            .body(body)
            .map_err(|e| format!("message: {e}"))?;
        if let Some(dkim) = &self.dkim {
            message.sign(dkim);
        }
        Ok(message)
    }
}

/// The multipart's Content-Type (with its boundary) as a header of the message itself and
/// the rest as the message's body. lettre writes a multipart's Content-Type with the body,
/// out of its DKIM signer's sight, so `.multipart(..)` would leave it unsigned. 8bit is the
/// multipart's own transfer encoding (RFC 2045 §6.4: 7bit, 8bit or binary), whatever
/// each part's is.
fn top_level(part: MultiPart) -> Result<(ContentType, Body), String> {
    let content_type = part
        .headers()
        .get::<ContentType>()
        .ok_or("the multipart has no Content-Type")?;
    let formatted = part.formatted();
    let start = formatted
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the multipart has no body")?
        + 4;
    let body = Body::dangerous_pre_encoded(
        formatted[start..].to_vec(),
        ContentTransferEncoding::EightBit,
    );
    Ok((content_type, body))
}

/// A Message-ID's domain must be ASCII: an IDN From domain goes as its A-label.
fn message_id_domain(domain: &str) -> String {
    idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_ascii_lowercase())
}

/// 8bit transfer encoding (RFC 6152) keeps each link whole on one line and Nepali text
/// readable in the raw message, where quoted-printable would fold the link and turn
/// `token=` into `token=3D`. lettre's safe constructor allows 8bit only for lines under 76
/// bytes; RFC 5322 allows 998, which is what we check before asking for the pre-encoded
/// body. Anything else gets lettre's own choice.
fn readable_body(text: String) -> Body {
    let crlf = text
        .replace("\r\n", "\n")
        .replace('\r', "")
        .replace('\n', "\r\n");
    let fits_8bit = !crlf.contains('\0') && crlf.split("\r\n").all(|line| line.len() <= 998);
    if fits_8bit {
        Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::EightBit)
    } else {
        Body::new(text)
    }
}

/// The envelope sender (Return-Path) of the mail `mail_id`: the bounce address with the
/// mail's id as its `+tag`, or `None` without a bounce address (then the From is used).
pub fn envelope_sender(bounce: Option<&lettre::Address>, mail_id: &str) -> Option<lettre::Address> {
    let bounce = bounce?;
    let local = bounce.user();
    let base = local.split_once('+').map_or(local, |(base, _)| base);
    lettre::Address::new(format!("{base}+{mail_id}"), bounce.domain()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_carry_the_from_domain_in_ascii() {
        assert_eq!(message_id_domain("wallet.example"), "wallet.example");
        assert_eq!(message_id_domain("bücher.example"), "xn--bcher-kva.example");
    }

    #[test]
    fn bodies_are_8bit_with_whole_lines_when_they_fit() {
        let link = format!("http://127.0.0.1:8080/verify?token={}", "A".repeat(43));
        let body = readable_body(format!("नमस्ते\n{link}\n"));
        assert_eq!(body.encoding(), ContentTransferEncoding::EightBit);
        let raw = String::from_utf8(body.into_vec()).unwrap();
        assert_eq!(raw, format!("नमस्ते\r\n{link}\r\n"));
        let huge = readable_body("x".repeat(2000));
        assert_ne!(huge.encoding(), ContentTransferEncoding::EightBit);
    }
}
