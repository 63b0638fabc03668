//! Reports as real relays write them, built from the RFCs' examples and the shapes Postfix,
//! Exim and Amazon SES send (RFC 3464 delivery status notifications, RFC 5965 ARF
//! complaints), and a plain SMTP client that hands them to the inbound listener.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The bounce address the tests configure, and its domain.
pub const BOUNCE: &str = "bounces@mail.wallet.test";

/// The tagged bounce address of a mail.
pub fn tagged(mail_id: &str) -> String {
    format!("bounces+{mail_id}@mail.wallet.test")
}

/// The headers of our original mail, as a report quotes them.
fn original_headers(message_id: &str, to: &str) -> String {
    format!(
        "Return-Path: <bounces@mail.wallet.test>\r\n\
         From: Wallet <no-reply@wallet.test>\r\n\
         To: {to}\r\n\
         Subject: Confirm your email address\r\n\
         Message-ID: <{message_id}>\r\n\
         Auto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\n"
    )
}

/// Postfix's bounce ("Undelivered Mail Returned to Sender"): the original's headers as
/// `text/rfc822-headers`.
pub fn postfix_bounce(
    to_tag: &str,
    message_id: &str,
    rcpt: &str,
    status: &str,
    reply: &str,
) -> String {
    let b = "5E1A3C0A2B.1796061600/mx.example.net";
    format!(
        "Return-Path: <>\r\n\
         From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         To: {to_tag}\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{b}\"\r\n\
         Message-Id: <20261130180000.5E1A3C0A2B@mx.example.net>\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{b}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         This is the mail system at host mx.example.net.\r\n\
         \r\n\
         I'm sorry to have to inform you that your message could not\r\n\
         be delivered to one or more recipients.\r\n\
         \r\n\
         <{rcpt}>: host mx.example.com[192.0.2.25] said: {reply} (in reply to\r\n\
         \x20   RCPT TO command)\r\n\
         \r\n\
         --{b}\r\n\
         Content-Description: Delivery report\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; mx.example.net\r\n\
         X-Postfix-Queue-ID: 5E1A3C0A2B\r\n\
         X-Postfix-Sender: rfc822; {to_tag}\r\n\
         Arrival-Date: Mon, 30 Nov 2026 18:00:00 +0000 (UTC)\r\n\
         \r\n\
         Final-Recipient: rfc822; {rcpt}\r\n\
         Original-Recipient: rfc822;{rcpt}\r\n\
         Action: failed\r\n\
         Status: {status}\r\n\
         Remote-MTA: dns; mx.example.com\r\n\
         Diagnostic-Code: smtp; {reply}\r\n\
         \r\n\
         --{b}\r\n\
         Content-Description: Undelivered Message Headers\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n\
         {headers}\
         \r\n\
         --{b}--\r\n",
        headers = original_headers(message_id, rcpt)
    )
}

/// Exim's delay warning ("Warning: message … delayed 24 hours"): `Action: delayed`.
pub fn exim_delay(to: &str, message_id: &str, rcpt: &str) -> String {
    let b = "1796061600-eximdsn-1804289383";
    format!(
        "From: Mail Delivery System <Mailer-Daemon@mx.exim.example>\r\n\
         To: {to}\r\n\
         Subject: Warning: message 1vPqRs-000AbC-7x delayed 24 hours\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary={b}\r\n\
         MIME-Version: 1.0\r\n\
         Auto-Submitted: auto-replied\r\n\
         \r\n\
         --{b}\r\n\
         Content-type: text/plain; charset=us-ascii\r\n\
         \r\n\
         This message was created automatically by mail delivery software.\r\n\
         A message that you sent has not yet been delivered to one or more of its\r\n\
         recipients after more than 24 hours on the queue on mx.exim.example.\r\n\
         \r\n\
         --{b}\r\n\
         Content-type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; mx.exim.example\r\n\
         \r\n\
         Action: delayed\r\n\
         Final-Recipient: rfc822;{rcpt}\r\n\
         Status: 4.0.0\r\n\
         Remote-MTA: dns; mx.example.com\r\n\
         Will-Retry-Until: Mon, 07 Dec 2026 18:00:00 +0000\r\n\
         \r\n\
         --{b}\r\n\
         Content-type: text/rfc822-headers\r\n\
         \r\n\
         {headers}\
         \r\n\
         --{b}--\r\n",
        headers = original_headers(message_id, rcpt)
    )
}

/// A DSN of one recipient with `action` (`delayed`, `failed`), `status` and the remote
/// server's `diagnostic` text, sent to `to` (a tagged bounce address).
pub fn dsn(
    to: &str,
    message_id: &str,
    rcpt: &str,
    action: &str,
    status: &str,
    diagnostic: &str,
) -> String {
    let b = "dsn-boundary-42";
    format!(
        "From: Mail Delivery System <Mailer-Daemon@mx.example.net>\r\n\
         To: {to}\r\n\
         Subject: Delivery Status Notification\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary={b}\r\n\
         MIME-Version: 1.0\r\n\
         Auto-Submitted: auto-replied\r\n\
         \r\n\
         --{b}\r\n\
         Content-type: text/plain; charset=utf-8\r\n\
         \r\n\
         {diagnostic}\r\n\
         \r\n\
         --{b}\r\n\
         Content-type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; mx.example.net\r\n\
         \r\n\
         Final-Recipient: rfc822;{rcpt}\r\n\
         Action: {action}\r\n\
         Status: {status}\r\n\
         Diagnostic-Code: smtp; {diagnostic}\r\n\
         \r\n\
         --{b}\r\n\
         Content-type: text/rfc822-headers\r\n\
         \r\n\
         {headers}\
         \r\n\
         --{b}--\r\n",
        headers = original_headers(message_id, rcpt)
    )
}

/// Amazon SES's bounce notification: the whole original as `message/rfc822`.
pub fn ses_bounce(to_tag: &str, message_id: &str, rcpt: &str, status: &str, reply: &str) -> String {
    let b = "===============8834719427659426347==";
    format!(
        "From: MAILER-DAEMON@amazonses.com\r\n\
         To: {to_tag}\r\n\
         Subject: Delivery Status Notification (Failure)\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{b}\"\r\n\
         Message-ID: <0100018c2f3a-bounce@email.amazonses.com>\r\n\
         \r\n\
         --{b}\r\n\
         Content-Type: text/plain; charset=UTF-8\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n\
         An error occurred while trying to deliver the mail to the following recipients:\r\n\
         {rcpt}\r\n\
         --{b}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; a8-30.smtp-out.amazonses.com\r\n\
         \r\n\
         Action: failed\r\n\
         Final-Recipient: rfc822; {rcpt}\r\n\
         Diagnostic-Code: smtp; {reply}\r\n\
         Status: {status}\r\n\
         Remote-MTA: dns; mx.example.com\r\n\
         \r\n\
         --{b}\r\n\
         Content-Type: message/rfc822\r\n\
         \r\n\
         {headers}\
         Content-Type: text/plain; charset=UTF-8\r\n\
         \r\n\
         Your link: https://wallet.test/verify?token=(erased)\r\n\
         \r\n\
         --{b}--\r\n",
        headers = original_headers(message_id, rcpt)
    )
}

/// An ARF complaint (RFC 5965 §B.1's example, as SES forwards a recipient's "spam"
/// button): `Original-Mail-From` carries the tag.
pub fn arf_complaint(to: &str, original_mail_from: &str, message_id: &str, rcpt: &str) -> String {
    let b = "part1_13d.2e68ed54_boundary";
    format!(
        "From: <complaints@email-abuse.amazonses.com>\r\n\
         Date: Mon, 30 Nov 2026 18:40:36 +0000\r\n\
         Subject: Complaint about message from 192.0.2.1\r\n\
         To: <{to}>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=feedback-report;\r\n\
         \x20    boundary=\"{b}\"\r\n\
         \r\n\
         --{b}\r\n\
         Content-Type: text/plain; charset=\"US-ASCII\"\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n\
         This is an email abuse report for an email message received from IP\r\n\
         192.0.2.1 on Mon, 30 Nov 2026 18:00:00 +0000.\r\n\
         \r\n\
         --{b}\r\n\
         Content-Type: message/feedback-report\r\n\
         \r\n\
         Feedback-Type: abuse\r\n\
         User-Agent: Amazon SES Feedback Loop\r\n\
         Version: 1\r\n\
         Original-Mail-From: <{original_mail_from}>\r\n\
         Original-Rcpt-To: <{rcpt}>\r\n\
         Arrival-Date: Mon, 30 Nov 2026 18:00:00 +0000\r\n\
         Reporting-MTA: dns; mail.example.com\r\n\
         Source-IP: 192.0.2.1\r\n\
         \r\n\
         --{b}\r\n\
         Content-Type: message/rfc822\r\n\
         Content-Disposition: inline\r\n\
         \r\n\
         {headers}\
         Content-Type: text/plain\r\n\
         \r\n\
         (body removed)\r\n\
         \r\n\
         --{b}--\r\n",
        headers = original_headers(message_id, rcpt)
    )
}

/// One SMTP client session to `addr`: MAIL FROM:<> (reports have a null sender), each
/// RCPT, then DATA with `message` if any recipient was taken. Returns every reply's last
/// line (the greeting's and EHLO's included).
pub async fn send(addr: SocketAddr, rcpts: &[&str], message: &str) -> Vec<String> {
    let stream = TcpStream::connect(addr)
        .await
        .expect("the listener answers");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut replies = Vec::new();
    read_reply(&mut r, &mut replies).await;
    say(&mut w, "EHLO mx.example.net").await;
    read_reply(&mut r, &mut replies).await;
    say(&mut w, "MAIL FROM:<>").await;
    read_reply(&mut r, &mut replies).await;
    let mut taken = 0;
    for rcpt in rcpts {
        say(&mut w, &format!("RCPT TO:<{rcpt}>")).await;
        if read_reply(&mut r, &mut replies).await.starts_with("250") {
            taken += 1;
        }
    }
    if taken > 0 {
        say(&mut w, "DATA").await;
        if read_reply(&mut r, &mut replies).await.starts_with("354") {
            let mut data = String::new();
            for line in message.split_inclusive('\n') {
                // Dot-stuffing (RFC 5321 4.5.2).
                if line.starts_with('.') {
                    data.push('.');
                }
                data.push_str(line);
            }
            data.push_str(".\r\n");
            say(&mut w, data.trim_end()).await;
            read_reply(&mut r, &mut replies).await;
        }
    }
    say(&mut w, "QUIT").await;
    read_reply(&mut r, &mut replies).await;
    replies
}

/// Writes a command (a closed connection is seen in the next reply).
async fn say(w: &mut OwnedWriteHalf, cmd: &str) {
    let _ = w.write_all(format!("{cmd}\r\n").as_bytes()).await;
}

/// Reads one reply (its lines up to the one whose 4th character is a space) and records
/// its last line; "" when the connection closed.
async fn read_reply(r: &mut BufReader<OwnedReadHalf>, replies: &mut Vec<String>) -> String {
    for _ in 0..32 {
        let mut line = String::new();
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) if line.as_bytes().get(3) == Some(&b'-') => continue,
            Ok(_) => {
                let line = line.trim_end().to_string();
                replies.push(line.clone());
                return line;
            }
        }
    }
    String::new()
}
