//! Every sentence of the link pages, in each language the service speaks (API.md: the
//! page speaks its flow's language). `{}` marks where a masked address or a time goes;
//! where a sentence holds several, they are named (`{when}`, `{old}`, `{new}`,
//! `{support}`), since languages order them differently. The button names are the ones
//! the mails tell people to press (`mail::templates`).
//!
//! What each result page promises, and the test that holds it, is listed in
//! `docs/pages.md`: no page may promise what the service does not do.

mod en;
mod ne;
mod shape;

pub use shape::{Said, Texts};

use crate::domain::Locale;

pub fn texts(locale: Locale) -> &'static Texts {
    match locale {
        Locale::En => &en::EN,
        Locale::Ne => &ne::NE,
    }
}
