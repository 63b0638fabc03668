//! Console sessions, in this process's memory: a random id in an HttpOnly, SameSite=Strict
//! cookie (Secure when the public URL is https), kept here only as its digest, with the
//! agent's name and the CSRF token its forms carry. A session ends 8 hours after it began
//! or 30 minutes after its last request, whichever comes first; at most `MAX_SESSIONS` are
//! held (past that the least recently used goes).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "ev_support";
const ABSOLUTE: Duration = Duration::from_secs(8 * 3600);
const IDLE: Duration = Duration::from_secs(30 * 60);
const MAX_SESSIONS: usize = 10_000;

#[derive(Clone, Debug)]
pub struct Session {
    pub agent: String,
    pub csrf: String,
    began: Instant,
    seen: Instant,
}

/// Whether a form's CSRF token is the session's (constant time; empty never matches).
pub fn same_token(session: &str, form: &str) -> bool {
    !form.is_empty() && bool::from(session.as_bytes().ct_eq(form.as_bytes()))
}

pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
    absolute: Duration,
    idle: Duration,
}

fn random() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Default for Sessions {
    fn default() -> Self {
        Self::with_lifetimes(ABSOLUTE, IDLE)
    }
}

impl Sessions {
    pub fn with_lifetimes(absolute: Duration, idle: Duration) -> Self {
        Self {
            by_digest: Mutex::new(HashMap::new()),
            absolute,
            idle,
        }
    }

    fn live(&self, s: &Session) -> bool {
        s.began.elapsed() < self.absolute && s.seen.elapsed() < self.idle
    }

    /// A new session for `agent`: its cookie value and the session.
    pub fn begin(&self, agent: &str) -> (String, Session) {
        let id = random();
        let now = Instant::now();
        let session = Session {
            agent: agent.to_owned(),
            csrf: random(),
            began: now,
            seen: now,
        };
        let mut map = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.began.elapsed() < self.absolute && s.seen.elapsed() < self.idle);
            if map.len() >= MAX_SESSIONS
                && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.seen).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        map.insert(digest(&id), session.clone());
        (id, session)
    }

    /// The live session of the request's cookie (its last use now), if any.
    pub fn of(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers)?;
        let mut map = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        let key = digest(&id);
        let live = map.get(&key).map(|s| self.live(s))?;
        if !live {
            map.remove(&key);
            return None;
        }
        let s = map.get_mut(&key)?;
        s.seen = Instant::now();
        Some(s.clone())
    }

    /// Ends the request's session.
    pub fn end(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            let mut map = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&digest(&id));
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.by_digest.lock().map(|m| m.is_empty()).unwrap_or(true)
    }
}

/// The session cookie's value in the request.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 43)
}

/// The `Set-Cookie` of a new session (`secure` when the public URL is https).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/support/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        ABSOLUTE.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` that ends it in the browser.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/support/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={id}")).unwrap(),
        );
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_expires() {
        let sessions = Sessions::default();
        let (id, s) = sessions.begin("alice");
        let found = sessions.of(&with_cookie(&id)).expect("live");
        assert_eq!(found.agent, "alice");
        assert!(same_token(&found.csrf, &s.csrf));
        assert!(!same_token(&found.csrf, ""));
        assert!(!same_token(&found.csrf, "x"));
        assert!(sessions.of(&with_cookie(&random())).is_none());
        sessions.end(&with_cookie(&id));
        assert!(sessions.of(&with_cookie(&id)).is_none());

        let short = Sessions::with_lifetimes(Duration::from_secs(60), Duration::from_millis(1));
        let (id, _) = short.begin("bob");
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.of(&with_cookie(&id)).is_none(), "idle too long");
        assert!(short.is_empty());
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let c = set_cookie("abc", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie("abc", false).contains("Secure"));
    }
}
