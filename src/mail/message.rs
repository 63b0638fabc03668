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
    /// `EMAILVERIFY_DEFAULT_LOCALE`: the language of a flow that chose none.
    default_locale: Locale,
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
            default_locale: Locale::default(),
        })
    }

    /// Mails of flows whose `locale` was empty are written in `locale`.
    pub fn with_default_locale(mut self, locale: Locale) -> Self {
        self.default_locale = locale;
        self
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
                Locale::requested(&mail.locale).unwrap_or(self.default_locale),
                &params,
                secrets.as_ref(),
            )
            .map_err(|e| format!("template: {e}"))?;
        // Not `Mailbox::from_str`: lettre's parser refuses RFC 6531 local parts with
        // combining marks (`नमस्ते`), which `EmailAddress::parse` accepted.
        let to = crate::domain::EmailAddress::from_trusted(mail.recipient.clone())
            .to_lettre()
            .ok_or("the recipient does not parse")?;
        // The mail's tag: its bounce address's `+tag` and its Message-ID's left part.
        let tag = mail_tag(&self.keys, &mail.mail_id).ok_or("the mail id is not a UUID")?;
        // lettre would derive the envelope by parsing the To header again: give it.
        let sender =
            envelope_sender(self.bounce.as_ref(), &tag).unwrap_or_else(|| self.from.email.clone());
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
            // Deterministic per outbox row (and key): a duplicate delivery is
            // recognisable, and a bounce that quotes it finds its mail. Never the bare
            // mail id: nobody can make up the Message-ID of another's mail.
            .message_id(Some(format!("<{tag}@{}>", self.id_domain)))
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

/// The envelope sender (Return-Path) of a mail: the bounce address with the mail's `tag`
/// ([`mail_tag`]) as its `+tag`, or `None` without a bounce address (then the From is used).
pub fn envelope_sender(bounce: Option<&lettre::Address>, tag: &str) -> Option<lettre::Address> {
    let bounce = bounce?;
    let local = bounce.user();
    let base = local.split_once('+').map_or(local, |(base, _)| base);
    lettre::Address::new(format!("{base}+{tag}"), bounce.domain()).ok()
}

/// Bytes of a mail's MAC that its tag carries: 128 bits nobody without the keys can make.
const TAG_MAC_BYTES: usize = 16;
/// A tag's length: 16 bytes of mail id and 16 of MAC, in unpadded base32.
pub const TAG_LEN: usize = 52;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A mail's tag, the `+tag` of its bounce address and the left part of its Message-ID:
/// lower-case unpadded base32 (RFC 4648) of the mail's id (a UUID, 16 bytes) and the first
/// 16 bytes of its MAC under the newest key (`Keyring::mail_macs`). Only the holder of the
/// token keys can make one, so knowing a flow's or a mail's id does not help forge a
/// report; and a report's tag is checked without a database column. `None` when `mail_id`
/// is not a UUID.
pub fn mail_tag(keys: &Keyring, mail_id: &str) -> Option<String> {
    let id = uuid::Uuid::parse_str(mail_id).ok()?;
    let macs = keys.mail_macs(id.as_bytes());
    let mut raw = id.as_bytes().to_vec();
    raw.extend_from_slice(&macs.first()?[..TAG_MAC_BYTES]);
    Some(base32(&raw))
}

/// The mail id a tag names, when its MAC holds under any configured key (compared in
/// constant time); `None` for anything else, the bare mail ids older releases used as tags
/// included. Case does not matter (a relay may fold it).
pub fn mail_of_tag(keys: &Keyring, tag: &str) -> Option<String> {
    use subtle::ConstantTimeEq;
    if tag.len() != TAG_LEN {
        return None;
    }
    let raw = unbase32(tag)?;
    let (id, mac) = raw.split_at(16);
    let found = keys.mail_macs(id).iter().fold(false, |found, m| {
        found | bool::from(m[..TAG_MAC_BYTES].ct_eq(mac))
    });
    let id = uuid::Uuid::from_slice(id).ok()?;
    found.then(|| id.to_string())
}

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Unpadded base32 of exactly 32 bytes, in its canonical spelling only (the unused low
/// bits of the last character are zero).
fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(32);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = BASE32.iter().position(|&a| a == c.to_ascii_lowercase())? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    (out.len() == 32 && acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(bytes: &[u8]) -> Keyring {
        Keyring::new(vec![bytes.repeat(32)]).unwrap()
    }

    #[test]
    fn tags_are_128_bit_macs_that_only_the_keys_make_and_follow_rotation() {
        let id = uuid::Uuid::now_v7().to_string();
        let old = ring(b"o");
        let tag = mail_tag(&old, &id).unwrap();
        assert_eq!(tag.len(), TAG_LEN);
        assert!(tag.bytes().all(|b| BASE32.contains(&b)), "{tag}");
        assert_eq!(mail_of_tag(&old, &tag), Some(id.clone()));
        assert_eq!(
            mail_of_tag(&old, &tag.to_ascii_uppercase()),
            Some(id.clone())
        );
        // The mail id alone (the old tag), the flow's, or a tag with one bit changed: nothing.
        assert_eq!(mail_of_tag(&old, &id), None);
        assert_eq!(mail_of_tag(&old, &id.replace('-', "")), None);
        for i in 0..TAG_LEN {
            let mut changed = tag.clone().into_bytes();
            changed[i] = if changed[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(changed).unwrap();
            assert_eq!(mail_of_tag(&old, &changed), None, "{changed}");
        }
        // Another mail's id with this mail's MAC: nothing.
        let other = uuid::Uuid::now_v7();
        let mut forged = other.as_bytes().to_vec();
        forged.extend_from_slice(&unbase32(&tag).unwrap()[16..]);
        assert_eq!(mail_of_tag(&old, &base32(&forged)), None);
        // Rotation: the newest key signs, every configured key verifies.
        let rotated = Keyring::new(vec![b"n".repeat(32), b"o".repeat(32)]).unwrap();
        assert_eq!(mail_of_tag(&rotated, &tag), Some(id.clone()));
        assert_ne!(mail_tag(&rotated, &id).unwrap(), tag);
        assert_eq!(mail_of_tag(&ring(b"n"), &tag), None);
        assert_eq!(mail_tag(&old, "not-a-uuid"), None);
    }

    #[test]
    fn the_tag_fits_a_bounce_address_and_its_base32_round_trips() {
        let bounce: lettre::Address = "bounces@mail.wallet.example".parse().unwrap();
        let tag = mail_tag(&ring(b"k"), &uuid::Uuid::now_v7().to_string()).unwrap();
        let sender = envelope_sender(Some(&bounce), &tag).unwrap();
        assert_eq!(
            sender.to_string(),
            format!("bounces+{tag}@mail.wallet.example")
        );
        let bytes: Vec<u8> = (0..32u8).collect();
        assert_eq!(unbase32(&base32(&bytes)).unwrap(), bytes);
        // A non-canonical last character (its unused bits set) is refused.
        let mut text = base32(&bytes).into_bytes();
        let last = text.len() - 1;
        text[last] = BASE32[BASE32.iter().position(|&c| c == text[last]).unwrap() | 1];
        assert_eq!(unbase32(std::str::from_utf8(&text).unwrap()), None);
    }

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
