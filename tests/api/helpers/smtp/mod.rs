//! A real SMTP server on loopback for the tests: the service's SMTP client speaks to it,
//! it parses each message and pushes it into a channel the test reads (svix's TestReceiver
//! pattern).
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
//!
//! `start_with(SinkOptions { .. })` makes it a relay as the real ones are: TLS from the first
//! byte or STARTTLS (certificates the test made), AUTH PLAIN/LOGIN required, PIPELINING
//! offered or not. Each mail says whether it came over TLS and who logged in.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, watch};
use tokio_rustls::rustls::ServerConfig;

mod session;
use session::{bind, serve};

#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub message_id: String,
    /// The whole message as it arrived (dot-unstuffed).
    pub raw: String,
    /// Whether the session was encrypted when the mail was sent.
    pub tls: bool,
    /// The user that logged in, if any.
    pub user: Option<String>,
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

/// How the sink behaves as a relay. The default is what `start()` gives: plain SMTP,
/// PIPELINING offered, no AUTH.
#[derive(Clone)]
pub struct SinkOptions {
    pub tls: SinkTls,
    /// AUTH required (offered only over TLS) with this user and password.
    pub auth: Option<(String, String)>,
    pub pipelining: bool,
    /// The address to listen on (a random port): loopback, or one a test gave itself.
    pub ip: std::net::Ipv4Addr,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            tls: SinkTls::None,
            auth: None,
            pipelining: true,
            ip: std::net::Ipv4Addr::LOCALHOST,
        }
    }
}

#[derive(Clone)]
pub enum SinkTls {
    None,
    /// STARTTLS offered with this certificate.
    StartTls(Arc<ServerConfig>),
    /// TLS from the first byte (smtps).
    Implicit(Arc<ServerConfig>),
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
    /// Connections accepted and served.
    served: AtomicUsize,
    /// Sessions open now.
    open: AtomicUsize,
    /// TLS handshakes that failed (e.g. the client did not trust the certificate).
    failed_handshakes: AtomicUsize,
    /// Whether any command arrived before the reply to the one before it was written.
    pipelined: std::sync::atomic::AtomicBool,
    /// How long the sink waits before it accepts a message (milliseconds).
    accept_after_ms: std::sync::atomic::AtomicU64,
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
        Self::start_with(SinkOptions::default()).await
    }

    pub async fn start_with(options: SinkOptions) -> Arc<Self> {
        let listener = bind(SocketAddr::from((options.ip, 0)));
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
            Arc::new(options),
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

    /// From now on each message is accepted only `delay` after its data arrived: a slow
    /// relay.
    pub fn accept_after(&self, delay: Duration) {
        self.counters
            .accept_after_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
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

    /// Connections served since the sink started (a client that reuses its connections
    /// opens few).
    pub fn connections(&self) -> usize {
        self.counters.served.load(Ordering::SeqCst)
    }

    /// Sessions open now (a cut session closes its connection).
    pub fn open_sessions(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed since the sink started.
    pub fn failed_handshakes(&self) -> usize {
        self.counters.failed_handshakes.load(Ordering::SeqCst)
    }

    /// Whether a client ever sent a command before reading the reply to the one before.
    pub fn saw_pipelining(&self) -> bool {
        self.counters.pipelined.load(Ordering::SeqCst)
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
