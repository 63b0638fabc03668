//! The inbound SMTP listener (`EMAILVERIFY_INBOUND_ADDR`): a minimal server for what
//! relays send back. EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no AUTH, no relaying:
//! every recipient but the bounce address (any `+tag`) is refused with 550. At most
//! 1 MiB a message, 100 recipients, so many connections at once, and every read has a
//! deadline, so a slow or hostile peer holds nothing for long.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Inbound;

/// The largest message accepted (RFC 1870 SIZE is announced).
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// What a session may send after passing `MAX_MESSAGE` before it is cut off.
const DISCARD_LIMIT: usize = 8 * MAX_MESSAGE;
/// The longest command line (RFC 5321 says 512; some clients send long parameters).
const MAX_LINE: usize = 4096;
const MAX_RECIPIENTS: usize = 100;
/// Commands per session: a session that never ends is a peer playing games.
const MAX_COMMANDS: usize = 1000;
/// Sessions at once; more wait in the kernel's queue.
const MAX_SESSIONS: usize = 64;
/// How long we wait for each command or data line.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a session may last.
const SESSION_LIMIT: Duration = Duration::from_secs(10 * 60);

/// Serves `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, inbound: Arc<Inbound>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_SESSIONS));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let (inbound, stop) = (inbound.clone(), stop.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::timeout(SESSION_LIMIT, session(stream, &inbound)) => {}
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "inbound SMTP: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One line read, at most `max` bytes.
enum Line {
    Eof,
    TooLong,
    Text(Vec<u8>),
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        READ_TIMEOUT,
        (&mut *r).take(max as u64).read_until(b'\n', &mut buf),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read timeout"))??;
    Ok(match read {
        0 => Line::Eof,
        _ if buf.ends_with(b"\n") => Line::Text(buf),
        _ if buf.len() >= max => Line::TooLong,
        _ => Line::Eof,
    })
}

async fn reply<W: AsyncWrite + Unpin>(w: &mut W, text: &str) -> std::io::Result<()> {
    w.write_all(text.as_bytes()).await?;
    w.write_all(b"\r\n").await
}

/// The address in `FROM:<a> …` / `TO:<a> …`, and the rest (parameters).
fn path_of(arg: &str) -> (String, &str) {
    let arg = arg.trim_start();
    match arg.strip_prefix('<').and_then(|a| a.split_once('>')) {
        Some((addr, rest)) => (addr.to_owned(), rest),
        None => {
            let (addr, rest) = arg.split_once(' ').unwrap_or((arg, ""));
            (addr.to_owned(), rest)
        }
    }
}

async fn session(stream: TcpStream, inbound: &Inbound) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let host = inbound.bounce.domain().to_owned();
    reply(&mut w, &format!("220 {host} ESMTP emailverify")).await?;
    let mut from: Option<String> = None;
    let mut recipients: Vec<String> = Vec::new();
    for _ in 0..MAX_COMMANDS {
        let line = match read_line(&mut r, MAX_LINE).await {
            Ok(Line::Text(l)) => String::from_utf8_lossy(&l).trim_end().to_owned(),
            Ok(Line::TooLong) => return reply(&mut w, "500 5.5.2 line too long").await,
            Ok(Line::Eof) => return Ok(()),
            Err(_) => return reply(&mut w, "421 4.4.2 timeout").await,
        };
        let (verb, arg) = line.split_once(' ').unwrap_or((&line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                let caps = format!(
                    "250-{host}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-PIPELINING\r\n250 SIZE {MAX_MESSAGE}"
                );
                reply(&mut w, &caps).await?;
            }
            "HELO" => reply(&mut w, &format!("250 {host}")).await?,
            "MAIL" => {
                let Some(arg) = strip_keyword(arg, "FROM:") else {
                    reply(&mut w, "501 5.5.4 syntax: MAIL FROM:<address>").await?;
                    continue;
                };
                let (addr, params) = path_of(arg);
                let size = params.split_whitespace().find_map(|p| {
                    p.to_ascii_uppercase()
                        .strip_prefix("SIZE=")?
                        .parse::<usize>()
                        .ok()
                });
                if size.is_some_and(|s| s > MAX_MESSAGE) {
                    reply(&mut w, "552 5.3.4 message too big").await?;
                    continue;
                }
                from = Some(addr);
                recipients.clear();
                reply(&mut w, "250 2.1.0 OK").await?;
            }
            "RCPT" => {
                let Some(arg) = strip_keyword(arg, "TO:") else {
                    reply(&mut w, "501 5.5.4 syntax: RCPT TO:<address>").await?;
                    continue;
                };
                let (addr, _) = path_of(arg);
                if from.is_none() {
                    reply(&mut w, "503 5.5.1 MAIL first").await?;
                } else if recipients.len() >= MAX_RECIPIENTS {
                    reply(&mut w, "452 4.5.3 too many recipients").await?;
                } else if inbound.accepts(&addr) {
                    recipients.push(addr);
                    reply(&mut w, "250 2.1.5 OK").await?;
                } else {
                    crate::metrics::inbound_recipient_refused();
                    reply(&mut w, "550 5.7.1 relaying denied: no such recipient here").await?;
                }
            }
            "DATA" => {
                if recipients.is_empty() {
                    reply(&mut w, "503 5.5.1 RCPT first").await?;
                    continue;
                }
                reply(&mut w, "354 end with <CRLF>.<CRLF>").await?;
                let Some(raw) = read_data(&mut r).await? else {
                    from = None;
                    recipients.clear();
                    reply(&mut w, "552 5.3.4 message too big").await?;
                    continue;
                };
                let answer = match inbound.receive(&recipients, &raw).await {
                    Ok(_) => "250 2.0.0 OK",
                    Err(e) => {
                        tracing::warn!(error = %e, "inbound SMTP: could not record a report");
                        "451 4.3.0 try again later"
                    }
                };
                from = None;
                recipients.clear();
                reply(&mut w, answer).await?;
            }
            "RSET" => {
                from = None;
                recipients.clear();
                reply(&mut w, "250 2.0.0 OK").await?;
            }
            "NOOP" => reply(&mut w, "250 2.0.0 OK").await?,
            "QUIT" => return reply(&mut w, "221 2.0.0 bye").await,
            _ => reply(&mut w, "502 5.5.2 command not implemented").await?,
        }
    }
    reply(&mut w, "421 4.7.0 too many commands").await
}

fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &arg[keyword.len()..])
}

/// The message after DATA, dot-unstuffed, up to the lone `.`; `None` when it passed
/// `MAX_MESSAGE` (the rest is read and dropped, so the client hears the 552; a peer that
/// sends far more than that, or one endless line, is cut off).
async fn read_data<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let cut_off = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
    let mut raw = Vec::new();
    let (mut too_big, mut seen) = (false, 0usize);
    loop {
        let line = match read_line(r, MAX_MESSAGE + 3).await? {
            Line::Text(l) => l,
            Line::TooLong => return Err(cut_off("an endless line in DATA")),
            Line::Eof => return Err(cut_off("connection closed in DATA")),
        };
        if line == b".\r\n" || line == b".\n" {
            return Ok((!too_big).then_some(raw));
        }
        seen += line.len();
        if seen > DISCARD_LIMIT {
            return Err(cut_off("far too much data"));
        }
        if !too_big {
            raw.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
            if raw.len() > MAX_MESSAGE {
                too_big = true;
                raw = Vec::new();
            }
        }
    }
}
