//! The bounce listener's wire: CRLF-terminated lines read against a deadline (a bare LF
//! is its own kind of line, so the session can refuse it), replies, and the few pieces of
//! SMTP syntax the session parses.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a refusal (421) may take to write.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// Answers a connection we do not serve, briefly, and closes it.
pub(super) async fn refuse(mut stream: TcpStream, text: &str) {
    let _ = tokio::time::timeout(REFUSAL_WRITE, reply(&mut stream, text)).await;
}

/// One line read, at most `max` bytes.
pub(super) enum Line {
    Eof,
    TooLong,
    /// A line that ends with LF alone.
    BareLf,
    /// A line with its CRLF.
    Text(Vec<u8>),
}

/// The next line, by `deadline`; `Err` of kind `TimedOut` when it passed.
pub(super) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
    deadline: Instant,
) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout_at(
        deadline,
        (&mut *r).take(max as u64).read_until(b'\n', &mut buf),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no progress in time"))??;
    Ok(match read {
        0 => Line::Eof,
        _ if buf.ends_with(b"\r\n") => Line::Text(buf),
        _ if buf.ends_with(b"\n") => Line::BareLf,
        _ if buf.len() >= max => Line::TooLong,
        _ => Line::Eof,
    })
}

/// One reply line, CRLF-terminated, flushed.
pub(super) async fn reply<W: AsyncWrite + Unpin>(w: &mut W, text: &str) -> std::io::Result<()> {
    w.write_all(format!("{text}\r\n").as_bytes()).await?;
    w.flush().await
}

/// The address in `FROM:<a> …` / `TO:<a> …`, and the rest (parameters).
pub(super) fn path_of(arg: &str) -> (String, &str) {
    let arg = arg.trim_start();
    match arg.strip_prefix('<').and_then(|a| a.split_once('>')) {
        Some((addr, rest)) => (addr.to_owned(), rest),
        None => {
            let (addr, rest) = arg.split_once(' ').unwrap_or((arg, ""));
            (addr.to_owned(), rest)
        }
    }
}

/// `arg` without its leading `keyword` (any case), if it starts with it.
pub(super) fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &arg[keyword.len()..])
}
