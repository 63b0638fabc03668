//! `with_writes`: several statements as one PostgreSQL statement (data-modifying CTEs in
//! front of a main part), each keeping its own parameters. `batch.rs` says when that is
//! safe.

use sea_orm::{DbBackend, Statement};

/// One PostgreSQL statement that runs `front` as data-modifying CTEs and then `main`
/// (whose result it returns). Each part keeps its own parameters: its `$n` are shifted
/// past the parts before it. Our statements are built with every value bound, so a `$`
/// in their text is always a placeholder.
pub(super) fn with_writes(front: Vec<Statement>, main: Statement) -> Statement {
    if front.is_empty() {
        return main;
    }
    let mut sql = String::new();
    let mut values = Vec::new();
    for (i, part) in front.into_iter().enumerate() {
        sql.push_str(if i == 0 { "WITH " } else { ", " });
        sql.push_str(&format!("w{i} AS ("));
        sql.push_str(&shift_placeholders(&part.sql, values.len()));
        sql.push(')');
        values.extend(part.values.map(|v| v.0).unwrap_or_default());
    }
    sql.push(' ');
    sql.push_str(&shift_placeholders(&main.sql, values.len()));
    values.extend(main.values.map(|v| v.0).unwrap_or_default());
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// `$1` → `$(1 + by)`, for every placeholder in `sql`.
fn shift_placeholders(sql: &str, by: usize) -> String {
    debug_assert!(
        !sql.contains('\''),
        "statements combined by with_writes bind every value: {sql}"
    );
    if by == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while let Some(&(j, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            end = j + 1;
            chars.next();
        }
        match sql[start..end].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&sql[start..end]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_writes_keep_each_part_s_own_parameters() {
        let pg = |sql: &str, values: Vec<sea_orm::Value>| {
            Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
        };
        let combined = with_writes(
            vec![
                pg("INSERT INTO a VALUES ($1, $2)", vec![1.into(), 2.into()]),
                pg("UPDATE b SET x = $1", vec![3.into()]),
            ],
            pg(
                "INSERT INTO c VALUES ($1, $10) RETURNING y",
                vec![4.into(), 5.into()],
            ),
        );
        assert_eq!(
            combined.sql,
            "WITH w0 AS (INSERT INTO a VALUES ($1, $2)), w1 AS (UPDATE b SET x = $3) \
             INSERT INTO c VALUES ($4, $13) RETURNING y"
        );
        let values: Vec<sea_orm::Value> = combined.values.unwrap().0;
        assert_eq!(
            values,
            vec![1.into(), 2.into(), 3.into(), 4.into(), 5.into()]
        );
    }

    #[test]
    fn a_statement_alone_is_sent_as_it_is() {
        let main = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT $1",
            [sea_orm::Value::from(7)],
        );
        assert_eq!(with_writes(Vec::new(), main.clone()).sql, main.sql);
    }
}
