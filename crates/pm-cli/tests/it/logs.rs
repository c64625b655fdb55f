//! `logs`: the last lines of the newest run, stderr, following a process into the run folders of its
//! restarts, and which run counts as the newest.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{line_reader, Env, Guarded, DEADLINE};

#[test]
fn logs_show_the_last_lines() {
    let env = Env::new();
    env.start_daemon();
    let script = "i=1; while [ $i -le 30 ]; do echo \"out $i\"; i=$((i+1)); done; echo 'err 1' >&2; echo 'err 2' >&2; \
                  echo 'err 3' >&2; sleep 600; exit 0";
    let mut config = env.shell("talker", script);
    config["autostart"] = json!(true);
    env.register(&config);
    env.running_pid("talker");
    env.wait_for("the output", || env.ok(&["logs", "talker", "--stderr"]).stdout.contains("err 3").then_some(()));

    let out = env.ok(&["logs", "talker", "-n", "5"]);
    assert_eq!(out.stdout, "out 26\nout 27\nout 28\nout 29\nout 30\n");
    let out = env.ok(&["logs", "talker"]);
    let expected: Vec<String> = (11..=30).map(|i| format!("out {i}")).collect();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), expected, "20 lines by default");
    let out = env.ok(&["logs", "talker", "--lines", "100"]);
    assert_eq!(out.stdout.lines().count(), 30);
    let out = env.ok(&["logs", "talker", "--stderr", "-n", "2"]);
    assert_eq!(out.stdout, "err 2\nerr 3\n");

    let out = env.run(&["logs", "never-registered"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("never-registered"), "{out:?}");
}

#[test]
fn logs_follow_into_the_next_run() {
    let env = Env::new();
    env.start_daemon();
    let counter = env.scratch("runs");
    let script = format!(
        "n=$(( $(cat {c} 2>/dev/null || echo 0) + 1 )); echo $n > {c}; echo \"run$n line1\"; echo \"run$n line2\"; \
         sleep 0.3; echo \"run$n line3\"; exit 1",
        c = counter.display()
    );
    let mut config = env.shell("printer", &script);
    config["autostart"] = json!(true);
    config["restartPolicy"] = json!({"maxAttempts": 1000, "backoffIntervalsMs": [200]});
    env.register(&config);
    env.wait_for("the first run's output", || env.run(&["logs", "printer"]).stdout.contains("line1").then_some(()));

    let mut command = env.command(&["logs", "printer", "-f", "-n", "100"]);
    command.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut follower = Guarded(command.spawn().unwrap());
    env.remember(follower.0.id());
    let lines = line_reader(follower.0.stdout.take().unwrap());
    let started = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    let successive = loop {
        let left = DEADLINE.saturating_sub(started.elapsed());
        match lines.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(line) => seen.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(err) => panic!("logs -f ended ({err}); it printed {seen:?}"),
        }
        let run_of = |line: &String| line.strip_prefix("run")?.split_once(' ')?.0.parse::<u32>().ok();
        let runs: Vec<u32> = seen.iter().filter_map(run_of).collect();
        if let Some(pair) = runs.windows(2).find(|pair| pair[1] == pair[0] + 1) {
            break (pair[0], pair[1]);
        }
        assert!(started.elapsed() < DEADLINE, "logs -f saw no two successive runs: {seen:?}");
    };
    let (first, second) = successive;
    // The old run was printed to its end before the new one began.
    let end_of_first = seen.iter().position(|line| *line == format!("run{first} line3"));
    let start_of_second = seen.iter().position(|line| *line == format!("run{second} line1"));
    assert!(matches!((end_of_first, start_of_second), (Some(end), Some(start)) if end < start), "{seen:?}");
    assert!(follower.0.try_wait().unwrap().is_none(), "logs -f exited by itself");
}

#[test]
fn logs_pick_the_newest_run_and_keep_the_newest_ten() {
    let env = Env::new();
    env.start_daemon();
    let counter = env.scratch("runs");
    // Many runs within the same second: their folders are named `{stamp}`, `{stamp}_2`, ... `{stamp}_13`.
    let script = format!(
        "n=$(( $(cat {c} 2>/dev/null || echo 0) + 1 )); echo $n > {c}; echo \"run $n\"; exit 1",
        c = counter.display()
    );
    let mut config = env.shell("flapper", &script);
    config["autostart"] = json!(true);
    config["restartPolicy"] = json!({"maxAttempts": 12, "backoffIntervalsMs": [0]});
    env.register(&config);
    env.wait_state("flapper", "failed");
    let runs: u32 = std::fs::read_to_string(&counter).unwrap().trim().parse().unwrap();
    assert_eq!(runs, 13);

    let mut kept: Vec<u32> = std::fs::read_dir(env.dir.join("default_logs").join("flapper"))
        .unwrap()
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.path().join("stdout.log")).unwrap())
        .map(|text| text.trim().strip_prefix("run ").unwrap().parse().unwrap())
        .collect();
    kept.sort();
    let out = env.ok(&["logs", "flapper", "-n", "1"]);
    assert_eq!(
        (kept, out.stdout.as_str()),
        ((4..=13).collect::<Vec<_>>(), "run 13\n"),
        "the newest ten runs are kept, and `logs` shows the newest"
    );
}
