//! Mail templates (minijinja): a text and an HTML part for every mail, in the flow's
//! locale (English, Nepali). The layouts live in `templates/*.j2`; the sentences of each
//! locale are small templates themselves, so placeholders are filled by the engine and
//! HTML output is escaped by it.

use minijinja::{Environment, context};

use jiff::tz::TimeZone;

use crate::domain::when::{duration_in_words, for_people};
use crate::domain::{Locale, MailParams, Secrets, Template};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedMail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

struct Sentences {
    subject: &'static str,
    intro: &'static str,
    action: &'static str,
    not_you: &'static str,
}

const CODE_EN: &str = "Or type this code in the app: {{ code }}";
const CODE_NE: &str = "वा एपमा यो कोड हाल्नुहोस्: {{ code }}";
const EXPIRY_EN: &str = "This link works for {{ ttl }}, until {{ expires }}.";
const EXPIRY_NE: &str = "यो लिङ्क {{ ttl }} मात्र, अर्थात् {{ expires }} सम्म काम गर्छ।";
/// The button named here is the link page's (`http::pages`), word for word.
const NOT_YOU_LINK_EN: &str = "If you did not ask for this, open the link and press “This wasn’t me” — or simply ignore this email.";
const NOT_YOU_LINK_NE: &str = "यदि तपाईंले यो अनुरोध गर्नुभएको होइन भने, लिङ्क खोलेर “यो मैले गरेको होइन” बटन थिच्नुहोस्, वा यो इमेल बेवास्ता गरे पनि हुन्छ।";
/// The change notice's last line, with and without `EMAILVERIFY_SUPPORT_CONTACT`. It
/// never asks to reply: the notice comes from an address nobody reads.
const NOTICE_NOT_YOU_EN: &str = "If you did not make this change, contact {{ support }} right away, or open Help in the wallet app.";
const NOTICE_NOT_YOU_EN_APP: &str =
    "If you did not make this change, open Help in the wallet app right away.";
const NOTICE_NOT_YOU_NE: &str = "यदि यो परिवर्तन तपाईंले गर्नुभएको होइन भने, तुरुन्तै {{ support }} मा सम्पर्क गर्नुहोस्, वा वालेट एपको सहायता (Help) खोल्नुहोस्।";
const NOTICE_NOT_YOU_NE_APP: &str =
    "यदि यो परिवर्तन तपाईंले गर्नुभएको होइन भने, तुरुन्तै वालेट एपको सहायता (Help) खोल्नुहोस्।";

fn sentences(t: Template, l: Locale) -> Sentences {
    match (t, l) {
        (Template::VerifyLink, Locale::En) => Sentences {
            subject: "Confirm your email address",
            intro: "Please confirm that this is the email address of your wallet account.",
            action: "Confirm your email address",
            not_you: NOT_YOU_LINK_EN,
        },
        (Template::VerifyLink, Locale::Ne) => Sentences {
            subject: "आफ्नो इमेल ठेगाना पुष्टि गर्नुहोस्",
            intro: "कृपया यो इमेल ठेगाना तपाईंको वालेट खाताको हो भनी पुष्टि गर्नुहोस्।",
            action: "इमेल ठेगाना पुष्टि गर्नुहोस्",
            not_you: NOT_YOU_LINK_NE,
        },
        (Template::ChangeCurrentLink, Locale::En) => Sentences {
            subject: "Confirm the change of your email address",
            intro: "Someone asked to change the email address of your wallet account to {{ masked_new }}. If it was you, confirm below; we will then send a link to the new address.",
            action: "Confirm the change",
            not_you: NOT_YOU_LINK_EN,
        },
        (Template::ChangeCurrentLink, Locale::Ne) => Sentences {
            subject: "इमेल ठेगाना परिवर्तन पुष्टि गर्नुहोस्",
            intro: "तपाईंको वालेट खाताको इमेल ठेगाना {{ masked_new }} मा परिवर्तन गर्न अनुरोध गरिएको छ। यदि यो अनुरोध तपाईंले नै गर्नुभएको हो भने, तल पुष्टि गर्नुहोस्। त्यसपछि हामी नयाँ ठेगानामा लिङ्क पठाउनेछौं।",
            action: "परिवर्तन पुष्टि गर्नुहोस्",
            not_you: NOT_YOU_LINK_NE,
        },
        (Template::ChangeNewLink, Locale::En) => Sentences {
            subject: "Confirm your new email address",
            intro: "Please confirm this address as the new email address of your wallet account (replacing {{ masked_old }}).",
            action: "Confirm your new email address",
            not_you: NOT_YOU_LINK_EN,
        },
        (Template::ChangeNewLink, Locale::Ne) => Sentences {
            subject: "नयाँ इमेल ठेगाना पुष्टि गर्नुहोस्",
            intro: "कृपया {{ masked_old }} को सट्टा यो ठेगानालाई तपाईंको वालेट खाताको नयाँ इमेल ठेगानाको रूपमा पुष्टि गर्नुहोस्।",
            action: "नयाँ इमेल ठेगाना पुष्टि गर्नुहोस्",
            not_you: NOT_YOU_LINK_NE,
        },
        (Template::ChangeNotice, Locale::En) => Sentences {
            subject: "Your email address has been changed",
            intro: "The email address of your wallet account has been changed from {{ masked_old }} to {{ masked_new }} on {{ changed_at }}.",
            action: "",
            not_you: NOTICE_NOT_YOU_EN,
        },
        (Template::ChangeNotice, Locale::Ne) => Sentences {
            subject: "तपाईंको इमेल ठेगाना परिवर्तन गरिएको छ",
            intro: "{{ changed_at }} मा तपाईंको वालेट खाताको इमेल ठेगाना {{ masked_old }} बाट {{ masked_new }} मा परिवर्तन गरियो।",
            action: "",
            not_you: NOTICE_NOT_YOU_NE,
        },
    }
}

fn escape_attribute(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub struct Templates {
    env: Environment<'static>,
    /// Where times are written for (`EMAILVERIFY_TIME_ZONE`).
    time_zone: TimeZone,
}

impl Templates {
    pub fn new(time_zone: TimeZone) -> Self {
        let mut env = Environment::new();
        // Names ending in .html are auto-escaped by minijinja's default callback.
        for (name, src) in [
            ("link.txt", include_str!("templates/link.txt.j2")),
            ("link.html", include_str!("templates/link.html.j2")),
            ("notice.txt", include_str!("templates/notice.txt.j2")),
            ("notice.html", include_str!("templates/notice.html.j2")),
        ] {
            env.add_template(name, src)
                .expect("built-in mail templates parse");
        }
        Self { env, time_zone }
    }

    /// Renders a mail; `secrets` is `None` only for the change notice.
    pub fn render(
        &self,
        template: Template,
        locale: Locale,
        params: &MailParams,
        secrets: Option<&Secrets>,
    ) -> Result<RenderedMail, minijinja::Error> {
        let link = secrets.map(|s| s.link.as_str());
        let mut s = sentences(template, locale);
        if template == Template::ChangeNotice && params.support.is_empty() {
            s.not_you = match locale {
                Locale::En => NOTICE_NOT_YOU_EN_APP,
                Locale::Ne => NOTICE_NOT_YOU_NE_APP,
            };
        }
        let when = |ms: i64| for_people(ms, locale, &self.time_zone);
        let vars = context! {
            masked_new => params.masked_new,
            masked_old => params.masked_old,
            changed_at => params.changed_at.map(when).unwrap_or_default(),
            expires => when(params.expires_at),
            ttl => duration_in_words(params.ttl_secs, locale),
            code => secrets.map(|s| s.code.as_str()).unwrap_or_default(),
            support => params.support,
        };
        let fill = |sentence: &str| self.env.render_str(sentence, &vars);
        let expiry = match locale {
            Locale::En => fill(EXPIRY_EN)?,
            Locale::Ne => fill(EXPIRY_NE)?,
        };
        let code_line = match locale {
            Locale::En => fill(CODE_EN)?,
            Locale::Ne => fill(CODE_NE)?,
        };
        let ctx = context! {
            code_line => code_line,
            lang => locale.as_tag(),
            subject => s.subject,
            intro => fill(s.intro)?,
            action => s.action,
            not_you => fill(s.not_you)?,
            expiry => expiry,
            link => link.unwrap_or_default(),
            // minijinja escapes `/` too (`&#x2f;`); links stay readable (and searchable)
            // in the HTML source when only the characters that matter in an attribute are.
            link_html => link.map(escape_attribute).unwrap_or_default(),
        };
        let layout = if template == Template::ChangeNotice {
            "notice"
        } else {
            "link"
        };
        Ok(RenderedMail {
            subject: s.subject.to_owned(),
            text: self
                .env
                .get_template(&format!("{layout}.txt"))?
                .render(&ctx)?,
            html: self
                .env
                .get_template(&format!("{layout}.html"))?
                .render(&ctx)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> MailParams {
        MailParams {
            expires_at: 0,
            ttl_secs: 86_400,
            masked_new: "n***@example.com".into(),
            masked_old: "o***@example.com".into(),
            changed_at: Some(0),
            support: "help@wallet.example".into(),
        }
    }

    fn secrets(link: &str) -> Secrets {
        Secrets {
            link: link.into(),
            code: "042917".into(),
        }
    }

    #[test]
    fn every_template_renders_in_every_locale_with_the_link_in_both_parts() {
        let t = Templates::new(TimeZone::UTC);
        for tpl in [
            Template::VerifyLink,
            Template::ChangeCurrentLink,
            Template::ChangeNewLink,
        ] {
            for l in [Locale::En, Locale::Ne] {
                let m = t
                    .render(
                        tpl,
                        l,
                        &params(),
                        Some(&secrets("http://x/verify?token=T&a=<b>")),
                    )
                    .unwrap();
                assert!(
                    m.text.contains("042917") && m.html.contains("042917"),
                    "{tpl:?} {l:?}: the code"
                );
                assert!(
                    m.text.contains("http://x/verify?token=T&a=<b>"),
                    "{tpl:?} {l:?}"
                );
                assert!(
                    m.html.contains("verify?token=T&amp;a=&lt;b&gt;"),
                    "{tpl:?} {l:?}: html escapes: {}",
                    m.html
                );
                assert!(!m.subject.is_empty());
            }
        }
        let en = t
            .render(
                Template::ChangeCurrentLink,
                Locale::En,
                &params(),
                Some(&secrets("L")),
            )
            .unwrap();
        assert!(en.text.contains("n***@example.com") && en.text.contains("24 hours"));
        let ne = t
            .render(
                Template::VerifyLink,
                Locale::Ne,
                &params(),
                Some(&secrets("L")),
            )
            .unwrap();
        assert!(ne.text.contains("२४ घण्टा"), "{}", ne.text);
        let notice = t
            .render(Template::ChangeNotice, Locale::En, &params(), None)
            .unwrap();
        assert!(
            notice.text.contains("o***@example.com")
                && notice
                    .text
                    .contains("1\u{a0}January\u{a0}1970,\u{a0}00:00\u{a0}UTC"),
            "{}",
            notice.text
        );
    }

    /// docs/mails.md: every mail in both languages as its reader sees it (the text part),
    /// rendered by the service's own templates, so the document cannot drift from them.
    /// `EMAILVERIFY_WRITE_DOCS=1 cargo test --lib mails_document` rewrites it.
    #[test]
    fn mails_document_matches_the_templates() {
        let tz = TimeZone::get("Asia/Kathmandu").unwrap();
        let t = Templates::new(tz);
        let (masked_old, masked_new) = crate::domain::email::mask_apart(
            "bikash@example.com.np",
            "bikash.new@example.com.np",
            &[1; 32],
        );
        // 2026-11-30T15:34:36Z, and a day later.
        let (at, ttl) = (1_796_052_876_000_i64, 86_400_u64);
        let link = "https://wallet.example/verify?token=k3Qz0v-EXAMPLE-TOKEN-43-characters-long00";
        let mut doc = String::from(
            "# The mails, as their readers see them\n\n\
             Generated by `mails_document_matches_the_templates` (src/mail/templates.rs) from the \
             service's templates; the test fails when this file and the templates differ. The \
             example: a change from `bikash@example.com.np` to `bikash.new@example.com.np`, \
             `EMAILVERIFY_TIME_ZONE=Asia/Kathmandu`, links valid for 24 hours. Each mail also has \
             an HTML part with the same sentences and a button.\n",
        );
        let cases = [
            (
                Template::VerifyLink,
                "Sign-up: the link to the new address",
                "",
            ),
            (
                Template::ChangeCurrentLink,
                "Change, step 1: the link to the current address",
                "",
            ),
            (
                Template::ChangeNewLink,
                "Change, step 2: the link to the new address",
                "",
            ),
            (
                Template::ChangeNotice,
                "Change done: the notice to the old address (no `EMAILVERIFY_SUPPORT_CONTACT`)",
                "",
            ),
            (
                Template::ChangeNotice,
                "Change done: the notice, with `EMAILVERIFY_SUPPORT_CONTACT=help@wallet.example`",
                "help@wallet.example",
            ),
        ];
        for (template, title, support) in cases {
            for (locale, language) in [(Locale::En, "English"), (Locale::Ne, "Nepali")] {
                let params = MailParams {
                    expires_at: at + 86_400_000,
                    ttl_secs: ttl,
                    masked_new: masked_new.clone(),
                    masked_old: if template == Template::VerifyLink {
                        String::new()
                    } else {
                        masked_old.clone()
                    },
                    changed_at: (template == Template::ChangeNotice).then_some(at),
                    support: support.into(),
                };
                let secrets = (template != Template::ChangeNotice).then(|| Secrets {
                    link: link.into(),
                    code: "042917".into(),
                });
                let m = t
                    .render(template, locale, &params, secrets.as_ref())
                    .unwrap();
                doc.push_str(&format!(
                    "\n## {title} — {language}\n\nSubject: {}\n\n```text\n{}\n```\n",
                    m.subject,
                    m.text.trim_end()
                ));
            }
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/mails.md");
        if std::env::var("EMAILVERIFY_WRITE_DOCS").as_deref() == Ok("1") {
            std::fs::write(&path, &doc).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == doc,
            "docs/mails.md differs from the templates: run EMAILVERIFY_WRITE_DOCS=1 cargo test --lib mails_document"
        );
    }
}
