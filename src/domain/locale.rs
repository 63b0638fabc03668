//! `Locale`: the language of a flow's emails. Unknown tags fall back to English,
//! never an error (API.md).

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
        let primary = tag.trim().split(['-', '_']).next().unwrap_or("");
        if primary.eq_ignore_ascii_case("ne") {
            Locale::Ne
        } else {
            Locale::En
        }
    }

    pub fn as_tag(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Ne => "ne",
        }
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
}
