//! A validating scan of JSON text that builds nothing and answers where values are: what [`crate::LazyRegistry`]
//! reads a registry file with (issue 19: a local `register` on 10,000 entries).
//!
//! It is stricter than serde_json, never more lenient: what it accepts, serde_json accepts. What it is not sure
//! of (a `\u` escape, a number with an exponent or more than 18 integer digits, nesting deeper than 100) it
//! refuses, and the caller then reads the text with serde_json, which says what is wrong if anything is.

/// Nesting deeper than this is refused (serde_json refuses more than 128).
const MAX_DEPTH: usize = 100;

/// A cursor over JSON text.
pub(crate) struct Scanner<'a> {
    text: &'a str,
    at: usize,
    depth: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Scanner<'a> {
        Scanner { text, at: 0, depth: 0 }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    #[inline(always)]
    fn skip_whitespace(&mut self) {
        let bytes = self.text.as_bytes();
        while self.at < bytes.len() && matches!(bytes[self.at], b' ' | b'\n' | b'\t' | b'\r') {
            self.at += 1;
        }
    }

    /// Whitespace, then `byte`.
    #[inline(always)]
    pub(crate) fn eat(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Whitespace, then `byte` if it comes next (answers whether it did).
    #[inline(always)]
    pub(crate) fn eat_if(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        let next = self.peek() == Some(byte);
        if next {
            self.at += 1;
        }
        next
    }

    /// Whitespace, then the end of the text.
    pub(crate) fn end(&mut self) -> Option<()> {
        self.skip_whitespace();
        (self.at == self.text.len()).then_some(())
    }

    /// Whitespace, then a string without escapes (an object key): its contents.
    pub(crate) fn plain_string(&mut self) -> Option<&'a str> {
        self.skip_whitespace();
        let start = self.at + 1;
        if self.string()? {
            return None;
        }
        self.text.get(start..self.at - 1)
    }

    /// A string at the cursor; answers whether it has escapes.
    fn string(&mut self) -> Option<bool> {
        let bytes = self.text.as_bytes();
        if self.peek()? != b'"' {
            return None;
        }
        self.at += 1;
        let mut escaped = false;
        loop {
            // Eight bytes at a time while none of them is a quote, a backslash or a control character.
            while let Some(chunk) = bytes.get(self.at..self.at + 8) {
                let word = u64::from_le_bytes(chunk.try_into().ok()?);
                if special(word) {
                    break;
                }
                self.at += 8;
            }
            match *bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    match *bytes.get(self.at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        _ => return None,
                    }
                    escaped = true;
                    self.at += 2;
                }
                0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
    }

    /// Whitespace, then a value: where it starts and ends.
    pub(crate) fn value(&mut self) -> Option<(usize, usize)> {
        self.skip_whitespace();
        let start = self.at;
        match self.peek()? {
            b'{' => self.object()?,
            b'[' => self.array()?,
            b'"' => {
                self.string()?;
            }
            b't' => self.literal("true")?,
            b'f' => self.literal("false")?,
            b'n' => self.literal("null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        }
        Some((start, self.at))
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.text.get(self.at..)?.starts_with(word).then(|| self.at += word.len())
    }

    /// `-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,30})?`: what fits an `i64` or `u64` exactly, or a short decimal.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let digits = self.digits();
        let first = self.text.as_bytes().get(self.at - digits).copied();
        if digits == 0 || digits > 18 || (digits > 1 && first == Some(b'0')) {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            let fraction = self.digits();
            if fraction == 0 || fraction > 30 {
                return None;
            }
        }
        match self.peek() {
            Some(b'e' | b'E' | b'0'..=b'9') => None,
            _ => Some(()),
        }
    }

    #[inline(always)]
    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    fn nest(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then(|| self.at += 1)
    }

    fn object(&mut self) -> Option<()> {
        self.nest()?;
        if !self.eat_if(b'}') {
            loop {
                self.skip_whitespace();
                self.string()?;
                self.eat(b':')?;
                self.value()?;
                if self.eat_if(b'}') {
                    break;
                }
                self.eat(b',')?;
            }
        }
        self.depth -= 1;
        Some(())
    }

    fn array(&mut self) -> Option<()> {
        self.nest()?;
        if !self.eat_if(b']') {
            loop {
                self.value()?;
                if self.eat_if(b']') {
                    break;
                }
                self.eat(b',')?;
            }
        }
        self.depth -= 1;
        Some(())
    }
}

/// Whether one of the eight bytes of `word` is a quote, a backslash or a control character (below 0x20).
#[inline(always)]
fn special(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero exactly where `x - ONES` borrows into its high bit while `x`'s own was clear.
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    quote | backslash | control != 0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn accepts(text: &str) -> bool {
        let mut scanner = Scanner::new(text);
        scanner.value().is_some() && scanner.end().is_some()
    }

    #[test]
    fn what_it_accepts_and_refuses() {
        for good in [
            "{}",
            "[]",
            " {\"a\": [1, -2, 0, 0.5, -10.25, true, false, null, \"x\\\"\\\\\\/\\b\\f\\n\\r\\t\", {}, []]} ",
            "\"ü and ∑\"",
            "123456789012345678",
        ] {
            assert!(accepts(good), "{good}");
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "{",
            "{\"a\" 1}",
            "{\"a\": 1,}",
            "[1,]",
            "[1 2]",
            "{a: 1}",
            "\"unterminated",
            "\"tab\tinside\"",
            "\"\\x\"",
            "01",
            "-",
            "1.",
            "tru",
            "nul",
            "{} {}",
            // Refused although JSON: the caller reads these with serde_json.
            "\"\\u0041\"",
            "1e5",
            "1234567890123456789",
            &("[".repeat(101) + &"]".repeat(101)),
        ] {
            assert!(!accepts(bad), "{bad}");
        }
    }

    #[test]
    fn long_strings_are_checked_byte_for_byte() {
        let long = "abcdefghijklmnopqrstuvwxyzäöü0123456789".repeat(3);
        for at in 0..long.len() {
            if !long.is_char_boundary(at) {
                continue;
            }
            for special in ["\t", "\u{1}", "\u{1f}", "\\q"] {
                let bad = format!("\"{}{special}{}\"", &long[..at], &long[at..]);
                assert!(!accepts(&bad), "{bad:?}");
            }
            let good = format!("\"{}\\n\\\"{}\"", &long[..at], &long[at..]);
            assert!(accepts(&good), "{good:?}");
            let cut = format!("\"{}", &long[..at]);
            assert!(!accepts(&cut), "{cut:?}");
        }
    }

    proptest! {
        /// Whatever the text, what the scan accepts serde_json accepts.
        #[test]
        fn never_more_lenient_than_serde_json(text in "[ \\[\\]{}\",:.0-9a-z\\\\\\-\\t\\n]{0,40}") {
            if accepts(&text) {
                prop_assert!(serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok(), "{}", text);
            }
        }

        /// Valid JSON built from small values is accepted as serde_json accepts it.
        #[test]
        fn a_mutated_registry_is_never_accepted_when_serde_json_refuses_it(at in 0usize..2000, byte in 0u8..128) {
            let mut text = crate::registry::tests::example().to_string().into_bytes();
            let at = at % text.len();
            text[at] = byte;
            if let Ok(text) = std::str::from_utf8(&text) {
                if accepts(text) {
                    prop_assert!(serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(), "{}", text);
                }
            }
        }
    }
}
