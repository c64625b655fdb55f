//! `pow`, the one function of the C math library the programs call, from the pure-Rust `libm` crate.
//!
//! tokio's multi-thread scheduler calls `f64::powf` (the moving average of its task poll times), and that is the
//! only reference to `libm.so.6` in the binaries. Loading the shared libm for it costs the monitor about 0.5 MiB
//! of resident memory (the dynamic loader runs libm's many IFUNC resolvers at start-up, faulting in pages all over
//! its code; see BENCHMARKS.md). With `pow` defined here the linker (`--as-needed`) no longer records libm as
//! needed. The `libm` crate is the port of musl's libm that Rust's own `compiler-builtins` uses: same results to
//! within one ulp, for every input.

/// `pow(3)`.
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pow_is_the_math_function() {
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert_eq!(super::pow(0.9, 0.0), 1.0);
        assert!((super::pow(0.8, 3.5) - 0.457_946_721_791_957).abs() < 1e-15);
        assert!(super::pow(-1.0, 0.5).is_nan());
    }
}
