//! The SMTP wire: replies (with their enhanced status codes), what an exchange can fail
//! with, what a relay's EHLO offers, and reading and writing with a deadline.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::domain::email::mask;

/// A server reply: its code and the text of each line.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub(super) fn positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// The enhanced status code (RFC 3463) the reply starts with, e.g. `5.1.1`, when its
    /// class agrees with the reply code's.
    pub fn enhanced(&self) -> Option<String> {
        let first = self.lines.first()?.split_whitespace().next()?;
        let parts: Vec<&str> = first.split('.').collect();
        let number = |s: &str| (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
        let class = (self.code / 100).to_string();
        (parts.len() == 3 && parts[0] == class && number(parts[1]) && number(parts[2]))
            .then(|| first.to_string())
    }

    /// `550 5.1.1 j***@example.com: no such user`: the code and the first line, shortened,
    /// every address in it masked.
    pub fn summary(&self) -> String {
        let text = self.lines.first().map(String::as_str).unwrap_or("");
        let words: Vec<String> = text.split_whitespace().take(30).map(redact).collect();
        let mut summary = format!("{} {}", self.code, words.join(" "));
        summary.truncate(summary.trim_end().len().min(300));
        summary
    }
}

/// A word of a reply with any address in it masked.
fn redact(word: &str) -> String {
    if !word.contains('@') {
        return word.to_string();
    }
    let bare = word.trim_matches(|c: char| "<>:;,.\"'()[]".contains(c));
    mask(bare)
}

/// Why an exchange failed.
#[derive(Debug, Clone)]
pub enum Cause {
    /// No reply: refused, reset, closed or timed out.
    Network,
    /// Connecting, TLS, EHLO or AUTH failed (with the refusal, if any): the relay or our
    /// settings are at fault, not the message.
    Setup(Option<Reply>),
    /// The relay refused this message.
    Refused(Reply),
    /// The message needs an extension the relay does not offer (SMTPUTF8, 8BITMIME).
    Unsupported,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub cause: Cause,
    /// For the log: never a password, never a full address.
    pub detail: String,
    /// A reused connection was dead before the relay acknowledged anything: nothing was
    /// delivered, and the message may go again on a fresh connection.
    pub stale: bool,
}

impl Failure {
    pub(super) fn network(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self {
            cause: Cause::Network,
            detail,
            stale: false,
        }
    }

    pub(super) fn refused(what: &str, reply: Reply) -> Self {
        // "smtp reply …" as before, and no "refused": that word is for connections.
        let detail = format!("smtp reply to {what}: {}", reply.summary());
        Self {
            cause: Cause::Refused(reply),
            detail,
            stale: false,
        }
    }

    pub(super) fn setup(mut self) -> Self {
        self.cause = match self.cause {
            Cause::Refused(reply) => Cause::Setup(Some(reply)),
            _ => Cause::Setup(None),
        };
        self
    }
}

/// What the relay's EHLO reply offers.
#[derive(Debug, Default)]
pub(super) struct Extensions {
    pub(super) pipelining: bool,
    pub(super) starttls: bool,
    pub(super) eight_bit: bool,
    pub(super) smtputf8: bool,
    pub(super) auth: Vec<String>,
}

impl Extensions {
    pub(super) fn of(reply: &Reply) -> Self {
        let mut ext = Self::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace().map(|w| w.to_ascii_uppercase());
            match words.next().as_deref() {
                Some("PIPELINING") => ext.pipelining = true,
                Some("STARTTLS") => ext.starttls = true,
                Some("8BITMIME") => ext.eight_bit = true,
                Some("SMTPUTF8") => ext.smtputf8 = true,
                Some("AUTH") => ext.auth = words.collect(),
                _ => {}
            }
        }
        ext
    }
}

/// Replies longer than this many lines are not SMTP.
const MAX_REPLY_LINES: usize = 100;
const MAX_LINE: u64 = 2048;

/// A failure before the first reply of an exchange: the connection was dead already.
pub(super) fn stale(mut f: Failure) -> Failure {
    f.stale = matches!(f.cause, Cause::Network);
    f
}

pub(super) fn unsupported(extension: &str) -> Failure {
    Failure {
        cause: Cause::Unsupported,
        detail: format!("the relay does not offer {extension}, which this mail needs"),
        stale: false,
    }
}

pub(super) async fn write<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    bytes: &[u8],
    t: Duration,
) -> Result<(), Failure> {
    let stream = io.get_mut();
    let written = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    tokio::time::timeout(t, written)
        .await
        .map_err(|_| Failure::network("smtp timeout"))?
        .map_err(|e| Failure::network(format!("smtp: {e}")))
}

pub(super) async fn read_reply<S: AsyncRead + Unpin>(
    io: &mut BufReader<S>,
    t: Duration,
) -> Result<Reply, Failure> {
    let read = async {
        let mut lines = Vec::new();
        for _ in 0..MAX_REPLY_LINES {
            let mut raw = Vec::new();
            let n = (&mut *io)
                .take(MAX_LINE)
                .read_until(b'\n', &mut raw)
                .await
                .map_err(|e| Failure::network(format!("smtp: {e}")))?;
            if n == 0 {
                return Err(Failure::network("smtp: the relay closed the connection"));
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| Failure::network("smtp: not an SMTP reply"))?;
            lines.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, lines });
            }
        }
        Err(Failure::network("smtp: reply too long"))
    };
    tokio::time::timeout(t, read)
        .await
        .map_err(|_| Failure::network("smtp timeout"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    #[test]
    fn enhanced_status_codes_are_read_when_their_class_agrees() {
        assert_eq!(
            reply(550, "5.1.1 no such user").enhanced().as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            reply(451, "4.3.0 try later").enhanced().as_deref(),
            Some("4.3.0")
        );
        assert_eq!(reply(550, "4.1.1 odd").enhanced(), None);
        assert_eq!(reply(550, "no such user").enhanced(), None);
        assert_eq!(reply(550, "5.1 short").enhanced(), None);
    }

    #[test]
    fn summaries_mask_addresses() {
        let r = reply(550, "5.1.1 <jane@example.com>: Recipient address rejected");
        let s = r.summary();
        assert!(s.starts_with("550 5.1.1 "), "{s}");
        assert!(!s.contains("jane@"), "{s}");
        assert!(s.contains("@example.com"), "{s}");
    }

    #[test]
    fn ehlo_extensions_are_parsed() {
        let r = Reply {
            code: 250,
            lines: vec![
                "mx".into(),
                "PIPELINING".into(),
                "8BITMIME".into(),
                "auth login PLAIN".into(),
                "STARTTLS".into(),
            ],
        };
        let ext = Extensions::of(&r);
        assert!(ext.pipelining && ext.eight_bit && ext.starttls && !ext.smtputf8);
        assert_eq!(ext.auth, vec!["LOGIN", "PLAIN"]);
    }
}
