//! Executable whitelist and blacklist matching on an already resolved, canonical path.

use crate::Error;

/// Checks that a glob pattern is usable, that is, glob-match (0.2) matches exactly what it says.
///
/// glob-match silently matches nothing, or something else, on patterns it does not handle; in a blacklist that
/// would let an executable through. So a pattern must:
/// - be non-empty, at most 1024 bytes, without NUL;
/// - be absolute: start with `/`, or with a `**` segment (`**/*.sh`; `**` alone matches everything);
/// - use `**` only as a whole path segment (`/a/**/b`, `/a/**`), never as `a**b` or `***`, and not inside braces;
/// - close every `[` and `{`, with no empty class (`[]`, `[!]`), no nested braces and no empty alternative
///   (`{a,}`, `{}`);
/// - escape with `\` only glob metacharacters (`\*`, `\?`, `\[`, `\]`, `\{`, `\}`, `\,`, `\!`, `\\`);
///   glob-match reads `\b` as a backspace and `\n` as a newline.
pub fn validate_executable_pattern(pattern: &str) -> Result<(), Error> {
    check_pattern(pattern)
        .map_err(|reason| Error::InvalidPattern { pattern: pattern.to_owned(), reason: reason.to_owned() })
}

/// The checks of [`validate_executable_pattern`]: the whole pattern first, then token by token (an escape, a run
/// of `*`, a character class or a single byte), with the reason for the first that fails.
fn check_pattern(pattern: &str) -> Result<(), &'static str> {
    if pattern.is_empty() {
        return Err("must not be empty");
    }
    if pattern.len() > 1024 || pattern.contains('\0') {
        return Err("must be at most 1024 bytes without NUL");
    }
    if !(pattern.starts_with('/') || pattern.starts_with("**")) {
        return Err("must be an absolute path pattern (start with '/' or '**')");
    }
    let bytes = pattern.as_bytes();
    let mut braces = Braces::default();
    let mut idx = 0;
    while idx < bytes.len() {
        braces.alternative_len += 1;
        idx = match bytes[idx] {
            b'\\' => after_escape(bytes, idx)?,
            b'*' => after_stars(bytes, idx, braces.open)?,
            b'[' => after_class(bytes, idx)?,
            b']' => return Err("']' without '['"),
            byte @ (b'{' | b',' | b'}') => {
                braces.step(byte)?;
                idx + 1
            }
            _ => idx + 1,
        };
    }
    if braces.open {
        return Err("unclosed '{'");
    }
    Ok(())
}

/// The index after the escape `\x` at `idx`; `x` must be a glob metacharacter.
fn after_escape(bytes: &[u8], idx: usize) -> Result<usize, &'static str> {
    match bytes.get(idx + 1) {
        None => Err("ends with a lone backslash"),
        Some(next) if b"*?[]{},!\\".contains(next) => Ok(idx + 2),
        Some(_) => Err("backslash may only escape a glob metacharacter"),
    }
}

/// The index after the run of `*` at `idx`; a `**` must be a whole path segment outside braces.
fn after_stars(bytes: &[u8], idx: usize, in_braces: bool) -> Result<usize, &'static str> {
    let run = bytes[idx..].iter().take_while(|&&b| b == b'*').count();
    if run >= 2 {
        let starts_segment = idx == 0 || bytes[idx - 1] == b'/';
        let ends_segment = bytes.get(idx + run).is_none_or(|&b| b == b'/');
        if run > 2 || !starts_segment || !ends_segment {
            return Err("'**' must be a whole path segment");
        }
        if in_braces {
            return Err("'**' inside braces is not supported");
        }
    }
    Ok(idx + run)
}

/// The index after the character class `[…]` opening at `idx`; it must be closed and not empty.
fn after_class(bytes: &[u8], mut idx: usize) -> Result<usize, &'static str> {
    idx += 1;
    if matches!(bytes.get(idx), Some(b'!' | b'^')) {
        idx += 1;
    }
    if bytes.get(idx) == Some(&b']') {
        return Err("empty character class (write a literal ']' as '\\]')");
    }
    loop {
        match bytes.get(idx) {
            None => return Err("unclosed '['"),
            Some(b']') => return Ok(idx + 1),
            Some(b'\\') => match bytes.get(idx + 1) {
                Some(next) if b"*?[]{},!\\-^".contains(next) => idx += 2,
                _ => return Err("backslash may only escape a glob metacharacter"),
            },
            Some(_) => idx += 1,
        }
    }
}

/// Where the scan stands with respect to `{a,b}`: inside or not, and the tokens seen in the current alternative
/// (counting the `{` or `,` that opened it).
#[derive(Default)]
struct Braces {
    open: bool,
    alternative_len: usize,
}

impl Braces {
    /// Takes `{`, `,` or `}`: braces do not nest, and no alternative is empty.
    fn step(&mut self, byte: u8) -> Result<(), &'static str> {
        match byte {
            b'{' if self.open => return Err("nested braces are not supported"),
            b'{' => {
                self.open = true;
                self.alternative_len = 0;
            }
            b',' | b'}' if self.open => {
                if self.alternative_len == 1 {
                    return Err("empty alternative in braces");
                }
                self.alternative_len = 0;
                self.open = byte == b',';
            }
            b'}' => return Err("'}' without '{'"),
            _ => {}
        }
        Ok(())
    }
}

/// Whether an untrusted peer may register `canonical_path`: it must match at least one whitelist pattern and no
/// blacklist pattern. An empty whitelist permits nothing. `*` stays within one path segment, `**` crosses them,
/// and a leading `**/` also matches at the root (`**/*.sh` matches `/opt/app/run.sh`).
///
/// `canonical_path` must already be absolute with symlinks and `..` resolved; a path that is not (relative, with
/// `.` or `..` segments, empty segments such as `//` or a trailing `/`, or NUL) is refused, because a blacklist
/// entry could not be relied on for it. Pattern errors are reported rather than treated as "no match".
pub fn executable_permitted(canonical_path: &str, whitelist: &[String], blacklist: &[String]) -> Result<bool, Error> {
    for pattern in whitelist.iter().chain(blacklist) {
        validate_executable_pattern(pattern)?;
    }
    let Some(relative) = canonical_path.strip_prefix('/') else {
        return Ok(false);
    };
    if canonical_path.contains('\0') || relative.split('/').any(|seg| seg.is_empty() || seg == ".." || seg == ".") {
        return Ok(false);
    }
    let whitelisted = whitelist.iter().any(|pattern| glob_match::glob_match(pattern, canonical_path));
    let blacklisted = blacklist.iter().any(|pattern| glob_match::glob_match(pattern, canonical_path));
    Ok(whitelisted && !blacklisted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|it| it.to_string()).collect()
    }

    /// Whether `path` is permitted by these lists (`Err` carries the refused pattern).
    fn check(path: &str, whitelist: &[&str], blacklist: &[&str], expected: Result<bool, &str>) {
        let res = executable_permitted(path, &strings(whitelist), &strings(blacklist));
        let res = res.map_err(|err| match err {
            Error::InvalidPattern { pattern, .. } => pattern,
            other => panic!("unexpected error {other:?}"),
        });
        assert_eq!(res, expected.map_err(str::to_owned), "{path:?} with {whitelist:?} / {blacklist:?}");
    }

    /// `Ok` for a usable pattern, else a fragment of the reason.
    fn check_pattern(pattern: &str, expected: Result<(), &str>) {
        match (validate_executable_pattern(pattern), expected) {
            (Ok(()), Ok(())) => {}
            (Err(Error::InvalidPattern { pattern: got, reason }), Err(fragment)) => {
                assert_eq!(got, pattern);
                assert!(reason.contains(fragment), "reason {reason:?} for {pattern:?} lacks {fragment:?}");
            }
            (got, expected) => panic!("{pattern:?}: got {got:?}, expected {expected:?}"),
        }
    }

    const GUIDE_WHITELIST: &[&str] = &["/usr/bin/*", "/opt/myapp/*", "/opt/workers/**"];
    const GUIDE_BLACKLIST: &[&str] = &["/usr/bin/rm", "/bin/rm", "/usr/bin/sudo", "**/*.sh"];

    #[test]
    fn single_star_stays_in_its_segment() {
        check("/usr/bin/python3", GUIDE_WHITELIST, &[], Ok(true));
        check("/usr/bin/sub/x", GUIDE_WHITELIST, &[], Ok(false));
        check("/usr/binx", GUIDE_WHITELIST, &[], Ok(false));
        check("/usr/local/bin/python3", GUIDE_WHITELIST, &[], Ok(false));
        check("/opt/myapp/server", GUIDE_WHITELIST, &[], Ok(true));
        check("/opt/myapp/lib/server", GUIDE_WHITELIST, &[], Ok(false));
    }

    #[test]
    fn double_star_crosses_segments() {
        check("/opt/workers/a", GUIDE_WHITELIST, &[], Ok(true));
        check("/opt/workers/a/b/c/worker", GUIDE_WHITELIST, &[], Ok(true));
        check("/opt/workersX/a", GUIDE_WHITELIST, &[], Ok(false));
        check("/opt/a/b/bin/x", &["/opt/**/bin/*"], &[], Ok(true));
        check("/opt/bin/x", &["/opt/**/bin/*"], &[], Ok(true));
        check("/anything/at/all", &["/**"], &[], Ok(true));
    }

    #[test]
    fn blacklist_wins() {
        check("/usr/bin/rm", GUIDE_WHITELIST, GUIDE_BLACKLIST, Ok(false));
        check("/usr/bin/sudo", GUIDE_WHITELIST, GUIDE_BLACKLIST, Ok(false));
        check("/usr/bin/rmdir", GUIDE_WHITELIST, GUIDE_BLACKLIST, Ok(true));
        check("/usr/bin/python3", GUIDE_WHITELIST, GUIDE_BLACKLIST, Ok(true));
        // Not whitelisted at all, blacklisted or not.
        check("/bin/rm", GUIDE_WHITELIST, GUIDE_BLACKLIST, Ok(false));
    }

    #[test]
    fn leading_double_star_matches_absolute_paths() {
        // glob-match's `**/` also matches the empty first segment of an absolute path (verified here).
        check("/opt/app/run.sh", &["/opt/**"], &["**/*.sh"], Ok(false));
        check("/opt/workers/deep/down/job.sh", GUIDE_WHITELIST, GUIDE_BLACKLIST, Ok(false));
        check("/usr/bin/x.sh", GUIDE_WHITELIST, GUIDE_BLACKLIST, Ok(false));
        check("/run.sh", &["/*"], &["**/*.sh"], Ok(false));
        check("/opt/app/run.shx", &["/opt/**"], &["**/*.sh"], Ok(true));
        check("/opt/app.sh/run", &["/opt/**"], &["**/*.sh"], Ok(true));
        check("/usr/sbin/sudo", &["/usr/**"], &["**/{rm,sudo}"], Ok(false));
        check("/usr/bin/rm", &["/usr/**"], &["**/bin/rm"], Ok(false));
        check("/bin/rm", &["/**"], &["**/bin/rm"], Ok(false));
    }

    #[test]
    fn empty_whitelist_permits_nothing() {
        check("/usr/bin/python3", &[], &[], Ok(false));
        check("/usr/bin/python3", &[], GUIDE_BLACKLIST, Ok(false));
    }

    #[test]
    fn unresolved_paths_are_refused() {
        check("/usr/bin/../bin/python3", GUIDE_WHITELIST, &[], Ok(false));
        check("/opt/workers/../../usr/bin/rm", GUIDE_WHITELIST, GUIDE_BLACKLIST, Ok(false));
        check("/usr/bin/./python3", GUIDE_WHITELIST, &[], Ok(false));
        check("python3", &["**"], &[], Ok(false));
        check("usr/bin/python3", &["**"], &[], Ok(false));
        check("", &["**"], &[], Ok(false));
        // Empty segments would dodge an exact blacklist entry.
        check("/usr//bin/rm", &["/usr/**"], &["/usr/bin/rm"], Ok(false));
        check("/usr/bin/", GUIDE_WHITELIST, &[], Ok(false));
        check("/usr/bin/rm\0", &["/usr/**"], &["/usr/bin/rm"], Ok(false));
    }

    #[test]
    fn braces_and_classes() {
        check("/usr/bin/python3", &["/usr/bin/{python3,node}"], &[], Ok(true));
        check("/usr/bin/node", &["/usr/bin/{python3,node}"], &[], Ok(true));
        check("/usr/bin/ruby", &["/usr/bin/{python3,node}"], &[], Ok(false));
        check("/usr/sbin/x", &["/usr/{bin,sbin}/*"], &[], Ok(true));
        check("/usr/bin/sm", &["/usr/bin/[rs]m"], &[], Ok(true));
        check("/usr/bin/sm", &["/usr/bin/[!r]m"], &[], Ok(true));
        check("/usr/bin/rm", &["/usr/bin/[!r]m"], &[], Ok(false));
        check("/usr/bin/r1", &["/usr/bin/r?"], &[], Ok(true));
        check("/usr/bin/*", &["/usr/bin/\\*"], &[], Ok(true));
        check("/usr/bin/x", &["/usr/bin/\\*"], &[], Ok(false));
    }

    #[test]
    fn malformed_patterns_are_errors_not_silent_misses() {
        for bad in ["/usr/[bin", "/usr/{a,b", "relative/*", ""] {
            check("/usr/bin/python3", &[bad], &[], Err(bad));
            check("/usr/bin/python3", &["/usr/bin/*"], &[bad], Err(bad));
            // Reported even when the path itself would be refused.
            check("relative", &[bad], &[], Err(bad));
        }
    }

    #[test]
    fn pattern_validation() {
        check_pattern("/usr/bin/*", Ok(()));
        check_pattern("/opt/workers/**", Ok(()));
        check_pattern("**/*.sh", Ok(()));
        check_pattern("**", Ok(()));
        check_pattern("/**/rm", Ok(()));
        check_pattern("/usr/bin/{rm,sudo}", Ok(()));
        check_pattern("/usr/bin/[a-z]?", Ok(()));
        check_pattern("/usr/bin/a,b", Ok(()));
        check_pattern("/usr/bin/\\[x\\]", Ok(()));
        check_pattern("", Err("empty"));
        check_pattern("relative/*", Err("absolute"));
        check_pattern("*.sh", Err("absolute"));
        check_pattern("!/usr/bin/rm", Err("absolute"));
        check_pattern("/usr/[bin", Err("unclosed '['"));
        check_pattern("/usr/{a,b", Err("unclosed '{'"));
        check_pattern("/usr/a]", Err("']'"));
        check_pattern("/usr/a}", Err("'}'"));
        check_pattern("/usr/[]", Err("empty character class"));
        check_pattern("/usr/bin\\", Err("backslash"));
        check_pattern("/usr/\0", Err("NUL"));
        check_pattern(&format!("/{}", "a".repeat(1024)), Err("1024"));
    }

    #[test]
    fn patterns_glob_match_cannot_match_reliably_are_refused() {
        // Each of these is accepted by glob-match but silently fails to match what it says (checked against
        // glob-match 0.2.1), which in a blacklist would let the executable through.
        check_pattern("/usr/[!]", Err("empty character class"));
        check_pattern("/usr/[^]", Err("empty character class"));
        check_pattern("/usr/{bin,{s,x}bin}/rm", Err("nested"));
        check_pattern("/{opt/**,usr/bin}/rm", Err("'**'"));
        check_pattern("/usr/bin/{rm,}", Err("empty alternative"));
        check_pattern("/usr/bin/{,rm}", Err("empty alternative"));
        check_pattern("/usr/bin/{}", Err("empty alternative"));
        check_pattern("/usr/bin/{rm,,sudo}", Err("empty alternative"));
        check_pattern("/usr/**rm", Err("'**'"));
        check_pattern("/usr/b**/rm", Err("'**'"));
        check_pattern("**.sh", Err("'**'"));
        check_pattern("/a/***/x", Err("'**'"));
        // glob-match reads `\b` as a backspace and `\n` as a newline.
        check_pattern("/usr/\\bin/rm", Err("escape"));
        check_pattern("/usr/bin/\\n", Err("escape"));
    }
}
