//! DKIM: every mail is signed with EMAILVERIFY_DKIM_KEY (RSA as PKCS#1 or PKCS#8 PEM,
//! Ed25519 as PKCS#8 PEM) for the From domain, and the signature is checked here from
//! scratch: RFC 6376 relaxed canonicalisation, the body hash, and the signature against the
//! public key as its DNS record (`p=`) would publish it.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePublicKey as _, EncodePublicKey as _, LineEnding};
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest as _, Sha256};

use crate::helpers::{Backend, spawn_app_with};

const SELECTOR: &str = "mail2026";
const DOMAIN: &str = "wallet.test";

/// A key as the operator's file holds it, and its DKIM DNS record's `k=` and `p=`.
struct TestKey {
    pem: String,
    k: &'static str,
    p: String,
}

fn keys() -> Vec<(&'static str, TestKey)> {
    let rsa = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let rsa_p = B64.encode(rsa.to_public_key().to_public_key_der().unwrap().as_bytes());
    let ed = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    vec![
        (
            "RSA PKCS#1",
            TestKey {
                pem: rsa.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
                k: "rsa",
                p: rsa_p.clone(),
            },
        ),
        (
            "RSA PKCS#8",
            TestKey {
                pem: rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&rsa, LineEnding::LF)
                    .unwrap()
                    .to_string(),
                k: "rsa",
                p: rsa_p,
            },
        ),
        (
            "Ed25519 PKCS#8",
            TestKey {
                pem: ed.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
                k: "ed25519",
                // RFC 8463: the bare 32-byte public key.
                p: B64.encode(ed.verifying_key().as_bytes()),
            },
        ),
    ]
}

async fn every_mail_is_signed_for_the_from_domain(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    for (name, key) in keys() {
        let path = dir.path().join("dkim.pem");
        std::fs::write(&path, &key.pem).unwrap();
        let app = spawn_app_with(backend, |s| {
            s.relay.dkim_key = Some(path.clone());
            s.relay.dkim_selector = Some(SELECTOR.into());
        })
        .await;
        app.request_verification("user-1", "jane@example.com")
            .await
            .unwrap();
        let mail = app.next_mail().await;
        let tags = verify(&mail.raw, key.k, &key.p).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tags["d"], DOMAIN, "{name}");
        assert_eq!(tags["s"], SELECTOR, "{name}");
        assert_eq!(tags["c"], "relaxed/relaxed", "{name}");
        let signed: Vec<String> = tags["h"]
            .split(':')
            .map(|h| h.trim().to_lowercase())
            .collect();
        for header in [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
        ] {
            assert!(
                signed.iter().any(|h| h == header),
                "{name}: h= lacks {header}"
            );
        }
        // The check is not vacuous: a changed Subject or body no longer verifies.
        let forged = mail.raw.replacen("Subject: ", "Subject: Re: ", 1);
        assert_ne!(forged, mail.raw);
        assert!(
            verify(&forged, key.k, &key.p).is_err(),
            "{name}: forged subject"
        );
        let (head, body) = mail.raw.split_once("\r\n\r\n").unwrap();
        let forged = format!("{head}\r\n\r\nX{body}");
        assert!(
            verify(&forged, key.k, &key.p).is_err(),
            "{name}: forged body"
        );
        app.stop().await;
    }
}

crate::on_both_backends!(every_mail_is_signed_for_the_from_domain);

/// RFC 6376 verification of the message's one DKIM-Signature against the public key of the
/// DNS record `k=<k>; p=<p>`: its tags, or why it fails.
fn verify(raw: &str, k: &str, p: &str) -> Result<HashMap<String, String>, String> {
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no body")?;
    // Headers with their continuation lines, in order.
    let mut headers: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().ok_or("continuation first")?;
            last.push_str("\r\n");
            last.push_str(line);
        } else {
            headers.push(line.to_owned());
        }
    }
    let name_of = |h: &str| h.split_once(':').map(|(n, _)| n.trim().to_lowercase());
    let sigs: Vec<&String> = headers
        .iter()
        .filter(|h| name_of(h).as_deref() == Some("dkim-signature"))
        .collect();
    let [sig] = sigs[..] else {
        return Err(format!("{} DKIM-Signature headers", sigs.len()));
    };
    let value = sig.split_once(':').unwrap().1.replace("\r\n", "");
    let tags: HashMap<String, String> = value
        .split(';')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            let (k, v) = t.split_once('=').unwrap_or((t, ""));
            let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
            (k.trim().to_owned(), v)
        })
        .collect();
    if tags.get("v").map(String::as_str) != Some("1") {
        return Err("v= is not 1".into());
    }
    if tags.get("c").map(String::as_str) != Some("relaxed/relaxed") {
        return Err(format!(
            "c={:?}: only relaxed/relaxed is checked here",
            tags.get("c")
        ));
    }
    let expected_a = format!("{k}-sha256");
    if tags.get("a") != Some(&expected_a) {
        return Err(format!("a={:?}, expected {expected_a}", tags.get("a")));
    }

    // Body hash (§3.4.4 relaxed, §3.7).
    let bh = B64.encode(Sha256::digest(relaxed_body(body)));
    if tags.get("bh") != Some(&bh) {
        return Err("the body hash does not match".into());
    }

    // Header hash (§3.4.2 relaxed, §3.7): h= headers (last instance first), then the
    // signature header with b= empty and no final CRLF.
    let mut data = String::new();
    let mut used = vec![false; headers.len()];
    for name in tags.get("h").ok_or("no h=")?.split(':') {
        let name = name.trim().to_lowercase();
        if let Some(i) = (0..headers.len())
            .rev()
            .find(|&i| !used[i] && name_of(&headers[i]).as_deref() == Some(name.as_str()))
        {
            used[i] = true;
            data.push_str(&relaxed_header(&headers[i]));
        }
    }
    let (sig_name, sig_value) = sig.split_once(':').unwrap();
    let emptied: Vec<String> = sig_value
        .split(';')
        .map(|t| match t.split_once('=') {
            Some((k, _)) if k.trim() == "b" => format!("{k}="),
            _ => t.to_owned(),
        })
        .collect();
    let sig_header = relaxed_header(&format!("{sig_name}:{}", emptied.join(";")));
    data.push_str(sig_header.trim_end_matches("\r\n"));
    let hash = Sha256::digest(data.as_bytes());

    let b = B64
        .decode(tags.get("b").ok_or("no b=")?)
        .map_err(|e| format!("b=: {e}"))?;
    let p = B64.decode(p).unwrap();
    match k {
        "rsa" => RsaPublicKey::from_public_key_der(&p)
            .unwrap()
            .verify(Pkcs1v15Sign::new::<Sha256>(), &hash, &b)
            .map_err(|e| format!("RSA signature: {e}"))?,
        // RFC 8463: Ed25519 over the SHA-256 hash.
        "ed25519" => VerifyingKey::from_bytes(&<[u8; 32]>::try_from(p).unwrap())
            .unwrap()
            .verify(
                &hash,
                &Signature::from_slice(&b).map_err(|e| format!("b=: {e}"))?,
            )
            .map_err(|e| format!("Ed25519 signature: {e}"))?,
        other => panic!("k={other}"),
    }
    Ok(tags)
}

/// Runs of spaces and tabs as one space.
fn squeeze(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c == ' ' || c == '\t' {
            space = true;
        } else {
            if space {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    if space {
        out.push(' ');
    }
    out
}

/// §3.4.2: name lowercased, unfolded, whitespace runs as one space, none around the colon
/// or at the end.
fn relaxed_header(header: &str) -> String {
    let (name, value) = header.split_once(':').unwrap();
    let value = squeeze(&value.replace("\r\n", ""));
    format!("{}:{}\r\n", name.trim().to_lowercase(), value.trim())
}

/// §3.4.4: whitespace runs as one space, none at line ends, no empty lines at the end.
fn relaxed_body(body: &str) -> Vec<u8> {
    let mut lines: Vec<String> = body
        .split("\r\n")
        .map(|line| squeeze(line).trim_end_matches(' ').to_owned())
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    let mut out = String::new();
    for line in lines {
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out.into_bytes()
}
