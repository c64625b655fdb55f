//! A small seeded random generator (SplitMix64) so that every chaos and fuzz run can be replayed from its seed.

/// SplitMix64: fast, good enough for test schedules and inputs, and fully determined by its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with `percent` % probability.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A generator for a sub-task, decorrelated from this one.
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64() ^ 0x5851_f42d_4c95_7f2d)
    }
}

/// The seed in the variable `var` (decimal or `0x` hex), else one taken from the clock and the PID; the caller
/// prints it so that a failing run can be replayed.
pub fn seed_from_env(var: &str) -> u64 {
    if let Ok(text) = std::env::var(var) {
        let text = text.trim();
        let parsed = match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => text.parse().ok(),
        };
        if let Some(seed) = parsed {
            return seed;
        }
        eprintln!("ignoring {var}={text:?}: not a number");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
}

/// A count from the variable `var`, else `default`.
pub fn count_from_env(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            eprintln!("ignoring {var}={text:?}: not a count; using {default}");
            default
        }),
        Err(_) => default,
    }
}
