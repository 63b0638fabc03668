//! The inbound SMTP listener (`EMAILVERIFY_INBOUND_ADDR`): a minimal server for what
//! relays send back. EHLO/HELO, STARTTLS (with `EMAILVERIFY_INBOUND_TLS_*`), MAIL, RCPT,
//! DATA, RSET, NOOP, QUIT; no AUTH, no relaying: every recipient but the bounce address
//! (any `+tag`) is refused with 550. At most 1 MiB a message, 100 recipients.
//!
//! What a peer (an address; IPv6: its /64) can take is bounded:
//! - at most `EMAILVERIFY_INBOUND_MAX_SESSIONS_PER_PEER` sessions at once: the next one
//!   is answered `421 4.7.0` and closed; and at most [`MAX_SESSIONS`] in all (then
//!   `421 4.3.2`), so new sessions never wait unseen in the kernel's queue;
//! - a session that makes no progress for the silence timeout (30 s) is closed: only an
//!   accepted MAIL, RCPT, DATA (each line of it) or STARTTLS counts, so NOOPs, RSETs and
//!   EHLOs hold nothing; and no session lasts longer than [`SESSION_LIMIT`] nor sends more
//!   than [`MAX_COMMANDS`] commands;
//! - a peer past `peers::UNMATCHED_PER_MINUTE` (100) reports that match nothing (or cannot be read)
//!   in a minute gets `450 4.7.1` (to MAIL, DATA and its reports) until the minute ends;
//! - lines end with CRLF only: a bare LF anywhere (a command or the message) is refused
//!   with `500 5.5.2` and the session closed, and DATA ends only at `<CR><LF>.<CR><LF>`,
//!   so no `<LF>.<CR><LF>` can smuggle a second message past us. Input pipelined behind
//!   STARTTLS (before the handshake) closes the session, so no plaintext command is taken
//!   as if it came over TLS.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Inbound;
use super::peers::{Seat, peer_of};
use super::wire::{Line, path_of, read_line, refuse, reply, strip_keyword};

/// The largest message accepted (RFC 1870 SIZE is announced).
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// What a session may send after passing `MAX_MESSAGE` before it is cut off.
const DISCARD_LIMIT: usize = 8 * MAX_MESSAGE;
/// The longest command line (RFC 5321 says 512; some clients send long parameters).
const MAX_LINE: usize = 4096;
const MAX_RECIPIENTS: usize = 100;
/// Commands per session: a session that never ends is a peer playing games.
const MAX_COMMANDS: usize = 1000;
/// Sessions at once, all peers together; past it new ones are answered 421 and closed.
pub const MAX_SESSIONS: usize = 64;
/// The longest a session may last, whatever it does.
pub const SESSION_LIMIT: Duration = Duration::from_secs(10 * 60);

/// Serves `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, inbound: Arc<Inbound>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_SESSIONS));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "inbound SMTP: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = peer_of(addr.ip());
        let (inbound, stop, slots) = (inbound.clone(), stop.clone(), slots.clone());
        tokio::spawn(async move {
            let Some(_seat) = Seat::take(&inbound.peers, inbound.max_sessions_per_peer, peer)
            else {
                crate::metrics::inbound_session_refused("per_peer");
                refuse(stream, "421 4.7.0 too many sessions from your address").await;
                return;
            };
            let Ok(_slot) = slots.try_acquire_owned() else {
                crate::metrics::inbound_session_refused("busy");
                refuse(stream, "421 4.3.2 too busy, try again later").await;
                return;
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                r = tokio::time::timeout(SESSION_LIMIT, session(stream, peer, &inbound)) => {
                    if r.is_err() {
                        crate::metrics::inbound_session_closed("lifetime");
                    }
                }
            }
        });
    }
}

/// How a conversation ended.
#[derive(PartialEq, Eq)]
enum Next {
    Close,
    /// The peer asked for TLS (and was told to go ahead).
    StartTls,
}

/// What DATA brought.
enum Data {
    Message(Vec<u8>),
    /// Past `MAX_MESSAGE`: read to its end and dropped.
    TooBig,
}

/// Why a session is closed early (also the metric's reason).
enum Cut {
    /// Nothing that made progress within the silence timeout.
    Silent,
    BareLf,
    TooLong,
    /// The peer went away, or sent far too much.
    Gone,
}

/// One session's state.
struct Session<'a> {
    inbound: &'a Inbound,
    peer: IpAddr,
    from: Option<String>,
    recipients: Vec<String>,
    commands: usize,
    /// The last time the session made progress (see the module's notes).
    progress: Instant,
    secured: bool,
}

async fn session(stream: TcpStream, peer: IpAddr, inbound: &Inbound) -> std::io::Result<()> {
    let mut s = Session {
        inbound,
        peer,
        from: None,
        recipients: Vec::new(),
        commands: 0,
        progress: Instant::now(),
        secured: false,
    };
    let mut io = BufReader::new(stream);
    let host = inbound.bounce.domain().to_owned();
    reply(&mut io, &format!("220 {host} ESMTP emailverify")).await?;
    if s.converse(&mut io).await? != Next::StartTls {
        return Ok(());
    }
    let Some(acceptor) = inbound.tls.clone() else {
        return Ok(());
    };
    let tls = match tokio::time::timeout_at(s.deadline(), acceptor.accept(io.into_inner())).await {
        Ok(Ok(tls)) => tls,
        _ => {
            crate::metrics::inbound_session_closed("tls_handshake");
            return Ok(());
        }
    };
    // RFC 3207: nothing said before the handshake counts; the client greets again.
    s.secured = true;
    s.progress = Instant::now();
    s.from = None;
    s.recipients.clear();
    s.converse(&mut BufReader::new(tls)).await.map(|_| ())
}

impl Session<'_> {
    fn deadline(&self) -> Instant {
        self.progress + self.inbound.silence_timeout
    }

    fn progressed(&mut self) {
        self.progress = Instant::now();
    }

    fn throttled(&self) -> bool {
        let throttled = self
            .inbound
            .peers
            .throttled(self.peer, self.inbound.clock.now_ms());
        if throttled {
            crate::metrics::inbound_throttled();
        }
        throttled
    }

    /// Closes the session early with `text`, counting why.
    async fn cut<S: AsyncWrite + Unpin>(&self, io: &mut S, why: Cut) -> std::io::Result<Next> {
        let (reason, text) = match why {
            Cut::Silent => ("silent", "421 4.4.2 closing: no progress in time"),
            Cut::BareLf => ("bare_lf", "500 5.5.2 lines end with CRLF: bare LF refused"),
            Cut::TooLong => ("too_long", "500 5.5.2 line too long"),
            Cut::Gone => ("gone", ""),
        };
        crate::metrics::inbound_session_closed(reason);
        if !text.is_empty() {
            let _ = reply(io, text).await;
        }
        Ok(Next::Close)
    }

    async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
    ) -> std::io::Result<Next> {
        let host = self.inbound.bounce.domain().to_owned();
        while self.commands < MAX_COMMANDS {
            self.commands += 1;
            let line = match read_line(io, MAX_LINE, self.deadline()).await {
                Ok(Line::Text(mut l)) => {
                    l.truncate(l.len() - 2);
                    if l.contains(&b'\r') {
                        return self.cut(io, Cut::BareLf).await;
                    }
                    String::from_utf8_lossy(&l).trim_end().to_owned()
                }
                Ok(Line::BareLf) => return self.cut(io, Cut::BareLf).await,
                Ok(Line::TooLong) => return self.cut(io, Cut::TooLong).await,
                Ok(Line::Eof) => return Ok(Next::Close),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return self.cut(io, Cut::Silent).await;
                }
                Err(_) => return self.cut(io, Cut::Gone).await,
            };
            let (verb, arg) = line.split_once(' ').unwrap_or((&line, ""));
            match verb.to_ascii_uppercase().as_str() {
                "EHLO" => {
                    self.from = None;
                    self.recipients.clear();
                    let starttls = if self.inbound.tls.is_some() && !self.secured {
                        "250-STARTTLS\r\n"
                    } else {
                        ""
                    };
                    let caps = format!(
                        "250-{host}\r\n{starttls}250-8BITMIME\r\n250-SMTPUTF8\r\n250-PIPELINING\r\n250 SIZE {MAX_MESSAGE}"
                    );
                    reply(io, &caps).await?;
                }
                "HELO" => reply(io, &format!("250 {host}")).await?,
                "STARTTLS" => {
                    if self.inbound.tls.is_none() || self.secured {
                        reply(io, "502 5.5.1 STARTTLS not available").await?;
                    } else if !arg.trim().is_empty() {
                        reply(io, "501 5.5.4 STARTTLS takes no argument").await?;
                    } else if !io.buffer().is_empty() {
                        // Commands pipelined behind STARTTLS would be read as if they
                        // came over TLS (CVE-2011-0411): refuse them all.
                        crate::metrics::inbound_session_closed("starttls_injection");
                        reply(
                            io,
                            "501 5.5.2 nothing may follow STARTTLS before the handshake",
                        )
                        .await?;
                        return Ok(Next::Close);
                    } else {
                        reply(io, "220 2.0.0 ready to start TLS").await?;
                        return Ok(Next::StartTls);
                    }
                }
                "MAIL" => {
                    let Some(arg) = strip_keyword(arg, "FROM:") else {
                        reply(io, "501 5.5.4 syntax: MAIL FROM:<address>").await?;
                        continue;
                    };
                    if self.throttled() {
                        reply(io, THROTTLED).await?;
                        continue;
                    }
                    let (addr, params) = path_of(arg);
                    let size = params.split_whitespace().find_map(|p| {
                        p.to_ascii_uppercase()
                            .strip_prefix("SIZE=")?
                            .parse::<usize>()
                            .ok()
                    });
                    if size.is_some_and(|s| s > MAX_MESSAGE) {
                        reply(io, "552 5.3.4 message too big").await?;
                        continue;
                    }
                    self.from = Some(addr);
                    self.recipients.clear();
                    self.progressed();
                    reply(io, "250 2.1.0 OK").await?;
                }
                "RCPT" => {
                    let Some(arg) = strip_keyword(arg, "TO:") else {
                        reply(io, "501 5.5.4 syntax: RCPT TO:<address>").await?;
                        continue;
                    };
                    let (addr, _) = path_of(arg);
                    if self.from.is_none() {
                        reply(io, "503 5.5.1 MAIL first").await?;
                    } else if self.recipients.len() >= MAX_RECIPIENTS {
                        reply(io, "452 4.5.3 too many recipients").await?;
                    } else if self.inbound.accepts(&addr) {
                        self.recipients.push(addr);
                        self.progressed();
                        reply(io, "250 2.1.5 OK").await?;
                    } else {
                        crate::metrics::inbound_recipient_refused();
                        reply(io, "550 5.7.1 relaying denied: no such recipient here").await?;
                    }
                }
                "DATA" => {
                    if self.recipients.is_empty() {
                        reply(io, "503 5.5.1 RCPT first").await?;
                        continue;
                    }
                    let recipients = std::mem::take(&mut self.recipients);
                    self.from = None;
                    if self.throttled() {
                        reply(io, THROTTLED).await?;
                        continue;
                    }
                    self.progressed();
                    reply(io, "354 end with <CRLF>.<CRLF>").await?;
                    let raw = match self.read_data(io).await {
                        Ok(Data::Message(raw)) => raw,
                        Ok(Data::TooBig) => {
                            reply(io, "552 5.3.4 message too big").await?;
                            continue;
                        }
                        Err(why) => return self.cut(io, why).await,
                    };
                    let answer = match self.inbound.receive(&recipients, &raw).await {
                        Ok("unmatched" | "unparseable")
                            if self
                                .inbound
                                .peers
                                .unmatched(self.peer, self.inbound.clock.now_ms()) =>
                        {
                            crate::metrics::inbound_throttled();
                            THROTTLED
                        }
                        Ok(_) => "250 2.0.0 OK",
                        Err(e) => {
                            tracing::warn!(error = %e, "inbound SMTP: could not record a report");
                            "451 4.3.0 try again later"
                        }
                    };
                    self.progressed();
                    reply(io, answer).await?;
                }
                "RSET" => {
                    self.from = None;
                    self.recipients.clear();
                    reply(io, "250 2.0.0 OK").await?;
                }
                "NOOP" => reply(io, "250 2.0.0 OK").await?,
                "QUIT" => {
                    reply(io, "221 2.0.0 bye").await?;
                    return Ok(Next::Close);
                }
                _ => reply(io, "502 5.5.2 command not implemented").await?,
            }
        }
        crate::metrics::inbound_session_closed("too_many_commands");
        reply(io, "421 4.7.0 too many commands").await?;
        Ok(Next::Close)
    }

    /// The message after DATA, dot-unstuffed, up to the line `.` (`<CR><LF>.<CR><LF>`, and
    /// nothing else, ends it); `TooBig` when it passed `MAX_MESSAGE` (the rest is read and
    /// dropped, so the client hears the 552). A bare LF, an endless line or far too much
    /// data cut the session off, and nothing of it is taken.
    async fn read_data<S: AsyncRead + Unpin>(&mut self, r: &mut BufReader<S>) -> Result<Data, Cut> {
        let mut raw = Vec::new();
        let (mut too_big, mut seen) = (false, 0usize);
        loop {
            let line = match read_line(r, MAX_MESSAGE + 3, self.deadline()).await {
                Ok(Line::Text(l)) => l,
                Ok(Line::BareLf) => return Err(Cut::BareLf),
                Ok(Line::TooLong) => return Err(Cut::TooLong),
                Ok(Line::Eof) => return Err(Cut::Gone),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(Cut::Silent),
                Err(_) => return Err(Cut::Gone),
            };
            self.progressed();
            if line == b".\r\n" {
                return Ok(if too_big {
                    Data::TooBig
                } else {
                    Data::Message(raw)
                });
            }
            seen += line.len();
            if seen > DISCARD_LIMIT {
                return Err(Cut::Gone);
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
}

/// The answer to a peer past its unmatched reports for the minute.
const THROTTLED: &str = "450 4.7.1 too many reports that match nothing, try again later";
