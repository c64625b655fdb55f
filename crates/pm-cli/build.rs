//! Groups the code an idle monitor runs at the start of the release binary's `.text` (see BENCHMARKS.md, "Daemon
//! RSS ≤ 5 MiB idle").
//!
//! `daemon-hot-code.txt` lists the functions a monitor executes from its start until it idles (recorded with
//! `valgrind --tool=callgrind`, see the file's regeneration steps in BENCHMARKS.md). Handed to the linker as a
//! symbol ordering file, it puts them next to each other, so that the pages the monitor touches are few instead of
//! spread over the whole binary (the kernel maps 64 KiB around every page fault: with the hot functions scattered,
//! all of `.text` became resident). Names the file lists that a build does not have (code changed since it was
//! recorded) are skipped: the binary is the same code either way, only its layout changes.
//!
//! Only for release builds with LLD, the linker of Rust's `x86_64-unknown-linux-gnu` target since 1.90 (GNU ld has
//! no such option).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=daemon-hot-code.txt");
    let target = std::env::var("TARGET").unwrap_or_default();
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let own_linker = flags.contains("linker") || flags.contains("fuse-ld");
    if target == "x86_64-unknown-linux-gnu" && release && !own_linker && rustc_links_with_lld() {
        let file =
            std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("daemon-hot-code.txt");
        println!("cargo:rustc-link-arg-bin=process_monitor=-Wl,--symbol-ordering-file={}", file.display());
        println!("cargo:rustc-link-arg-bin=process_monitor=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether rustc is 1.90 or later (LLD by default on `x86_64-unknown-linux-gnu`).
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let Ok(out) = std::process::Command::new(rustc).arg("-vV").output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.lines().find_map(|line| line.strip_prefix("release: ")) else { return false };
    let mut parts = version.split(['.', '-']).map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
