//! Crash safety: the process is stopped at named points of submission and
//! delivery (the `SMARTHOST_TEST_CRASH_AT` hook, which aborts), and at random
//! moments of a queue run (SIGKILL). Whatever the moment, a message whose
//! `sendmail` exited 0 is delivered, and a second copy appears only when
//! the crash came between the server's 250 and the queue update.

mod support;

use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use support::env::run_command;
use support::world::{zone, World, MX1};
use support::{FakeMx, Output};

/// Exit status of a process stopped by SIGABRT (128 + 6).
const ABORTED: i32 = 134;

fn message(tag: &str) -> String {
    format!("From: alice@example.net\nTo: bob@example.org\nSubject: {tag}\n\nbody of {tag}\n")
}

fn copies(mx: &FakeMx, tag: &str) -> usize {
    let subject = format!("Subject: {tag}\r\n");
    mx.messages()
        .iter()
        .filter(|m| m.data_str().contains(&subject))
        .count()
}

fn with_crash_at(world: &World, point: &str, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = world.env.cmd(args);
    cmd.env("SMARTHOST_TEST_CRASH_AT", point);
    run_command(cmd, input)
}

fn assert_queue_empty(world: &World) {
    let listing = world.mailq();
    assert!(listing.contains("Mail queue is empty"), "{listing}");
}

#[test]
fn a_submission_killed_before_exit_0_leaves_at_most_one_copy() {
    let world = World::new(zone(), "");
    let mx = world.plain_mx(MX1, "mx1.example.org").start();
    for point in ["maildrop-written", "maildrop-synced", "maildrop-renamed"] {
        let out = with_crash_at(
            &world,
            point,
            &["sendmail", "-t"],
            message(point).as_bytes(),
        );
        assert_eq!(out.status, ABORTED, "{point}: {}", out.stderr);
        world.queue_run(&[]);
        let n = copies(&mx, point);
        assert!(n <= 1, "{point}: {n} copies of a message never accepted");
        assert_queue_empty(&world);
    }
    // After the rename the file is the message; pickup delivers it.
    assert_eq!(copies(&mx, "maildrop-renamed"), 1);
    // The control: an accepted message is delivered exactly once.
    world.send(&["-t"], &message("control"));
    world.queue_run(&[]);
    assert_eq!(copies(&mx, "control"), 1);
}

#[test]
fn a_partial_submission_is_reported_by_queue_check_and_never_delivered() {
    let world = World::new(zone(), "");
    let out = with_crash_at(
        &world,
        "maildrop-synced",
        &["sendmail", "-t"],
        message("partial").as_bytes(),
    );
    assert_eq!(out.status, ABORTED, "{}", out.stderr);
    let maildrop = world.env.queue_dir.join("maildrop");
    let temporaries: Vec<_> = std::fs::read_dir(&maildrop)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(temporaries.len(), 1, "{temporaries:?}");
    // A fresh temporary may belong to a submission in progress.
    assert_eq!(world.env.run(&["queue", "check"]).status, 0);
    let hour_ago = std::process::Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(&temporaries[0])
        .status()
        .unwrap();
    assert!(hour_ago.success());
    let out = world.env.run(&["queue", "check"]);
    assert_eq!(out.status, 65, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("did not finish") && out.stdout.contains(".tmp."),
        "{}",
        out.stdout
    );
    assert_queue_empty(&world);
}

#[test]
fn an_accepted_message_survives_a_crash_at_every_point_of_delivery() {
    let world = World::new(zone(), "");
    let mx = world.plain_mx(MX1, "mx1.example.org").start();
    for point in ["pickup-renamed", "pickup-stored", "data-accepted", "saved"] {
        world.send(&["-t"], &message(point));
        let out = with_crash_at(&world, point, &["queue", "run"], b"");
        assert_eq!(out.status, ABORTED, "{point}: {}", out.stderr);
        world.queue_run(&[]);
        let n = copies(&mx, point);
        if point == "data-accepted" {
            // The server has the message but the queue does not know: the
            // one window where a second copy is expected.
            assert!((1..=2).contains(&n), "{point}: {n} copies");
        } else {
            assert_eq!(n, 1, "{point}: {n} copies");
        }
        assert_queue_empty(&world);
        let out = world.env.run(&["queue", "check"]);
        assert_eq!(out.status, 0, "{point}: {}{}", out.stdout, out.stderr);
    }
}

#[test]
fn queue_runs_killed_at_random_times_lose_no_message() {
    const MESSAGES: usize = 50;
    let world = World::new(zone(), "");
    let mx = world
        .plain_mx(MX1, "mx1.example.org")
        .delay_data_reply(Duration::from_millis(300))
        .start();
    for i in 0..MESSAGES {
        world.send(&["-t"], &message(&format!("random-{i}")));
    }
    let seed = fastrand::u64(..);
    eprintln!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..10 {
        let mut child = world
            .env
            .cmd(&["queue", "run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn queue run");
        let deadline = Instant::now() + Duration::from_millis(rng.u64(20..500));
        while Instant::now() < deadline {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        // SIGKILL, or nothing when the run has already finished.
        let _ = child.kill();
        let status = child.wait().expect("reap queue run");
        eprintln!(
            "round {round}: {status:?}, {} received",
            mx.messages().len()
        );
    }
    world.queue_run(&[]);
    let missing: Vec<usize> = (0..MESSAGES)
        .filter(|i| copies(&mx, &format!("random-{i}")) == 0)
        .collect();
    assert!(missing.is_empty(), "seed {seed}: lost {missing:?}");
    assert_queue_empty(&world);
    let out = world.env.run(&["queue", "check"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
}
