//! Executable whitelist and blacklist matching on an already resolved, canonical path.

use crate::Error;

/// Checks that a glob pattern is usable: absolute (or starting with `**`), balanced brackets and braces, no
/// empty alternation, no NUL, at most 1024 bytes. glob-match silently matches nothing on a malformed pattern, so
/// patterns are checked here before they are stored.
pub fn validate_executable_pattern(pattern: &str) -> Result<(), Error> {
    let refuse = |reason: &str| Err(Error::InvalidPattern { pattern: pattern.to_owned(), reason: reason.to_owned() });
    if pattern.is_empty() {
        return refuse("must not be empty");
    }
    if pattern.len() > 1024 || pattern.contains('\0') {
        return refuse("must be at most 1024 bytes without NUL");
    }
    if !(pattern.starts_with('/') || pattern.starts_with("**")) {
        return refuse("must be an absolute path pattern (start with '/' or '**')");
    }
    let mut in_class = false;
    let mut brace_depth = 0u32;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if chars.next().is_none() {
                    return refuse("ends with a lone backslash");
                }
            }
            '[' if !in_class => {
                in_class = true;
                if chars.peek() == Some(&']') {
                    return refuse("empty character class '[]'");
                }
            }
            ']' if in_class => in_class = false,
            ']' => return refuse("']' without '['"),
            '{' if !in_class => brace_depth += 1,
            '}' if !in_class => {
                if brace_depth == 0 {
                    return refuse("'}' without '{'");
                }
                brace_depth -= 1;
            }
            _ => {}
        }
    }
    if in_class {
        return refuse("unclosed '['");
    }
    if brace_depth != 0 {
        return refuse("unclosed '{'");
    }
    Ok(())
}

/// Whether an untrusted peer may register `canonical_path`: it must match at least one whitelist pattern and no
/// blacklist pattern. An empty whitelist permits nothing. `*` stays within one path segment, `**` crosses them.
///
/// `canonical_path` must already be absolute with symlinks and `..` resolved; pattern errors are reported rather
/// than treated as "no match".
pub fn executable_permitted(canonical_path: &str, whitelist: &[String], blacklist: &[String]) -> Result<bool, Error> {
    for pattern in whitelist.iter().chain(blacklist) {
        validate_executable_pattern(pattern)?;
    }
    if !canonical_path.starts_with('/') || canonical_path.split('/').any(|seg| seg == ".." || seg == ".") {
        return Ok(false);
    }
    let whitelisted = whitelist.iter().any(|pattern| glob_match::glob_match(pattern, canonical_path));
    let blacklisted = blacklist.iter().any(|pattern| glob_match::glob_match(pattern, canonical_path));
    Ok(whitelisted && !blacklisted)
}
