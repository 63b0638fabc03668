//! Database errors, classified once, here: a lost or unobtainable connection, or a server
//! that cannot take the statement now (failing over, full), is UNAVAILABLE (safe to
//! retry); anything else is internal. Decided by the driver's error *kind* and SQLSTATE,
//! never by message text. (The one constraint a statement can
//! trip on purpose, the verified-address index, is mapped where it is written: `users.rs`.)

use sea_orm::{DbErr, RuntimeErr};

use crate::error::CoreError;

impl From<DbErr> for CoreError {
    fn from(err: DbErr) -> Self {
        let unavailable = match &err {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
            DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
                is_connection_error(e)
            }
            _ => false,
        };
        if unavailable {
            CoreError::Unavailable(err.into())
        } else {
            CoreError::Internal(err.into())
        }
    }
}

/// Whether `e` is the server's state rather than our statement. When it is, the pools
/// ask their connections again for a while (`connect::in_doubt`): a server that went away,
/// restarts or was fenced may have left connections that look fine.
fn is_connection_error(e: &sea_orm::sqlx::Error) -> bool {
    let yes = server_state(e);
    if yes {
        super::connect::in_doubt();
    }
    yes
}

fn server_state(e: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error;
    match e {
        Error::Io(_)
        | Error::Tls(_)
        | Error::Protocol(_)
        | Error::PoolTimedOut
        | Error::PoolClosed
        | Error::WorkerCrashed => true,
        // SQLSTATE 08xxx connection exceptions, 57P01..03 (server shutting down or
        // starting), 53300 (no connection slot left), 25006 (a read-only server: a standby,
        // or a primary being failed over), 40001/40P01/40003 (the transaction was rolled
        // back, or its end is unknown): the server's state, not our statement; a retry
        // is safe (a repeated request returns what the first one did).
        Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08")
                || matches!(
                    c.as_ref(),
                    "57P01" | "57P02" | "57P03" | "53300" | "25006" | "40001" | "40P01" | "40003"
                )
        }),
        _ => false,
    }
}

/// A database's own error: its SQLSTATE, the constraint it names (or ""), its message.
pub(super) struct DatabaseError {
    pub code: String,
    pub constraint: String,
    pub message: String,
}

/// The database error inside `err`, if it is one.
pub(super) fn database_error(err: &DbErr) -> Option<DatabaseError> {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return None;
    };
    let sea_orm::sqlx::Error::Database(db) = e.as_ref() else {
        return None;
    };
    Some(DatabaseError {
        code: db.code()?.into_owned(),
        constraint: db.constraint().unwrap_or_default().to_owned(),
        message: db.message().to_owned(),
    })
}
