//! The sink's SMTP sessions: accept, (STARTTLS / implicit TLS), AUTH, one message after
//! another, each parsed into a `ReceivedMail`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mail_parser::MessageParser;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use super::*;

pub(super) fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(64).unwrap()
}

pub(super) async fn serve(
    mut listener: tokio::net::TcpListener,
    addr: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    tx: mpsc::UnboundedSender<ReceivedMail>,
    script: Arc<std::sync::Mutex<VecDeque<String>>>,
    counters: Arc<Counters>,
    options: Arc<SinkOptions>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                if *mode.borrow() == Mode::DropConnections {
                    counters.dropped.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                    continue;
                }
                counters.served.fetch_add(1, Ordering::SeqCst);
                let (tx, script, counters) = (tx.clone(), script.clone(), counters.clone());
                let (seen, mut cut) = (mode.clone(), mode.clone());
                let options = options.clone();
                counters.open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let sink = Session { tx, script, mode: seen, counters, options };
                    tokio::select! {
                        _ = sink.run(stream) => {}
                        _ = cut.wait_for(|m| m.cuts_sessions()) => {}
                    }
                    sink.counters.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
            changed = mode.changed() => {
                if changed.is_err() { return; }
                if *mode.borrow_and_update() == Mode::Down {
                    drop(listener);
                    if mode.wait_for(|m| *m != Mode::Down).await.is_err() { return; }
                    listener = bind(addr);
                }
            }
        }
    }
}

/// What one connection's conversation shares with the sink.
pub(super) struct Session {
    tx: mpsc::UnboundedSender<ReceivedMail>,
    script: Arc<std::sync::Mutex<VecDeque<String>>>,
    mode: watch::Receiver<Mode>,
    counters: Arc<Counters>,
    options: Arc<SinkOptions>,
}

impl Session {
    async fn run(&self, stream: TcpStream) -> std::io::Result<()> {
        match &self.options.tls {
            SinkTls::Implicit(config) => {
                let Some(tls) = self.handshake(config, stream).await else {
                    return Ok(());
                };
                self.converse(BufReader::new(tls), true, true).await?;
            }
            SinkTls::StartTls(config) => {
                if let Some(io) = self.converse(BufReader::new(stream), true, false).await?
                    && let Some(tls) = self.handshake(config, io.into_inner()).await
                {
                    self.converse(BufReader::new(tls), false, true).await?;
                }
            }
            SinkTls::None => {
                self.converse(BufReader::new(stream), true, false).await?;
            }
        }
        Ok(())
    }

    async fn handshake(
        &self,
        config: &Arc<ServerConfig>,
        stream: TcpStream,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        match TlsAcceptor::from(config.clone()).accept(stream).await {
            Ok(tls) => Some(tls),
            Err(_) => {
                self.counters
                    .failed_handshakes
                    .fetch_add(1, Ordering::SeqCst);
                None
            }
        }
    }

    /// One conversation over `io`; returns the stream when the client asked for STARTTLS.
    async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut io: BufReader<S>,
        greet: bool,
        secure: bool,
    ) -> std::io::Result<Option<BufReader<S>>> {
        let opts = &self.options;
        if greet {
            io.get_mut().write_all(b"220 sink ESMTP ready\r\n").await?;
        }
        let (mut from, mut to) = (String::new(), Vec::new());
        let mut user = None;
        let mut line = String::new();
        loop {
            line.clear();
            if io.read_line(&mut line).await? == 0 {
                return Ok(None);
            }
            let cmd = line.trim_end().to_string();
            // A pipelining client has the next command in the buffer already.
            if !io.buffer().is_empty() {
                self.counters.pipelined.store(true, Ordering::SeqCst);
            }
            let upper = cmd.to_ascii_uppercase();
            let reply: Vec<u8> = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                let mut ehlo = String::from("250-sink\r\n");
                if opts.pipelining {
                    ehlo.push_str("250-PIPELINING\r\n");
                }
                if matches!(opts.tls, SinkTls::StartTls(_)) && !secure {
                    ehlo.push_str("250-STARTTLS\r\n");
                }
                if opts.auth.is_some() && secure {
                    ehlo.push_str("250-AUTH PLAIN LOGIN\r\n");
                }
                ehlo.push_str("250-8BITMIME\r\n250 SMTPUTF8\r\n");
                ehlo.into_bytes()
            } else if upper == "STARTTLS" && matches!(opts.tls, SinkTls::StartTls(_)) && !secure {
                io.get_mut().write_all(b"220 go ahead\r\n").await?;
                return Ok(Some(io));
            } else if upper.starts_with("AUTH ") && secure && opts.auth.is_some() {
                let given = self.login(&mut io, &cmd[5..]).await?;
                let ok = given.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
                    == opts.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
                if ok {
                    user = given.map(|(u, _)| u);
                    b"235 2.7.0 authenticated\r\n".to_vec()
                } else {
                    b"535 5.7.8 bad credentials\r\n".to_vec()
                }
            } else if upper.starts_with("MAIL FROM:") && opts.auth.is_some() && user.is_none() {
                b"530 5.7.0 authentication required\r\n".to_vec()
            } else if upper.starts_with("MAIL FROM:") {
                from = address_of(&cmd[10..]);
                to.clear();
                b"250 OK\r\n".to_vec()
            } else if upper.starts_with("RCPT TO:") {
                to.push(address_of(&cmd[8..]));
                b"250 OK\r\n".to_vec()
            } else if upper == "DATA" {
                io.get_mut().write_all(b"354 go ahead\r\n").await?;
                let mut raw = String::new();
                loop {
                    line.clear();
                    if io.read_line(&mut line).await? == 0 {
                        return Ok(None);
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    // Dot-unstuffing (RFC 5321 4.5.2).
                    raw.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                if *self.mode.borrow() == Mode::HangAfterData {
                    self.counters.hanging.fetch_add(1, Ordering::SeqCst);
                    // No answer: hold the session until the client closes it.
                    while io.read_line(&mut line).await? != 0 {}
                    return Ok(None);
                }
                let wait = self.counters.accept_after_ms.load(Ordering::SeqCst);
                if wait > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                let scripted = self.script.lock().unwrap().pop_front();
                match scripted {
                    Some(reply) => format!("{reply}\r\n").into_bytes(),
                    None => {
                        let mail = parse(&from, &to, raw, secure, user.clone());
                        let _ = self.tx.send(mail);
                        b"250 OK queued\r\n".to_vec()
                    }
                }
            } else if upper == "QUIT" {
                io.get_mut().write_all(b"221 bye\r\n").await?;
                return Ok(None);
            } else if upper == "RSET" || upper == "NOOP" {
                b"250 OK\r\n".to_vec()
            } else {
                b"502 not implemented\r\n".to_vec()
            };
            io.get_mut().write_all(&reply).await?;
        }
    }

    /// AUTH PLAIN (initial response) or LOGIN: the user and password given.
    async fn login<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: &mut BufReader<S>,
        args: &str,
    ) -> std::io::Result<Option<(String, String)>> {
        let decode = |b64: &str| {
            B64.decode(b64.trim())
                .ok()
                .and_then(|v| String::from_utf8(v).ok())
        };
        let mut words = args.split_whitespace();
        match words.next().map(|w| w.to_ascii_uppercase()).as_deref() {
            Some("PLAIN") => Ok(words.next().and_then(decode).and_then(|plain| {
                let mut parts = plain.split('\0').skip(1);
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })),
            Some("LOGIN") => {
                let mut answers = Vec::new();
                for prompt in ["334 VXNlcm5hbWU6\r\n", "334 UGFzc3dvcmQ6\r\n"] {
                    io.get_mut().write_all(prompt.as_bytes()).await?;
                    let mut line = String::new();
                    io.read_line(&mut line).await?;
                    answers.push(decode(&line).unwrap_or_default());
                }
                let pass = answers.pop().unwrap_or_default();
                Ok(Some((answers.pop().unwrap_or_default(), pass)))
            }
            _ => Ok(None),
        }
    }
}

pub(super) fn address_of(arg: &str) -> String {
    arg.trim()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("")
        .to_string()
}

pub(super) fn parse(
    from: &str,
    to: &[String],
    raw: String,
    tls: bool,
    user: Option<String>,
) -> ReceivedMail {
    let msg = MessageParser::default()
        .parse(raw.as_bytes())
        .expect("the sink received a parseable message");
    ReceivedMail {
        from: from.to_string(),
        to: to.to_vec(),
        subject: msg.subject().unwrap_or_default().to_string(),
        text: msg.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
        html: msg.body_html(0).map(|t| t.into_owned()).unwrap_or_default(),
        message_id: msg.message_id().unwrap_or_default().to_string(),
        raw: raw.clone(),
        tls,
        user,
    }
}
