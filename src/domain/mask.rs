//! Masked addresses, for logs, events, pages and mails: enough to recognise one's own
//! address, never the whole of it.

/// Masks a stored address; a value without `@` is masked completely.
pub fn mask(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// Masks two addresses so that a reader can tell them apart (a change's old and new
/// address): the usual mask if the two differ, else the last character of the local part
/// too (`b***h@…` / `b***w@…`), then more of its start and end, always hiding at least
/// half of it. Addresses that still read alike differ only in their hidden middle.
pub fn mask_apart(a: &str, b: &str) -> (String, String) {
    const SHOWN: [(usize, usize); 5] = [(1, 0), (1, 1), (2, 1), (2, 2), (3, 2)];
    let mut masks = (mask(a), mask(b));
    for (head, tail) in SHOWN {
        masks = (mask_showing(a, head, tail), mask_showing(b, head, tail));
        if masks.0 != masks.1 {
            break;
        }
    }
    masks
}

/// `head` characters of the local part from its start and `tail` from its end, each cut
/// so that at least half of the local part stays hidden.
fn mask_showing(address: &str, head: usize, tail: usize) -> String {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return "***".to_owned();
    };
    let chars: Vec<char> = local.chars().collect();
    let most = chars.len() / 2;
    let head = head.min(most.max(1));
    let tail = tail.min(most.saturating_sub(head));
    let start: String = chars[..head.min(chars.len())].iter().collect();
    let end: String = chars[chars.len() - tail..].iter().collect();
    format!("{start}***{end}@{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changes_two_addresses_are_masked_apart() {
        let (old, new) = mask_apart("bikash@example.com.np", "bikash.new@example.com.np");
        assert_eq!(old, "b***h@example.com.np");
        assert_eq!(new, "b***w@example.com.np");
        // Different first letters: the usual mask.
        assert_eq!(
            mask_apart("jane@x.np", "mary@x.np"),
            ("j***@x.np".to_owned(), "m***@x.np".to_owned())
        );
        // Never more than half of a local part shows.
        assert_eq!(mask_apart("ab@x.np", "ac@x.np").0, "a***@x.np");
        assert_eq!(mask_apart("abcdef@x.np", "abcxef@x.np").0, "abc***@x.np");
    }
}
