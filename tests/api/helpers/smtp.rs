//! A real SMTP server on loopback for the tests: lettre speaks SMTP to it, it parses each
//! message and pushes it into a channel the test reads (svix's TestReceiver pattern).
//!
//! Besides accepting mail it plays the failures a mail server has:
//! - `down()` closes the listening socket and every open session, so connections are
//!   refused like a mail server that is off; `up()` listens on the same port again;
//! - `drop_connections()` accepts each connection and closes it before the greeting (a port
//!   that answers with nothing behind it, e.g. a load balancer without a healthy backend),
//!   and counts them: a test can prove that a worker kept trying during an outage;
//! - `hang_after_data()` takes each message but never answers its final `.`: the send hangs
//!   until the client gives up (or goes away), and `hanging_sends()` counts them;
//! - `reply_next(..)` answers the next messages with scripted replies (4xx, 5xx).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

impl ReceivedMail {
    /// The confirmation link of the mail's text part (linkify); it must point at `base`, the
    /// public URL of the service that wrote the mail.
    pub fn link(&self, base: &str) -> String {
        let link = linkify::LinkFinder::new()
            .links(&self.text)
            .map(|l| l.as_str().to_string())
            .find(|l| l.contains("/verify?token="))
            .unwrap_or_else(|| panic!("no link in mail: {}", self.text));
        assert!(link.starts_with(&format!("{base}/verify?token=")), "{link}");
        link
    }

    /// The token of the mail's confirmation link (which must point at `base`).
    pub fn token(&self, base: &str) -> String {
        let link = self.link(base);
        let (_, token) = link.split_once("token=").expect("a token parameter");
        token.to_string()
    }

    /// The six-digit code of a link mail, in any locale: the line that ends in `: ` and six
    /// digits.
    pub fn code(&self) -> String {
        self.text
            .lines()
            .filter_map(|l| l.trim_end().rsplit_once(": "))
            .map(|(_, tail)| tail)
            .find(|tail| tail.len() == 6 && tail.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or_else(|| panic!("no code in mail: {}", self.text))
            .to_string()
    }
}

/// Mails as they arrived: each distinct Message-ID once, in order, and how often each came.
#[derive(Default)]
pub struct Inbox {
    pub mails: Vec<ReceivedMail>,
    pub times: HashMap<String, u32>,
}

impl Inbox {
    /// Deliveries beyond the first of each mail.
    pub fn duplicates(&self) -> u32 {
        self.times.values().map(|n| n - 1).sum()
    }

    fn take(&mut self, mail: ReceivedMail) {
        let times = self.times.entry(mail.message_id.clone()).or_default();
        if *times == 0 {
            self.mails.push(mail);
        }
        *times += 1;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    Down,
    DropConnections,
    HangAfterData,
}

impl Mode {
    /// Whether open sessions end when the sink enters this mode: an outage cuts the
    /// connections a client pools, or it would not see the outage.
    fn cuts_sessions(self) -> bool {
        matches!(self, Mode::Down | Mode::DropConnections)
    }
}

#[derive(Default)]
struct Counters {
    dropped: AtomicUsize,
    hanging: AtomicUsize,
}

pub struct SmtpSink {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    rx: Mutex<mpsc::UnboundedReceiver<ReceivedMail>>,
    /// Replies to give at the end of the next DATA commands instead of 250.
    script: Arc<std::sync::Mutex<VecDeque<String>>>,
    counters: Arc<Counters>,
}

/// How long `next_mail` waits for a mail.
const MAIL_WAIT: Duration = Duration::from_secs(15);
/// How long a quiet moment lasts for `assert_no_mail`.
const QUIET: Duration = Duration::from_millis(700);

impl SmtpSink {
    pub async fn start() -> Arc<Self> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)));
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (mode, mode_rx) = watch::channel(Mode::Up);
        let script = Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let counters = Arc::new(Counters::default());
        tokio::spawn(serve(
            listener,
            addr,
            mode_rx,
            tx,
            script.clone(),
            counters.clone(),
        ));
        Arc::new(Self {
            addr,
            mode,
            rx: Mutex::new(rx),
            script,
            counters,
        })
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Stop listening and drop every session: connections are refused.
    pub fn down(&self) {
        self.mode.send_replace(Mode::Down);
    }

    /// Accept and answer mail again (after any of the failure modes).
    pub fn up(&self) {
        self.mode.send_replace(Mode::Up);
    }

    /// Accept each connection and close it at once, before the greeting; counted by
    /// `dropped_connections`.
    pub fn drop_connections(&self) {
        self.mode.send_replace(Mode::DropConnections);
    }

    /// Connections closed unanswered since the sink started.
    pub fn dropped_connections(&self) -> usize {
        self.counters.dropped.load(Ordering::SeqCst)
    }

    /// Take each message but never answer its final `.`: the client waits for a reply that
    /// never comes. The message is not delivered.
    pub fn hang_after_data(&self) {
        self.mode.send_replace(Mode::HangAfterData);
    }

    /// Messages left without an answer since the sink started.
    pub fn hanging_sends(&self) -> usize {
        self.counters.hanging.load(Ordering::SeqCst)
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

    /// The next mail (waits for it, never sleeps a fixed time).
    pub async fn next_mail(&self) -> ReceivedMail {
        self.next_within(MAIL_WAIT)
            .await
            .unwrap_or_else(|| panic!("a mail arrives within {MAIL_WAIT:?}"))
    }

    /// Asserts that no further mail arrives for a short while.
    pub async fn assert_no_mail(&self) {
        if let Some(m) = self.next_within(QUIET).await {
            panic!("unexpected mail to {:?}: {}", m.to, m.subject);
        }
    }

    /// Receives into `inbox` until it holds `distinct` different mails, each within a minute
    /// of the one before; if they do not come, fails with a picture of the outbox at `db_url`.
    pub async fn receive(&self, inbox: &mut Inbox, distinct: usize, db_url: &str) {
        // Bounded: every round either brings a mail or ends the wait; duplicates can use up
        // at most as many rounds again as there are mails.
        for _ in 0..2 * distinct + 16 {
            if inbox.times.len() >= distinct {
                return;
            }
            match self.next_within(Duration::from_secs(60)).await {
                Some(mail) => inbox.take(mail),
                None => break,
            }
        }
        if inbox.times.len() < distinct {
            panic!(
                "only {} of {distinct} distinct mails arrived; outbox: {:#?}",
                inbox.times.len(),
                super::outbox_picture(db_url).await
            );
        }
    }

    /// Receives into `inbox` whatever else arrives (a late duplicate, a stray mail) until two
    /// quiet seconds have passed.
    pub async fn receive_stragglers(&self, inbox: &mut Inbox) {
        for _ in 0..inbox.times.len() + 16 {
            match self.next_within(Duration::from_secs(2)).await {
                Some(mail) => inbox.take(mail),
                None => return,
            }
        }
        panic!(
            "mail keeps arriving: {} distinct, {} duplicates",
            inbox.times.len(),
            inbox.duplicates()
        );
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
    mut mode: watch::Receiver<Mode>,
    tx: mpsc::UnboundedSender<ReceivedMail>,
    script: Arc<std::sync::Mutex<VecDeque<String>>>,
    counters: Arc<Counters>,
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
                let (tx, script, counters) = (tx.clone(), script.clone(), counters.clone());
                let (seen, mut cut) = (mode.clone(), mode.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = session(stream, tx, script, &seen, &counters) => {}
                        _ = cut.wait_for(|m| m.cuts_sessions()) => {}
                    }
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

async fn session(
    stream: TcpStream,
    tx: mpsc::UnboundedSender<ReceivedMail>,
    script: Arc<std::sync::Mutex<VecDeque<String>>>,
    mode: &watch::Receiver<Mode>,
    counters: &Counters,
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
            if *mode.borrow() == Mode::HangAfterData {
                counters.hanging.fetch_add(1, Ordering::SeqCst);
                // No answer: hold the session until the client closes it.
                while lines.read_line(&mut line).await? != 0 {}
                return Ok(());
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
