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

#[cfg(test)]
mod tests {
    use super::*;

    /// `Ok(())` when the id is accepted, else the reason (the id in the error must be the one given).
    fn check(id: &str, expected: Result<(), &str>) {
        let res = validate_process_id(id).map_err(|err| match err {
            Error::InvalidId { id: got_id, reason } => {
                assert_eq!(got_id, id, "the error names the id as given");
                reason
            }
            other => panic!("unexpected error kind {other:?}"),
        });
        match expected {
            Ok(()) => assert_eq!(res, Ok(()), "{id:?} should be accepted"),
            Err(fragment) => {
                let reason = res.expect_err(&format!("{id:?} should be refused"));
                assert!(reason.contains(fragment), "reason {reason:?} for {id:?} lacks {fragment:?}");
            }
        }
        // Instance ids share the alphabet.
        assert_eq!(validate_instance_id(id).is_ok(), expected.is_ok(), "instance id {id:?}");
    }

    #[test]
    fn accepts_the_safe_alphabet() {
        check("a", Ok(()));
        check("7", Ok(()));
        check("my-server", Ok(()));
        check("api.v2_1", Ok(()));
        check("A-Z.a_z-0.9", Ok(()));
        check("default", Ok(()));
        check("watcher", Ok(()));
        check(&"x".repeat(64), Ok(()));
        check(&format!("a{}", "._-".repeat(21)), Ok(()));
    }

    #[test]
    fn refuses_empty_and_overlong() {
        check("", Err("empty"));
        check(&"x".repeat(65), Err("64"));
        check(&"x".repeat(300), Err("64"));
    }

    #[test]
    fn refuses_path_tricks() {
        check("/", Err("start"));
        check("a/b", Err("'/'"));
        check("..", Err("start"));
        check(".", Err("start"));
        check("../etc", Err("start"));
        check(".hidden", Err("start"));
        check("a\\b", Err("'\\\\'"));
    }

    #[test]
    fn refuses_bad_first_character() {
        check("-x", Err("start"));
        check("_x", Err("start"));
        check(" x", Err("start"));
    }

    #[test]
    fn refuses_other_characters() {
        check("my server", Err("' '"));
        check("tab\there", Err("'\\t'"));
        check("new\nline", Err("'\\n'"));
        check("nul\0", Err("'\\0'"));
        check("café", Err("'é'"));
        check("ünicode", Err("start"));
        check("a:b", Err("':'"));
        check("a*", Err("'*'"));
        // 64 characters but more than 64 bytes: refused either way.
        check(&format!("{}é", "x".repeat(63)), Err(""));
    }
}
