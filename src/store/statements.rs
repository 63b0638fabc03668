//! The static statements a use-case sends whole (PostgreSQL), one `.sql` file each in
//! `sql/`, read top to bottom: their text never changes at run time, so each is prepared
//! once per pooled connection. Their parameters are fixed; rows travel as JSON arrays
//! (`rows.rs`).

/// A locked use-case's waiting writes (`Tx::flush`).
pub(super) const WRITES: &str = include_str!("sql/writes.sql");
/// An optimistic request's one statement (`optimistic::commit`).
pub(super) const REQUEST: &str = include_str!("sql/request.sql");
/// An optimistic confirmation of a flow's last link that sends no mail (`optimistic::commit`).
pub(super) const CONFIRM: &str = include_str!("sql/confirm.sql");
/// An optimistic confirmation of a change's last link, which mails the old address.
pub(super) const CONFIRM_CHANGE: &str = include_str!("sql/confirm_change.sql");
/// An optimistic confirmation of a change's first link, to the current address.
pub(super) const CONFIRM_CURRENT: &str = include_str!("sql/confirm_current.sql");
/// A locked request's first statement: the user's lock and a limit's step.
pub(super) const LOCK_USER_TAKING: &str = include_str!("sql/lock_user_taking.sql");
/// A locked link confirmation's first write: the user's lock and the token's consumption.
pub(super) const LOCK_USER_CONSUMING: &str = include_str!("sql/lock_user_consuming.sql");

/// Every statement by its file's name (the golden test and `EXPLAIN` use it).
pub const ALL: [(&str, &str); 7] = [
    ("writes.sql", WRITES),
    ("request.sql", REQUEST),
    ("confirm.sql", CONFIRM),
    ("confirm_change.sql", CONFIRM_CHANGE),
    ("confirm_current.sql", CONFIRM_CURRENT),
    ("lock_user_taking.sql", LOCK_USER_TAKING),
    ("lock_user_consuming.sql", LOCK_USER_CONSUMING),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden test: each statement as the database receives it, printed whole (run
    /// with `--nocapture` to read them), with its placeholders numbered 1..=n without a
    /// gap and no quote that a value could have been spliced into.
    #[test]
    fn every_statement_is_static_and_numbered_without_gaps() {
        for (name, sql) in ALL {
            println!("-- {name}\n{sql}");
            let mut used: Vec<usize> = sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .flat_map(|l| l.split('$').skip(1))
                .filter_map(|rest| {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().ok()
                })
                .collect();
            used.sort_unstable();
            used.dedup();
            assert!(!used.is_empty(), "{name} takes parameters");
            assert_eq!(
                used,
                (1..=used.len()).collect::<Vec<_>>(),
                "{name}'s placeholders"
            );
            let header = sql.lines().take_while(|l| l.starts_with("--")).count();
            assert!(header >= 3, "{name} opens with what it does and takes");
        }
    }
}
