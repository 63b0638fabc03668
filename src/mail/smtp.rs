//! Our SMTP client: one connection to the relay, and the exchange that hands it a message
//! (lettre still builds the messages). `transport.rs` keeps a few of these connections.
//!
//! Why not lettre's SMTP transport: its connections never set TCP_NODELAY and it writes a
//! message's final `.` apart from the body, so every mail waited ~40 ms for the relay's
//! delayed ACK; and it waits for each command's reply, where ESMTP PIPELINING (RFC 2920)
//! sends MAIL FROM, RCPT TO and DATA in one write. Its connection type keeps its stream to
//! itself, so no write of ours can go around it: the exchange is written here instead.
//!
//! TLS, once asked for, is never optional: with STARTTLS required, a relay that does not
//! offer it gets nothing, and credentials only ever travel over TLS.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lettre::address::Envelope;
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

mod wire;

pub use wire::{Cause, Failure, Reply};
use wire::{Extensions, read_reply, stale, unsupported, write};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain SMTP (a relay on loopback); never with credentials.
    Plain,
    /// STARTTLS required (RFC 3207).
    StartTls,
    /// TLS from the first byte (RFC 8314).
    Implicit,
}

/// Where and how to reach the relay.
pub struct Relay {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// User and password, sent over TLS only.
    pub credentials: Option<(String, String)>,
    /// Checks the relay's certificate (system roots + EMAILVERIFY_MAIL_CA); `None` for plain.
    pub tls: Option<TlsConnector>,
    /// How long connecting, the TLS handshake or any one reply may take.
    pub timeout: Duration,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection idle this long, or left dirty by a refusal, is reset before its next mail.
const PROBE_AFTER: Duration = Duration::from_secs(10);

/// One open, greeted (and, as configured, encrypted and logged-in) connection.
pub struct Connection {
    io: BufReader<Box<dyn Io>>,
    ext: Extensions,
    timeout: Duration,
    pub last_used: Instant,
    /// A refusal left a transaction open on the server: RSET first.
    dirty: bool,
    /// No reply where one was due: the connection cannot be trusted again.
    pub broken: bool,
}

impl Connection {
    /// Connects (TCP_NODELAY), greets, encrypts and logs in as `relay` says.
    pub async fn open(relay: &Relay) -> Result<Self, Failure> {
        Self::handshake(relay).await.map_err(Failure::setup)
    }

    async fn handshake(relay: &Relay) -> Result<Self, Failure> {
        let t = relay.timeout;
        let tcp = tokio::time::timeout(t, TcpStream::connect((relay.host.as_str(), relay.port)))
            .await
            .map_err(|_| Failure::network("smtp: connecting timed out"))?
            .map_err(|e| Failure::network(format!("smtp: cannot connect: {e}")))?;
        // Without it, a mail's last segment waits for the relay's delayed ACK (~40 ms).
        tcp.set_nodelay(true)
            .map_err(|e| Failure::network(format!("smtp: {e}")))?;
        let (io, ext): (BufReader<Box<dyn Io>>, _) = match relay.security {
            Security::Plain => greet(BufReader::new(Box::new(tcp) as Box<dyn Io>), t).await?,
            Security::Implicit => {
                let tls = encrypt(relay, tcp).await?;
                greet(BufReader::new(Box::new(tls) as Box<dyn Io>), t).await?
            }
            Security::StartTls => {
                let (mut io, ext) = greet(BufReader::new(tcp), t).await?;
                if !ext.starttls {
                    return Err(Failure::network(
                        "the relay does not offer STARTTLS, which the mail URL requires",
                    ));
                }
                let reply = command(&mut io, "STARTTLS\r\n", t).await?;
                if reply.code != 220 {
                    return Err(Failure::refused("STARTTLS", reply));
                }
                // Bytes sent past the 220 would pass for encrypted ones (the STARTTLS
                // command injection of CVE-2011-0411): refuse them.
                if !io.buffer().is_empty() {
                    return Err(Failure::network("smtp: data after the STARTTLS reply"));
                }
                let tls = encrypt(relay, io.into_inner()).await?;
                let mut io: BufReader<Box<dyn Io>> = BufReader::new(Box::new(tls));
                let ext = ehlo(&mut io, t).await?;
                (io, ext)
            }
        };
        let mut conn = Connection {
            io,
            ext,
            timeout: t,
            last_used: Instant::now(),
            dirty: false,
            broken: false,
        };
        if let Some((user, pass)) = &relay.credentials {
            if relay.security == Security::Plain {
                return Err(Failure::network("credentials are never sent without TLS"));
            }
            conn.login(user, pass).await?;
        }
        Ok(conn)
    }

    async fn login(&mut self, user: &str, pass: &str) -> Result<(), Failure> {
        let offers = |m: &str| self.ext.auth.iter().any(|a| a == m);
        let steps = if offers("PLAIN") {
            vec![format!(
                "AUTH PLAIN {}\r\n",
                B64.encode(format!("\0{user}\0{pass}"))
            )]
        } else if offers("LOGIN") {
            vec![
                "AUTH LOGIN\r\n".to_string(),
                format!("{}\r\n", B64.encode(user)),
                format!("{}\r\n", B64.encode(pass)),
            ]
        } else {
            return Err(Failure::network(
                "the relay offers neither AUTH PLAIN nor LOGIN",
            ));
        };
        for step in steps {
            let reply = command(&mut self.io, &step, self.timeout).await?;
            if !reply.positive() {
                return Err(Failure::refused("AUTH", reply));
            }
        }
        Ok(())
    }

    /// Hands one message to the relay: its reply to the final `.`, or why not.
    pub async fn send(&mut self, envelope: &Envelope, body: &[u8]) -> Result<Reply, Failure> {
        let result = self.transaction(envelope, body).await;
        self.last_used = Instant::now();
        match &result {
            Err(Failure {
                cause: Cause::Network,
                ..
            }) => self.broken = true,
            Err(_) => self.dirty = true,
            Ok(_) => self.dirty = false,
        }
        result
    }

    async fn transaction(&mut self, envelope: &Envelope, body: &[u8]) -> Result<Reply, Failure> {
        let mut params = String::new();
        let mut addresses = envelope.from().into_iter().chain(envelope.to());
        if addresses.any(|a| !AsRef::<str>::as_ref(a).is_ascii()) {
            if !self.ext.smtputf8 {
                return Err(unsupported("SMTPUTF8"));
            }
            params.push_str(" SMTPUTF8");
        }
        if !body.is_ascii() {
            if !self.ext.eight_bit {
                return Err(unsupported("8BITMIME"));
            }
            params.push_str(" BODY=8BITMIME");
        }
        let mut commands = Vec::new();
        if self.dirty || self.last_used.elapsed() > PROBE_AFTER {
            commands.push(("RSET", "RSET\r\n".to_string()));
        }
        let from = envelope.from().map(|a| a.to_string()).unwrap_or_default();
        commands.push(("MAIL FROM", format!("MAIL FROM:<{from}>{params}\r\n")));
        for to in envelope.to() {
            commands.push(("RCPT TO", format!("RCPT TO:<{to}>\r\n")));
        }
        commands.push(("DATA", "DATA\r\n".to_string()));
        // Pipelined: every command in one write, then every reply. Otherwise one by one,
        // stopping at the first refusal. A failure before the first reply is a dead
        // connection that never saw the message.
        let t = self.timeout;
        let mut refusal = None;
        if self.ext.pipelining {
            let batch: String = commands.iter().map(|(_, c)| c.as_str()).collect();
            write(&mut self.io, batch.as_bytes(), t)
                .await
                .map_err(stale)?;
        }
        for (i, (what, line)) in commands.iter().enumerate() {
            let reply = if self.ext.pipelining {
                read_reply(&mut self.io, t).await
            } else {
                command(&mut self.io, line, t).await
            };
            let reply = if i == 0 {
                reply.map_err(stale)?
            } else {
                reply?
            };
            let accepted = if *what == "DATA" {
                reply.code == 354
            } else {
                reply.code / 100 == 2
            };
            if *what == "DATA" && accepted && refusal.is_some() {
                // The relay waits for a message that must not go: only closing ends that.
                self.broken = true;
            }
            if !accepted && refusal.is_none() {
                refusal = Some(Failure::refused(what, reply));
                if !self.ext.pipelining {
                    break;
                }
            }
        }
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        // The message and its end in one write.
        write(&mut self.io, &data_block(body), t).await?;
        let reply = read_reply(&mut self.io, t).await?;
        if reply.code / 100 != 2 {
            return Err(Failure::refused("the message", reply));
        }
        Ok(reply)
    }

    /// Says goodbye (best effort, briefly).
    pub async fn quit(mut self) {
        let t = self.timeout.min(Duration::from_secs(2));
        let _ = command(&mut self.io, "QUIT\r\n", t).await;
    }
}

async fn encrypt<S: AsyncRead + AsyncWrite + Unpin>(
    relay: &Relay,
    stream: S,
) -> Result<tokio_rustls::client::TlsStream<S>, Failure> {
    let connector = relay
        .tls
        .as_ref()
        .ok_or_else(|| Failure::network("no TLS settings"))?;
    let name = ServerName::try_from(relay.host.clone())
        .map_err(|_| Failure::network(format!("{} is not a TLS server name", relay.host)))?;
    tokio::time::timeout(relay.timeout, connector.connect(name, stream))
        .await
        .map_err(|_| Failure::network("smtp: the TLS handshake timed out"))?
        .map_err(|e| Failure::network(format!("smtp TLS: {e}")))
}

/// Reads the greeting and says EHLO.
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: BufReader<S>,
    t: Duration,
) -> Result<(BufReader<S>, Extensions), Failure> {
    let greeting = read_reply(&mut io, t).await?;
    if greeting.code != 220 {
        return Err(Failure::refused("greeting", greeting));
    }
    let ext = ehlo(&mut io, t).await?;
    Ok((io, ext))
}

async fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    t: Duration,
) -> Result<Extensions, Failure> {
    let reply = command(io, &format!("EHLO {}\r\n", ClientId::default()), t).await?;
    if reply.code != 250 {
        return Err(Failure::refused("EHLO", reply));
    }
    Ok(Extensions::of(&reply))
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    line: &str,
    t: Duration,
) -> Result<Reply, Failure> {
    write(io, line.as_bytes(), t).await?;
    read_reply(io, t).await
}

/// The message dot-stuffed (RFC 5321 4.5.2), with the final `.` line.
fn data_block(body: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(body.len() + body.len() / 50 + 5);
    let mut line_start = true;
    for &b in body {
        if line_start && b == b'.' {
            data.push(b'.');
        }
        data.push(b);
        line_start = b == b'\n';
    }
    let end: &[u8] = if body.ends_with(b"\r\n") {
        b".\r\n"
    } else {
        b"\r\n.\r\n"
    };
    data.extend_from_slice(end);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_block_is_dot_stuffed_and_ends_once() {
        assert_eq!(
            data_block(b".a\r\nb\r\n..c\r\n"),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(data_block(b"x"), b"x\r\n.\r\n");
    }
}
