//! Who may enter the support console (`EMAILVERIFY_SUPPORT_AUTH`), the agents' tokens
//! (`EMAILVERIFY_SUPPORT_TOKENS`, kept only as digests and compared in constant time),
//! and how many wrong sign-ins a name or a client may try.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderName;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Longest agent name (it goes into the actor, `support:<name>`).
pub const MAX_NAME: usize = 32;
/// Shortest agent token accepted in the settings.
const MIN_TOKEN: usize = 16;

/// How agents are recognised.
#[derive(Clone, Default)]
pub enum SupportAuth {
    /// The console is off: every `/support/` path is 404.
    #[default]
    Off,
    /// An authenticating proxy in front sets this header to the agent's name.
    Header(HeaderName),
    /// Agents sign in with a name and a token.
    Tokens(Vec<Agent>),
}

/// One agent of `EMAILVERIFY_SUPPORT_TOKENS`: the name, and its token's digest only.
#[derive(Clone)]
pub struct Agent {
    name: String,
    token: [u8; 32],
}

impl std::fmt::Debug for SupportAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SupportAuth::Off => f.write_str("off"),
            SupportAuth::Header(h) => write!(f, "header:{h}"),
            SupportAuth::Tokens(a) => write!(f, "tokens ({} agents)", a.len()),
        }
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// An agent's name as the console takes it: 1 to 32 letters, digits, `.`, `_`, `-`, `@`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

impl SupportAuth {
    /// Parses the two settings; the error names the setting at fault.
    pub fn parse(auth: Option<&str>, tokens: Option<&str>) -> Result<Self, (&'static str, String)> {
        const AUTH: &str = "EMAILVERIFY_SUPPORT_AUTH";
        const TOKENS: &str = "EMAILVERIFY_SUPPORT_TOKENS";
        let auth = auth.map(str::trim).unwrap_or("");
        let parsed = if auth.is_empty() {
            SupportAuth::Off
        } else if auth == "tokens" {
            SupportAuth::Tokens(agents(tokens.unwrap_or(""))?)
        } else if let Some(name) = auth.strip_prefix("header:") {
            let header = HeaderName::try_from(name.trim())
                .map_err(|_| (AUTH, format!("{name:?} is not a header name")))?;
            if ["cookie", "host", "origin", "content-type", "content-length"]
                .contains(&header.as_str())
            {
                return Err((AUTH, format!("{header} cannot carry an agent's name")));
            }
            SupportAuth::Header(header)
        } else {
            return Err((AUTH, "unset, tokens, or header:<Header-Name>".into()));
        };
        if tokens.is_some() && !matches!(parsed, SupportAuth::Tokens(_)) {
            return Err((TOKENS, format!("set, but {AUTH} is not tokens")));
        }
        Ok(parsed)
    }
}

/// `name:token,…`: names valid and distinct, tokens at least 16 characters.
fn agents(list: &str) -> Result<Vec<Agent>, (&'static str, String)> {
    const TOKENS: &str = "EMAILVERIFY_SUPPORT_TOKENS";
    let mut out: Vec<Agent> = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, token)) = entry.split_once(':') else {
            return Err((TOKENS, "each entry is name:token".into()));
        };
        let name = name.trim();
        if !valid_name(name) {
            return Err((
                TOKENS,
                format!("agent names are 1 to {MAX_NAME} of A-Z a-z 0-9 . _ - @"),
            ));
        }
        if token.chars().count() < MIN_TOKEN {
            return Err((
                TOKENS,
                format!("the token of {name} is shorter than {MIN_TOKEN} characters"),
            ));
        }
        if out.iter().any(|a| a.name == name) {
            return Err((TOKENS, format!("{name} is named twice")));
        }
        out.push(Agent {
            name: name.to_owned(),
            token: digest(token),
        });
    }
    if out.is_empty() {
        return Err((
            TOKENS,
            "no agents: EMAILVERIFY_SUPPORT_AUTH=tokens needs name:token,…".into(),
        ));
    }
    Ok(out)
}

/// Whether `name` and `token` are an agent's; every agent is compared, in constant time.
pub fn check(agents: &[Agent], name: &str, token: &str) -> bool {
    let (name_d, token_d) = (digest(name), digest(token));
    let mut found = subtle::Choice::from(0);
    for a in agents {
        found |= digest(&a.name).ct_eq(&name_d) & a.token.ct_eq(&token_d);
    }
    found.into()
}

/// Failed sign-ins counted per key (a name, a client) in a fixed window; a key past its
/// allowance is refused, even with the right token, until the window ends. At most
/// `MAX_KEYS` keys are held: past that, expired windows go first, then the oldest.
pub struct Throttle {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
    allowed: u32,
    window: Duration,
}

const MAX_KEYS: usize = 10_000;

impl Throttle {
    pub fn new(allowed: u32, window: Duration) -> Self {
        Self {
            windows: Mutex::new(HashMap::new()),
            allowed,
            window,
        }
    }

    /// Whether `key` may try now.
    pub fn allows(&self, key: &str) -> bool {
        let map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some((start, n)) if start.elapsed() < self.window => *n < self.allowed,
            _ => true,
        }
    }

    /// Counts a failure of `key`.
    pub fn failed(&self, key: &str) {
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let window = self.window;
            map.retain(|_, (start, _)| start.elapsed() < window);
            if map.len() >= MAX_KEYS
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (s, _))| *s)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(key.to_owned()).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_parsed_and_bad_ones_named() {
        assert!(matches!(
            SupportAuth::parse(None, None),
            Ok(SupportAuth::Off)
        ));
        assert!(matches!(
            SupportAuth::parse(Some("header:X-Forwarded-User"), None),
            Ok(SupportAuth::Header(_))
        ));
        let Ok(SupportAuth::Tokens(a)) = SupportAuth::parse(
            Some("tokens"),
            Some("alice:0123456789abcdef, bob:fedcba9876543210"),
        ) else {
            panic!("tokens parse");
        };
        assert!(check(&a, "alice", "0123456789abcdef"));
        assert!(!check(&a, "alice", "fedcba9876543210"));
        assert!(!check(&a, "carol", "0123456789abcdef"));
        for (auth, tokens, setting) in [
            (Some("basic"), None, "EMAILVERIFY_SUPPORT_AUTH"),
            (Some("header:bad header"), None, "EMAILVERIFY_SUPPORT_AUTH"),
            (Some("header:Cookie"), None, "EMAILVERIFY_SUPPORT_AUTH"),
            (Some("tokens"), None, "EMAILVERIFY_SUPPORT_TOKENS"),
            (Some("tokens"), Some("alice"), "EMAILVERIFY_SUPPORT_TOKENS"),
            (
                Some("tokens"),
                Some("alice:short"),
                "EMAILVERIFY_SUPPORT_TOKENS",
            ),
            (
                Some("tokens"),
                Some("a b:0123456789abcdef"),
                "EMAILVERIFY_SUPPORT_TOKENS",
            ),
            (
                Some("tokens"),
                Some("a:0123456789abcdef,a:0123456789abcdeg"),
                "EMAILVERIFY_SUPPORT_TOKENS",
            ),
            (
                None,
                Some("alice:0123456789abcdef"),
                "EMAILVERIFY_SUPPORT_TOKENS",
            ),
        ] {
            match SupportAuth::parse(auth, tokens) {
                Err((named, _)) => assert_eq!(named, setting, "{auth:?} {tokens:?}"),
                Ok(_) => panic!("{auth:?} {tokens:?} was accepted"),
            }
        }
    }

    #[test]
    fn the_throttle_refuses_past_its_allowance() {
        let t = Throttle::new(2, Duration::from_secs(60));
        assert!(t.allows("alice"));
        t.failed("alice");
        t.failed("alice");
        assert!(!t.allows("alice"));
        assert!(t.allows("bob"));
        let short = Throttle::new(1, Duration::from_millis(1));
        short.failed("x");
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.allows("x"));
    }
}
