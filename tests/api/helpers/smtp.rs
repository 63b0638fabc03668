//! A real SMTP server on loopback for the tests: lettre speaks SMTP to it, it parses each
//! message and pushes it into a channel the test reads (svix's TestReceiver pattern).
//! `down()` closes the listening socket and every open session, so connections are
//! refused like a mail server that is off; `up()` listens on the same port again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_parser::MessageParser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Mutex, mpsc, watch};

#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub message_id: String,
}

pub struct SmtpSink {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    rx: Mutex<mpsc::UnboundedReceiver<ReceivedMail>>,
    /// Replies to give at the end of the next DATA commands instead of 250.
    script: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

impl SmtpSink {
    pub async fn start() -> Arc<Self> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)));
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (up, up_rx) = watch::channel(true);
        let script = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        tokio::spawn(serve(listener, addr, up_rx, tx, script.clone()));
        Arc::new(Self {
            addr,
            up,
            rx: Mutex::new(rx),
            script,
        })
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Stop listening and drop every session: connections are refused.
    pub fn down(&self) {
        self.up.send_replace(false);
    }

    pub fn up(&self) {
        self.up.send_replace(true);
    }

    /// The next messages are answered with these replies (e.g. "451 4.3.0 try again later",
    /// "550 5.1.1 no such user") instead of being accepted; after them, 250 again.
    pub fn reply_next(&self, replies: &[&str]) {
        self.script
            .lock()
            .unwrap()
            .extend(replies.iter().map(|r| r.to_string()));
    }

    /// The next mail, or `None` after `wait`.
    pub async fn next_within(&self, wait: Duration) -> Option<ReceivedMail> {
        tokio::time::timeout(wait, self.rx.lock().await.recv())
            .await
            .ok()
            .flatten()
    }
}

fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(64).unwrap()
}

async fn serve(
    mut listener: tokio::net::TcpListener,
    addr: SocketAddr,
    mut up: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<ReceivedMail>,
    script: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let (tx, mut up, script) = (tx.clone(), up.clone(), script.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = session(stream, tx, script) => {}
                            // Going down cuts open sessions too (pooled connections).
                            _ = up.wait_for(|u| !*u) => {}
                        }
                    });
                }
            }
            changed = up.changed() => {
                if changed.is_err() { return; }
                if !*up.borrow() {
                    drop(listener);
                    if up.wait_for(|u| *u).await.is_err() { return; }
                    listener = bind(addr);
                }
            }
        }
    }
}

async fn session(
    stream: TcpStream,
    tx: mpsc::UnboundedSender<ReceivedMail>,
    script: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink ESMTP ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write
                .write_all(b"250-sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                .await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = address_of(&cmd[10..]);
            to.clear();
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(address_of(&cmd[8..]));
            write.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut raw = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                // Dot-unstuffing (RFC 5321 4.5.2).
                raw.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            let scripted = script.lock().unwrap().pop_front();
            match scripted {
                Some(reply) => write.write_all(format!("{reply}\r\n").as_bytes()).await?,
                None => {
                    let _ = tx.send(parse(&from, &to, raw));
                    write.write_all(b"250 OK queued\r\n").await?;
                }
            }
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            write.write_all(b"250 OK\r\n").await?;
        } else {
            write.write_all(b"502 not implemented\r\n").await?;
        }
    }
}

fn address_of(arg: &str) -> String {
    arg.trim()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("")
        .to_string()
}

fn parse(from: &str, to: &[String], raw: String) -> ReceivedMail {
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
    }
}
