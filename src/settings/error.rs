//! `SettingError`: the one error a bad setting stops the start with, naming the setting.

#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct SettingError {
    pub setting: &'static str,
    pub message: String,
}

pub(super) fn bad(setting: &'static str, message: impl Into<String>) -> SettingError {
    SettingError {
        setting,
        message: message.into(),
    }
}
