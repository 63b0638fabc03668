//! `Locale`: the language of a flow's emails and pages. Unknown tags fall back to English,
//! never an error (API.md); an EMPTY tag is no choice at all (API.md, release 3): mails then
//! use `EMAILVERIFY_DEFAULT_LOCALE` and pages the browser's `Accept-Language`.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locale {
    #[default]
    En,
    /// Nepali: the wallet's users are in Nepal.
    Ne,
}

impl Locale {
    /// Reads a BCP-47 tag by its primary language subtag: `ne`, `ne-NP`, `NE` are Nepali.
    pub fn from_tag(tag: &str) -> Self {
        Self::supported(tag).unwrap_or(Locale::En)
    }

    /// A tag of a language the service speaks (by its primary subtag), else None.
    pub fn supported(tag: &str) -> Option<Self> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or("");
        if primary.eq_ignore_ascii_case("ne") {
            Some(Locale::Ne)
        } else if primary.eq_ignore_ascii_case("en") {
            Some(Locale::En)
        } else {
            None
        }
    }

    /// What a caller asked for: None for an empty tag (no choice: the default applies),
    /// else the tag read as `from_tag` does. Flows store None as `""`.
    pub fn requested(tag: &str) -> Option<Self> {
        (!tag.trim().is_empty()).then(|| Self::from_tag(tag))
    }

    /// The stored form of `requested`'s answer.
    pub fn stored(locale: Option<Self>) -> &'static str {
        locale.map_or("", Self::as_tag)
    }

    pub fn as_tag(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Ne => "ne",
        }
    }

    /// The language a browser asks for among those the service speaks (RFC 9110
    /// `Accept-Language`): the highest `q` wins, the earlier of equal ones; a region or
    /// script (`ne-NP`) matches its language; `q=0` means "not this one"; `*` and
    /// languages the service does not speak are passed over. None: nothing matched.
    pub fn from_accept_language(header: &str) -> Option<Self> {
        let mut best: Option<(u16, Locale)> = None;
        // Bounded: a header has a few entries; a hostile one is cut off.
        for entry in header.split(',').take(32) {
            let mut parts = entry.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let q = parts
                .find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| quality(v.trim()))
                })
                .unwrap_or(Some(1000));
            let (Some(q), Some(locale)) = (q, Self::supported(tag)) else {
                continue;
            };
            if q > 0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, locale));
            }
        }
        best.map(|(_, l)| l)
    }
}

/// A `q` value in thousandths (`0.8` → 800); a malformed one is None (the entry is ignored).
fn quality(v: &str) -> Option<u16> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value: u16 = format!("{frac:0<3}").parse().ok()?;
    match whole {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_primary_subtag_and_falls_back_to_english() {
        assert_eq!(Locale::from_tag("ne"), Locale::Ne);
        assert_eq!(Locale::from_tag("ne-NP"), Locale::Ne);
        assert_eq!(Locale::from_tag("NE_np"), Locale::Ne);
        assert_eq!(Locale::from_tag(""), Locale::En);
        assert_eq!(Locale::from_tag("en-GB"), Locale::En);
        assert_eq!(Locale::from_tag("klingon"), Locale::En);
    }

    #[test]
    fn an_empty_tag_is_no_choice() {
        assert_eq!(Locale::requested(""), None);
        assert_eq!(Locale::requested("  "), None);
        assert_eq!(Locale::requested("ne-NP"), Some(Locale::Ne));
        assert_eq!(Locale::requested("fr"), Some(Locale::En));
        assert_eq!(Locale::stored(None), "");
        assert_eq!(Locale::stored(Some(Locale::Ne)), "ne");
    }

    #[test]
    fn accept_language_matches_regions_and_honours_q() {
        let cases = [
            ("ne-NP", Some(Locale::Ne)),
            ("ne-NP,ne;q=0.9,en-US;q=0.8,en;q=0.7", Some(Locale::Ne)),
            ("en-US,en;q=0.9,ne;q=0.8", Some(Locale::En)),
            ("ne;q=0, en", Some(Locale::En)),
            ("ne;q=0", None),
            ("ne-NP;q=0.000", None),
            ("fr-FR, ne;q=0.5", Some(Locale::Ne)),
            ("en;q=0.4, ne-IN;q=0.6", Some(Locale::Ne)),
            ("*", None),
            ("", None),
            ("ne;q=2", None),
            ("ne;q=abc, en;q=0.1", Some(Locale::En)),
            ("EN-gb , NE", Some(Locale::En)),
        ];
        for (header, want) in cases {
            assert_eq!(Locale::from_accept_language(header), want, "{header}");
        }
    }
}
