//! Times for people: a date and a time of day in the flow's language, in the service's
//! time zone (`EMAILVERIFY_TIME_ZONE`), never a raw RFC 3339 stamp (API.md).

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::Locale;

const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
/// The Gregorian months as Nepali writes them (not Bikram Sambat: the service speaks of
/// the calendar the rest of the wallet uses).
const MONTHS_NE: [&str; 12] = [
    "जनवरी",
    "फेब्रुअरी",
    "मार्च",
    "अप्रिल",
    "मे",
    "जुन",
    "जुलाई",
    "अगस्ट",
    "सेप्टेम्बर",
    "अक्टोबर",
    "नोभेम्बर",
    "डिसेम्बर",
];

/// `ms` (Unix milliseconds) written for people: "30 November 2026, 15:34 UTC" or
/// "३० नोभेम्बर २०२६, २१:१९ (नेपाल समय)". Words are joined by no-break spaces, so a mail
/// or page never breaks a date between its day and its month.
pub fn for_people(ms: i64, locale: Locale, tz: &TimeZone) -> String {
    let Ok(at) = Timestamp::from_millisecond(ms) else {
        return String::new();
    };
    let z = at.to_zoned_datetime(tz.clone());
    let month = usize::try_from(z.month() - 1).unwrap_or(0);
    let zone = zone_name(tz, locale);
    let text = match locale {
        Locale::En => format!(
            "{} {} {}, {:02}:{:02} {zone}",
            z.day(),
            MONTHS_EN[month],
            z.year(),
            z.hour(),
            z.minute()
        ),
        Locale::Ne => format!(
            "{} {} {}, {}:{} {zone}",
            digits(&z.day().to_string(), locale),
            MONTHS_NE[month],
            digits(&z.year().to_string(), locale),
            digits(&format!("{:02}", z.hour()), locale),
            digits(&format!("{:02}", z.minute()), locale),
        ),
    };
    text.replace(' ', "\u{a0}")
}

/// How a reader knows the zone: UTC, Nepal's own name for its time, else the IANA name.
fn zone_name(tz: &TimeZone, locale: Locale) -> String {
    match (tz.iana_name(), locale) {
        (Some("Asia/Kathmandu" | "Asia/Katmandu"), Locale::En) => "(Nepal Time)".into(),
        (Some("Asia/Kathmandu" | "Asia/Katmandu"), Locale::Ne) => "(नेपाल समय)".into(),
        (Some("UTC" | "Etc/UTC"), _) | (None, _) => "UTC".into(),
        (Some(name), _) => format!("({name})"),
    }
}

/// "24 hours", "1 hour", "15 minutes" — or the Nepali equivalent in Devanagari digits.
pub fn duration_in_words(secs: u64, locale: Locale) -> String {
    let (n, unit_en, unit_ne) = if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, ("hour", "hours"), "घण्टा")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, ("minute", "minutes"), "मिनेट")
    } else {
        (secs, ("second", "seconds"), "सेकेन्ड")
    };
    match locale {
        Locale::En => format!("{n} {}", if n == 1 { unit_en.0 } else { unit_en.1 }),
        Locale::Ne => format!("{} {unit_ne}", digits(&n.to_string(), locale)),
    }
}

/// Digits in the locale's script: Devanagari for Nepali.
pub fn digits(text: &str, locale: Locale) -> String {
    match locale {
        Locale::En => text.to_owned(),
        Locale::Ne => text
            .chars()
            .map(|c| {
                c.to_digit(10)
                    .and_then(|d| char::from_u32(0x0966 + d))
                    .unwrap_or(c)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: i64 = 1_796_052_876_000; // 2026-11-30T15:34:36Z

    #[test]
    fn times_read_as_words_in_the_zone_and_language() {
        let utc = TimeZone::UTC;
        let ktm = TimeZone::get("Asia/Kathmandu").unwrap();
        let nbsp = |s: &str| s.replace(' ', "\u{a0}");
        assert_eq!(
            for_people(AT, Locale::En, &utc),
            nbsp("30 November 2026, 15:34 UTC")
        );
        assert_eq!(
            for_people(AT, Locale::En, &ktm),
            nbsp("30 November 2026, 21:19 (Nepal Time)")
        );
        assert_eq!(
            for_people(AT, Locale::Ne, &ktm),
            nbsp("३० नोभेम्बर २०२६, २१:१९ (नेपाल समय)")
        );
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(
            for_people(AT, Locale::En, &berlin),
            nbsp("30 November 2026, 16:34 (Europe/Berlin)")
        );
        assert!(!for_people(AT, Locale::En, &utc).contains("T15"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_in_words(3600, Locale::En), "1 hour");
        assert_eq!(duration_in_words(900, Locale::En), "15 minutes");
        assert_eq!(duration_in_words(90, Locale::En), "90 seconds");
        assert_eq!(duration_in_words(7200, Locale::Ne), "२ घण्टा");
    }
}
