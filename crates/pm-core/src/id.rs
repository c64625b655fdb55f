//! Process and instance ids: they become file and folder names, so only a safe alphabet is allowed.

use crate::Error;

/// Checks a process id: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
///
/// Ids name log folders, so `/`, `..`, empty and overlong ids are refused everywhere (API, local client, file).
pub fn validate_process_id(id: &str) -> Result<(), Error> {
    validate(id)
}

/// Checks an instance id; same alphabet as process ids (it names `processes_{id}.json` and `{id}_logs/`).
pub fn validate_instance_id(id: &str) -> Result<(), Error> {
    validate(id)
}

fn validate(id: &str) -> Result<(), Error> {
    let refuse = |reason: &str| Err(Error::InvalidId { id: id.to_owned(), reason: reason.to_owned() });
    let Some(first) = id.chars().next() else {
        return refuse("must not be empty");
    };
    if id.len() > 64 {
        return refuse("must be at most 64 characters");
    }
    if !first.is_ascii_alphanumeric() {
        return refuse("must start with a letter or digit");
    }
    if let Some(bad) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return refuse(&format!("character {bad:?} is not allowed (use A-Z a-z 0-9 . _ -)"));
    }
    Ok(())
}
