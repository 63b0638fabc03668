//! The bounce listener is not a pen (API.md, release 3): reports are matched only by a tag
//! nobody but us can make; a mail gets one event of each kind, holding a status code and a
//! fixed word, never a report's text; a peer holds a bounded number of sessions, a silent
//! one is closed, a peer sending reports that match nothing is throttled; a bare LF is
//! refused (no SMTP smuggling); STARTTLS works with a certificate. Every case runs against
//! the real listener on loopback; every loop is bounded in count and time.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use emailverify::grpc::pb;
use emailverify::settings::Settings;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use super::delivery_becomes;
use super::inbound::sent;
use super::reports::{self, BOUNCE, tagged};
use crate::helpers::{Backend, TestApp, metric, spawn_app_with};

/// What a forger writes into a report, for support staff to read: a phone number and an
/// address whose fullwidth `＠` passes the masking.
const PEN: &str = "4.4.1 URGENT call support +1-555-0100 jane\u{ff20}victim.example";
/// Words of `PEN` that must never come back from the API (whole enough not to turn up in
/// a timestamp of the answer: "555" alone did, in 1796655500).
const PEN_WORDS: [&str; 4] = ["URGENT", "555-0100", "victim", "\u{ff20}"];
/// How long any one reply may take.
const WAIT: Duration = Duration::from_secs(20);

async fn app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> (TestApp, SocketAddr) {
    let app = spawn_app_with(backend, |s| {
        s.bounces.bounce_address = Some(BOUNCE.into());
        s.bounces.inbound_addr = Some("127.0.0.1:0".into());
        s.bounces.suppression_ttl = "1h".into();
        tweak(s);
    })
    .await;
    let addr = app.inbound.expect("the bounce listener is on");
    (app, addr)
}

/// A plain SMTP client that says exactly what the test says (bare LFs included).
struct Client<S> {
    io: BufReader<S>,
}

impl Client<TcpStream> {
    async fn connect(addr: SocketAddr) -> Self {
        Self::connect_from(Ipv4Addr::LOCALHOST, addr).await
    }

    /// A connection from `ip` (another loopback address is another peer).
    async fn connect_from(ip: Ipv4Addr, addr: SocketAddr) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((ip, 0))).unwrap();
        let stream = tokio::time::timeout(WAIT, socket.connect(addr))
            .await
            .expect("connects in time")
            .expect("the listener answers");
        Self {
            io: BufReader::new(stream),
        }
    }

    /// Connected and greeted (220), after EHLO.
    async fn greeted_from(ip: Ipv4Addr, addr: SocketAddr) -> Self {
        let mut c = Self::connect_from(ip, addr).await;
        let greeting = c.reply().await;
        assert!(greeting.starts_with("220"), "{greeting}");
        let ehlo = c.cmd("EHLO mx.example.net").await;
        assert!(ehlo.starts_with("250"), "{ehlo}");
        c
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Every line of the next reply; empty when the connection closed.
    async fn reply_lines(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while lines.len() < 64 {
            let mut line = String::new();
            match tokio::time::timeout(WAIT, self.io.read_line(&mut line)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => panic!("no reply within {WAIT:?}; so far {lines:?}"),
            }
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line.trim_end().to_owned());
            if last {
                break;
            }
        }
        lines
    }

    /// The last line of the next reply ("" when the connection closed).
    async fn reply(&mut self) -> String {
        self.reply_lines().await.pop().unwrap_or_default()
    }

    async fn send(&mut self, raw: &[u8]) {
        let w = self.io.get_mut();
        let _ = w.write_all(raw).await;
        let _ = w.flush().await;
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// MAIL FROM:<>, RCPT TO:<rcpt>, DATA and `message`: the last answer (a refusal at
    /// any step ends the report there).
    async fn report(&mut self, rcpt: &str, message: &str) -> String {
        let r = self.cmd("MAIL FROM:<>").await;
        if !r.starts_with("250") {
            return r;
        }
        let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        if !r.starts_with("250") {
            return r;
        }
        let r = self.cmd("DATA").await;
        if !r.starts_with("354") {
            return r;
        }
        self.send(stuffed(message).as_bytes()).await;
        self.reply().await
    }

    /// Whether the server closes the connection within `within` (what it says before is
    /// read and dropped).
    async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut line = String::new();
        loop {
            line.clear();
            match tokio::time::timeout_at(deadline, self.io.read_line(&mut line)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// `message` as DATA carries it: CRLF lines, dot-stuffed, ended by `.`.
fn stuffed(message: &str) -> String {
    let mut data = String::new();
    for line in message.split_inclusive("\r\n") {
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
    }
    data.push_str(".\r\n");
    data
}

fn count_answers(answers: &[String], code: &str) -> usize {
    answers.iter().filter(|a| a.starts_with(code)).count()
}

/// Every event of `user` and its flow as the API shows them, as text.
async fn what_the_api_shows(app: &TestApp, user: &str) -> String {
    let events = app.events(user, 100, "").await.unwrap();
    let status = app.status(user).await.unwrap();
    format!("{events:?} {status:?}")
}

async fn mail_ids(app: &TestApp) -> Vec<String> {
    use emailverify::store::entity::outbox;
    use sea_orm::EntityTrait;
    outbox::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.mail_id)
        .collect()
}

/// 5,000 "delayed" DSNs for one mail, over 17 sessions, 4 at a time: one `mail_delayed`
/// event, with the status and a fixed word; repeats counted, not written. Then repeated
/// bounces: one `mail_bounced`, and neither the events nor the flow's delivery detail
/// holds a word of the reports' text.
async fn five_thousand_delays_of_one_mail_write_one_event_and_no_report_text(backend: Backend) {
    let (app, inbound) = app_with(backend, |_| {}).await;
    let (tag, message_id) = sent(&app, "user-1", "jane@example.com").await;
    let rcpt = tagged(&tag);
    let dsn = reports::dsn(
        &rcpt,
        &message_id,
        "jane@example.com",
        "delayed",
        "4.4.1",
        PEN,
    );
    const REPORTS: usize = 5_000;
    const PER_SESSION: usize = 300; // 3 commands each: under the 1,000 commands a session
    let started = Instant::now();
    let answers: Vec<String> = futures::stream::iter((0..REPORTS).step_by(PER_SESSION))
        .map(|first| {
            let (rcpt, dsn) = (rcpt.clone(), dsn.clone());
            async move {
                let mut c = Client::greeted_from(Ipv4Addr::LOCALHOST, inbound).await;
                let mut answers = Vec::new();
                for _ in first..(first + PER_SESSION).min(REPORTS) {
                    answers.push(c.report(&rcpt, &dsn).await);
                }
                c.cmd("QUIT").await;
                answers
            }
        })
        .buffer_unordered(4)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    let took = started.elapsed();
    assert_eq!(answers.len(), REPORTS);
    assert_eq!(
        count_answers(&answers, "250"),
        REPORTS,
        "{:?}",
        &answers[..5]
    );
    eprintln!("{REPORTS} delayed DSNs for one mail answered in {took:?}");
    // Each report is recorded before its 250: the counts are final.
    assert_eq!(
        app.count("events WHERE event_type = 'mail_delayed'").await,
        1
    );
    assert_eq!(
        app.count("events WHERE event_type = 'mail_delayed' AND detail = '4.4.1 delayed'")
            .await,
        1
    );

    // Failed, three times over (5.2.2, a full mailbox: no suppression).
    let bounce = reports::dsn(
        &rcpt,
        &message_id,
        "jane@example.com",
        "failed",
        "5.2.2",
        PEN,
    );
    let mut c = Client::greeted_from(Ipv4Addr::LOCALHOST, inbound).await;
    for _ in 0..3 {
        assert!(c.report(&rcpt, &bounce).await.starts_with("250"));
    }
    let detail = delivery_becomes(&app, "user-1", pb::DeliveryState::Bounced).await;
    assert_eq!(detail, "5.2.2 bounced");
    assert_eq!(
        app.count("events WHERE event_type = 'mail_bounced'").await,
        1
    );
    assert_eq!(app.count("events WHERE actor = 'inbound'").await, 2);
    let shown = what_the_api_shows(&app, "user-1").await;
    for word in PEN_WORDS {
        assert!(!shown.contains(word), "{word:?} in {shown}");
    }
    let page = app.metrics().await;
    let repeats = metric(
        &page,
        "emailverify_inbound_reports_total{outcome=\"repeat\"}",
    );
    assert!(
        repeats.unwrap_or(0.0) >= (REPORTS - 1 + 2) as f64,
        "{repeats:?}"
    );
}

/// A report that names the mail by its id (the old tag), by the flow's id (which the caller
/// and every feed consumer know), by a guessed tag, or by the real tag with one character
/// changed, matches nothing and suppresses nobody; the real tag still matches. The tag is
/// in no API answer and no database row.
async fn forged_reports_match_nothing_and_suppress_nobody(backend: Backend) {
    let (app, inbound) = app_with(backend, |_| {}).await;
    let flow = app
        .request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let mail = app.next_mail().await;
    delivery_becomes(&app, "user-1", pb::DeliveryState::Sent).await;
    let (tag, _) = mail.message_id.split_once('@').unwrap();
    let tag = tag.to_owned();
    let [mail_id] = <[String; 1]>::try_from(mail_ids(&app).await).unwrap();
    assert_eq!(tag.len(), 52, "{tag}");
    assert!(!tag.contains(&mail_id) && !tag.contains(&mail_id.replace('-', "")));
    assert_eq!(
        mail.from,
        tagged(&tag),
        "the envelope sender carries the same tag"
    );
    assert!(!what_the_api_shows(&app, "user-1").await.contains(&tag));
    assert!(!app.dump_database().await.contains(&tag));

    let mut changed = tag.clone().into_bytes();
    changed[0] = if changed[0] == b'a' { b'b' } else { b'a' };
    let changed = String::from_utf8(changed).unwrap();
    let guessed: String = (0..52)
        .map(|_| b"abcdefghijklmnopqrstuvwxyz234567"[rand::random_range(0..32)] as char)
        .collect();
    let forgeries = [mail_id.clone(), flow.flow_id.clone(), guessed, changed];
    let mut answers = Vec::new();
    let mut c = Client::greeted_from(Ipv4Addr::LOCALHOST, inbound).await;
    for forged in &forgeries {
        let message_id = format!("{forged}@wallet.test");
        let bounce = reports::postfix_bounce(
            &tagged(forged),
            &message_id,
            "jane@example.com",
            "5.1.1",
            "550 5.1.1 no such user",
        );
        answers.push(c.report(&tagged(forged), &bounce).await);
        // Sent to the bare bounce address: only the quoted Message-ID could name it.
        let delay = reports::exim_delay(BOUNCE, &message_id, "jane@example.com");
        answers.push(c.report(BOUNCE, &delay).await);
        let arf = reports::arf_complaint(BOUNCE, &tagged(forged), &message_id, "jane@example.com");
        answers.push(c.report(BOUNCE, &arf).await);
    }
    assert_eq!(count_answers(&answers, "250"), answers.len(), "{answers:?}");
    assert_eq!(app.count("suppressions").await, 0);
    assert_eq!(app.count("events WHERE actor = 'inbound'").await, 0);
    let pending = app.status("user-1").await.unwrap().pending.unwrap();
    assert_eq!(pending.delivery(), pb::DeliveryState::Sent);

    // The real tag, in any case a relay may fold it to, still matches.
    let bounce = reports::postfix_bounce(
        &tagged(&tag.to_ascii_uppercase()),
        "unknown@wallet.test",
        "jane@example.com",
        "5.1.1",
        "550 5.1.1 no such user",
    );
    assert!(
        c.report(&tagged(&tag.to_ascii_uppercase()), &bounce)
            .await
            .starts_with("250")
    );
    delivery_becomes(&app, "user-1", pb::DeliveryState::Bounced).await;
    assert_eq!(app.count("suppressions WHERE cause = 'bounced'").await, 1);
}

/// 1,000 reports that match nothing from one peer: the first 100 are answered 250, the
/// other 900 450 4.7.1; another peer is served meanwhile, and the peer is served again
/// once its minute has passed.
async fn unmatched_reports_past_100_a_minute_get_450_until_the_minute_ends(backend: Backend) {
    let (app, inbound) = app_with(backend, |_| {}).await;
    let nobody = uuid::Uuid::now_v7().to_string();
    let report = reports::postfix_bounce(
        &tagged(&nobody),
        &format!("{nobody}@wallet.test"),
        "x@example.com",
        "5.1.1",
        "550 5.1.1 unknown",
    );
    const REPORTS: usize = 1_000;
    let mut answers = Vec::new();
    for _ in 0..10 {
        let mut c = Client::greeted_from(Ipv4Addr::LOCALHOST, inbound).await;
        for _ in 0..REPORTS / 10 {
            answers.push(c.report(&tagged(&nobody), &report).await);
        }
        c.cmd("QUIT").await;
    }
    let (ok, throttled) = (
        count_answers(&answers, "250"),
        count_answers(&answers, "450 4.7.1"),
    );
    eprintln!(
        "{REPORTS} unmatched reports from one peer: {ok} answered 250, {throttled} 450 4.7.1"
    );
    assert_eq!((ok, throttled), (100, 900), "{:?}", &answers[95..105]);

    // Another peer is not throttled.
    let mut other = Client::greeted_from(Ipv4Addr::new(127, 0, 0, 2), inbound).await;
    assert!(
        other
            .report(&tagged(&nobody), &report)
            .await
            .starts_with("250")
    );
    // Until the minute ends the peer stays throttled; then it is served again.
    let mut c = Client::greeted_from(Ipv4Addr::LOCALHOST, inbound).await;
    assert!(
        c.report(&tagged(&nobody), &report)
            .await
            .starts_with("450 4.7.1")
    );
    app.clock.advance(Duration::from_secs(61));
    assert!(c.report(&tagged(&nobody), &report).await.starts_with("250"));
    let page = app.metrics().await;
    let counted = metric(&page, "emailverify_inbound_throttled_total").unwrap_or(0.0);
    assert!(counted >= 901.0, "{counted}");
}

/// Eight silent sessions from one address hold its share only: the ninth is refused with
/// 421 4.7.0 and closed, while another peer (127.0.0.2) delivers a report; once one of the
/// eight leaves, the address is served again.
async fn nine_silent_sessions_from_one_peer_the_ninth_refused_another_served(backend: Backend) {
    let (app, inbound) = app_with(backend, |_| {}).await;
    let (tag, message_id) = sent(&app, "user-1", "jane@example.com").await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        let mut c = Client::connect(inbound).await;
        assert!(c.reply().await.starts_with("220"));
        silent.push(c);
    }
    let mut ninth = Client::connect(inbound).await;
    let refused = ninth.reply().await;
    assert!(refused.starts_with("421 4.7.0"), "{refused}");
    assert!(ninth.closed_within(Duration::from_secs(5)).await);

    let mut other = Client::greeted_from(Ipv4Addr::new(127, 0, 0, 2), inbound).await;
    let dsn = reports::dsn(
        &tagged(&tag),
        &message_id,
        "jane@example.com",
        "delayed",
        "4.4.7",
        "",
    );
    assert!(other.report(&tagged(&tag), &dsn).await.starts_with("250"));
    app.eventually_count("events WHERE event_type = 'mail_delayed'", 1)
        .await;

    drop(silent.pop());
    let served = crate::helpers::poll_until(Duration::from_secs(10), async || {
        let mut c = Client::connect(inbound).await;
        c.reply().await.starts_with("220").then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "a seat is given back when its session ends"
    );
    let page = app.metrics().await;
    let refused = metric(
        &page,
        "emailverify_inbound_sessions_refused_total{reason=\"per_peer\"}",
    );
    assert!(refused.unwrap_or(0.0) >= 1.0, "{refused:?}");
}

/// With the silence timeout at 1 s: a session that says nothing, and one that sends a NOOP
/// every 300 ms, are both closed (421 4.4.2) within a few seconds; one that makes progress
/// (a report sent slowly, a line every 400 ms over 4 s) is served.
async fn a_silent_session_is_closed_after_the_deadline_noops_or_not(backend: Backend) {
    let (app, inbound) = app_with(backend, |s| {
        s.bounces.inbound_silence_timeout = "1s".into();
    })
    .await;
    let (tag, message_id) = sent(&app, "user-1", "jane@example.com").await;

    let mut mute = Client::connect(inbound).await;
    assert!(mute.reply().await.starts_with("220"));
    let started = Instant::now();
    let closing = mute.reply().await;
    assert!(closing.starts_with("421 4.4.2"), "{closing}");
    assert!(mute.closed_within(Duration::from_secs(5)).await);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "closed after {took:?}");

    let mut nooper = Client::greeted_from(Ipv4Addr::LOCALHOST, inbound).await;
    let started = Instant::now();
    let mut noops = 0;
    let closing = loop {
        assert!(noops < 40, "still open after {noops} NOOPs");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = nooper.cmd("NOOP").await;
        if !r.starts_with("250") {
            break r;
        }
        noops += 1;
    };
    let took = started.elapsed();
    eprintln!("a NOOP every 300 ms: closed after {noops} NOOPs, {took:?} ({closing})");
    assert!(
        closing.is_empty() || closing.starts_with("421 4.4.2"),
        "{closing}"
    );
    assert!(took < Duration::from_secs(4), "NOOPs held it for {took:?}");

    let mut slow = Client::greeted_from(Ipv4Addr::LOCALHOST, inbound).await;
    let dsn = reports::dsn(
        &tagged(&tag),
        &message_id,
        "jane@example.com",
        "delayed",
        "4.4.7",
        "",
    );
    assert!(slow.cmd("MAIL FROM:<>").await.starts_with("250"));
    assert!(
        slow.cmd(&format!("RCPT TO:<{}>", tagged(&tag)))
            .await
            .starts_with("250")
    );
    assert!(slow.cmd("DATA").await.starts_with("354"));
    let data = stuffed(&dsn);
    let lines: Vec<&str> = data.split_inclusive("\r\n").collect();
    let chunks: Vec<String> = lines
        .chunks(lines.len().div_ceil(10))
        .map(|c| c.concat())
        .collect();
    let started = Instant::now();
    for chunk in &chunks {
        tokio::time::sleep(Duration::from_millis(400)).await;
        slow.send(chunk.as_bytes()).await;
    }
    let answer = slow.reply().await;
    assert!(answer.starts_with("250"), "{answer}");
    assert!(started.elapsed() > Duration::from_secs(3));
    app.eventually_count("events WHERE event_type = 'mail_delayed'", 1)
        .await;
    let page = app.metrics().await;
    let closed = metric(
        &page,
        "emailverify_inbound_sessions_closed_total{reason=\"silent\"}",
    );
    assert!(closed.unwrap_or(0.0) >= 2.0, "{closed:?}");
}

/// A bare LF is refused (500 5.5.2, closed), in a command and in DATA; `<LF>.<CR><LF>`
/// does not end DATA, so the commands and the complaint hidden behind it are never taken.
/// (Without a certificate, STARTTLS is neither offered nor done.)
async fn bare_lf_is_refused_and_no_second_message_is_smuggled(backend: Backend) {
    let (app, inbound) = app_with(backend, |_| {}).await;
    let (tag, message_id) = sent(&app, "user-1", "jane@example.com").await;

    let mut c = Client::connect(inbound).await;
    assert!(c.reply().await.starts_with("220"));
    c.send(b"EHLO mx.example.net\n").await;
    let refused = c.reply().await;
    assert!(refused.starts_with("500 5.5.2"), "{refused}");
    assert!(c.closed_within(Duration::from_secs(5)).await);

    // A delay whose end is `<LF>.<CR><LF>`, then a complaint of the same mail.
    let delay = reports::dsn(
        &tagged(&tag),
        &message_id,
        "jane@example.com",
        "delayed",
        "4.4.7",
        "",
    );
    let complaint = reports::arf_complaint(BOUNCE, &tagged(&tag), &message_id, "jane@example.com");
    let smuggled = format!(
        "{}\n.\r\nMAIL FROM:<>\r\nRCPT TO:<{}>\r\nDATA\r\n{}",
        delay.trim_end(),
        tagged(&tag),
        stuffed(&complaint)
    );
    let mut c = Client::greeted_from(Ipv4Addr::LOCALHOST, inbound).await;
    assert!(c.cmd("MAIL FROM:<>").await.starts_with("250"));
    assert!(
        c.cmd(&format!("RCPT TO:<{}>", tagged(&tag)))
            .await
            .starts_with("250")
    );
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(smuggled.as_bytes()).await;
    let answer = c.reply().await;
    assert!(answer.starts_with("500 5.5.2"), "{answer}");
    assert!(c.closed_within(Duration::from_secs(5)).await);
    // `.<LF>` alone does not end DATA either.
    let mut c = Client::greeted_from(Ipv4Addr::LOCALHOST, inbound).await;
    assert!(c.cmd("MAIL FROM:<>").await.starts_with("250"));
    assert!(
        c.cmd(&format!("RCPT TO:<{}>", tagged(&tag)))
            .await
            .starts_with("250")
    );
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(format!("{delay}.\n").as_bytes()).await;
    let answer = c.reply().await;
    assert!(answer.starts_with("500 5.5.2"), "{answer}");

    assert_eq!(app.count("events WHERE actor = 'inbound'").await, 0);
    assert_eq!(app.count("suppressions").await, 0);
    let page = app.metrics().await;
    let closed = metric(
        &page,
        "emailverify_inbound_sessions_closed_total{reason=\"bare_lf\"}",
    );
    assert!(closed.unwrap_or(0.0) >= 3.0, "{closed:?}");

    // The same report with CRLF throughout is taken; STARTTLS is not offered.
    let mut c = Client::connect(inbound).await;
    assert!(c.reply().await.starts_with("220"));
    c.send(b"EHLO mx.example.net\r\n").await;
    let caps = c.reply_lines().await;
    assert!(!caps.iter().any(|l| l.contains("STARTTLS")), "{caps:?}");
    assert!(c.cmd("STARTTLS").await.starts_with("502"));
    assert!(c.report(&tagged(&tag), &delay).await.starts_with("250"));
    assert_eq!(
        app.count("events WHERE event_type = 'mail_delayed'").await,
        1
    );
}

/// A CA and a certificate for localhost signed by it: (CA PEM, certificate PEM, key PEM).
fn certificate() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// With EMAILVERIFY_INBOUND_TLS_CERT/_KEY set, EHLO offers STARTTLS, and a DSN delivered
/// over TLS bounces its mail; after the handshake STARTTLS is offered no more. Commands
/// pipelined behind STARTTLS are never taken.
async fn starttls_is_offered_and_a_dsn_is_delivered_over_it(backend: Backend) {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let (app, inbound) = app_with(backend, |s| {
        s.bounces.inbound_tls_cert = Some(cert_path.clone());
        s.bounces.inbound_tls_key = Some(key_path.clone());
    })
    .await;
    let (tag, message_id) = sent(&app, "user-1", "jane@example.com").await;

    let mut c = Client::connect(inbound).await;
    assert!(c.reply().await.starts_with("220"));
    c.send(b"EHLO mx.example.net\r\n").await;
    let caps = c.reply_lines().await;
    assert!(caps.iter().any(|l| l == "250-STARTTLS"), "{caps:?}");
    let go = c.cmd("STARTTLS").await;
    assert!(go.starts_with("220"), "{go}");

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(
            ServerName::try_from("localhost").unwrap(),
            c.io.into_inner(),
        ),
    )
    .await
    .expect("the handshake ends in time")
    .expect("the listener's certificate is trusted");
    let mut c = Client {
        io: BufReader::new(tls),
    };
    c.send(b"EHLO mx.example.net\r\n").await;
    let caps = c.reply_lines().await;
    assert!(
        caps.first().is_some_and(|l| l.starts_with("250")),
        "{caps:?}"
    );
    assert!(!caps.iter().any(|l| l.contains("STARTTLS")), "{caps:?}");
    let bounce = reports::postfix_bounce(
        &tagged(&tag),
        &message_id,
        "jane@example.com",
        "5.1.1",
        "550 5.1.1 no such user",
    );
    let answer = c.report(&tagged(&tag), &bounce).await;
    assert!(answer.starts_with("250"), "{answer}");
    assert!(c.cmd("QUIT").await.starts_with("221"));
    let detail = delivery_becomes(&app, "user-1", pb::DeliveryState::Bounced).await;
    assert_eq!(detail, "5.1.1 bounced");

    // A command pipelined behind STARTTLS, in plaintext: refused, never taken.
    let mut c = Client::greeted_from(Ipv4Addr::LOCALHOST, inbound).await;
    c.send(b"STARTTLS\r\nMAIL FROM:<>\r\n").await;
    let answer = c.reply().await;
    assert!(
        answer.starts_with("501") || answer.starts_with("220"),
        "{answer}"
    );
    assert!(c.closed_within(Duration::from_secs(5)).await);
}

crate::on_both_backends!(
    five_thousand_delays_of_one_mail_write_one_event_and_no_report_text,
    forged_reports_match_nothing_and_suppress_nobody,
    unmatched_reports_past_100_a_minute_get_450_until_the_minute_ends,
    nine_silent_sessions_from_one_peer_the_ninth_refused_another_served,
    a_silent_session_is_closed_after_the_deadline_noops_or_not,
    bare_lf_is_refused_and_no_second_message_is_smuggled,
    starttls_is_offered_and_a_dsn_is_delivered_over_it,
);
