//! How children are run and ended: the whole process group goes on stop, argv arrives verbatim (no shell),
//! and a command that cannot be started says why.

use std::time::Instant;

use serde_json::json;

use crate::support::{Env, Proc};

#[test]
fn stop_ends_the_child_and_its_grandchild() {
    let env = Env::new();
    env.start_daemon();
    let grandchild_file = env.scratch("grandchild.pid");
    // The grandchild ignores SIGTERM, so only the SIGKILL to the group after the stop timeout ends it.
    let script = format!(
        "(trap '' TERM; exec sleep 600) & echo $! > {}.tmp; mv {0}.tmp {0}; sleep 600; exit 0",
        grandchild_file.display()
    );
    let mut config = env.shell("parent", &script);
    config["autostart"] = json!(true);
    config["stopTimeoutMs"] = json!(1000);
    env.register(&config);
    let parent = env.running_pid("parent");
    let grandchild = env.wait_for("the grandchild's pid", || {
        let pid = std::fs::read_to_string(&grandchild_file).ok()?.trim().parse().ok()?;
        Some(Proc::of(pid))
    });
    env.remember(grandchild.pid);
    assert!(grandchild.running());

    let started = Instant::now();
    let out = env.ok(&["stop", "parent"]);
    assert_eq!(out.stdout.trim(), "parent: stop -> stopped", "{out:?}");
    assert!(!parent.running(), "the child survived its stop");
    assert!(!grandchild.running(), "the grandchild survived the stop of its parent ({:?})", started.elapsed());
    assert_eq!(env.copies("parent"), 0);
    let status = env.status("parent");
    assert_eq!(status["state"], "stopped", "{status:#}");
    assert!(status.get("pid").is_none(), "{status:#}");
}

#[test]
fn arguments_arrive_verbatim() {
    let env = Env::new();
    env.start_daemon();
    let work = env.scratch("work dir");
    std::fs::create_dir_all(&work).unwrap();
    let odd = ["two words", "\"double\" 'single'", "$HOME", "a;b", "*", "", "back\\slash", "--", "-n"];
    let script = "printf 'cwd=%s\\n' \"$(pwd)\"; printf 'env=%s\\n' \"$PM_IT_VAR\"; for arg; do printf '<%s>\\n' \"$arg\"; done; exit 0";
    let mut args = vec![
        "register",
        "--id",
        "echoer",
        "--command",
        "/bin/sh",
        "--max-attempts",
        "0",
        "--no-autostart",
        "--env",
        "PM_IT_VAR=x y;$z",
    ];
    let cwd = work.to_string_lossy().into_owned();
    args.extend(["--cwd", &cwd, "--", "-c", script, "sh"]);
    args.extend(odd);
    env.ok(&args);
    let stored = env.entry("echoer");
    let stored_args: Vec<&str> = stored["args"].as_array().unwrap().iter().map(|arg| arg.as_str().unwrap()).collect();
    assert_eq!(stored_args[3..], odd, "{stored:#}");

    env.ok(&["start", "echoer"]);
    let status = env.wait_state("echoer", "failed");
    assert_eq!(status["lastExitCode"], 0, "{status:#}");
    let out = env.ok(&["logs", "echoer", "-n", "100"]);
    let mut expected = vec![format!("cwd={cwd}"), "env=x y;$z".to_owned()];
    expected.extend(odd.iter().map(|arg| format!("<{arg}>")));
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), expected, "{out:?}");
}

#[test]
fn missing_executable_is_reported_on_the_entry() {
    let env = Env::new();
    env.start_daemon();
    let missing = env.scratch("no-such-dir/no-such-program");
    let missing = missing.to_string_lossy().into_owned();
    env.ok(&["register", "--id", "ghost", "--command", &missing, "--max-attempts", "0"]);
    env.ok(&["register", "--id", "nameless", "--command", "pm-it-no-such-program", "--max-attempts", "0"]);
    for (id, command) in [("ghost", missing.as_str()), ("nameless", "pm-it-no-such-program")] {
        let status = env.wait_state(id, "failed");
        let error = status["lastError"].as_str().unwrap_or_else(|| panic!("no lastError: {status:#}"));
        assert!(error.contains("not found") && error.contains(command), "{id}: {error}");
        assert!(status.get("pid").is_none(), "{status:#}");
        let entry = env.entry(id);
        assert_eq!(entry["lastError"], status["lastError"], "stored on the registry entry: {entry:#}");
        let text = env.ok(&["status", id]);
        assert!(text.stdout.contains("state:     failed"), "{text:?}");
        assert!(text.stdout.contains(&format!("error:     {error}")), "{text:?}");
    }
}
