//! Queue administration: `queue show`, `list --json`, `delete`, `bounce`,
//! `hold`, `release` and `retry`, against fake MX hosts.

mod support;

use std::time::Duration;

use support::world::{zone, World, MX1, MX3};

const WAIT: Duration = Duration::from_secs(10);

const MESSAGE: &str = "From: bob@example.org\nSubject: admin test\n\nbody\n";

/// Queues one message from bob@example.org to carol@other.example.org and
/// returns its id.
fn queued(world: &World) -> String {
    world.send(
        &["-f", "bob@example.org", "carol@other.example.org"],
        MESSAGE,
    );
    let out = world.env.run(&["queue", "list", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("list --json is JSON");
    v["waiting"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("one waiting message in {v}"))
        .to_owned()
}

fn admin(world: &World, args: &[&str]) -> support::Output {
    let mut all = vec!["queue"];
    all.extend_from_slice(args);
    world.env.run(&all)
}

#[test]
fn hold_keeps_a_message_from_delivery_until_release() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX3, "mx3.example.org").start();
    let id = queued(&world);
    let out = admin(&world, &["hold", &id]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("administrator action"),
        "logged: {}",
        out.stderr
    );
    world.queue_run(&["--all"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(mx.sessions(), 0, "a held message is not attempted");
    let show = admin(&world, &["show", &id]);
    assert!(show.stdout.contains("(on hold)"), "{}", show.stdout);
    assert!(world.mailq().contains("(on hold)"), "mailq shows the hold");
    assert_eq!(admin(&world, &["release", &id]).status, 0);
    world.queue_run(&[]);
    assert_eq!(mx.wait_for_messages(1, WAIT).len(), 1);
}

#[test]
fn delete_removes_a_message_without_a_report() {
    let world = World::new(zone(), "");
    let sender_mx = world.mx(MX1, "mx1.example.org").start();
    let id = queued(&world);
    let out = admin(&world, &["delete", &id]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(world.mailq().contains("Mail queue is empty"));
    world.queue_run(&["--all"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sender_mx.sessions(), 0, "no report");
    let out = admin(&world, &["delete", &id]);
    assert_eq!(out.status, 65, "a second delete names a missing id");
}

#[test]
fn bounce_fails_the_message_and_reports_to_the_sender() {
    let world = World::new(zone(), "");
    let sender_mx = world.mx(MX1, "mx1.example.org").start();
    let id = queued(&world);
    let out = admin(&world, &["bounce", &id]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    world.queue_run(&[]);
    let got = sender_mx.wait_for_messages(1, WAIT);
    assert!(got[0].mail_from.is_empty());
    let text = got[0].data_str();
    assert!(
        text.contains("Final-Recipient: rfc822; carol@other.example.org"),
        "{text}"
    );
    assert!(text.contains("Action: failed"), "{text}");
    let show = admin(&world, &["show", "--json", &id]);
    assert!(show.stdout.contains("\"failed\""), "{}", show.stdout);
}

#[test]
fn retry_delivers_a_deferred_message_now() {
    let world = World::new(zone(), "");
    let mx = world
        .mx(MX3, "mx3.example.org")
        .fail_first_n_sessions(1, 451, "4.3.0 try later")
        .start();
    let id = queued(&world);
    world.queue_run(&[]);
    assert!(world.mailq().contains(&id), "deferred after the 451");
    // Not due for minutes; retry delivers at once.
    let out = admin(&world, &["retry", &id]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(mx.wait_for_messages(1, WAIT).len(), 1);
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn show_prints_the_envelope_recipients_protection_and_header() {
    let world = World::new(zone(), "");
    let _mx = world
        .mx(MX3, "mx3.example.org")
        .fail_first_n_sessions(1, 451, "4.3.0 try later")
        .start();
    let id = queued(&world);
    world.queue_run(&[]);
    let out = admin(&world, &["show", &id]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    for part in [
        &format!("queue id:     {id}"),
        "sender:       <bob@example.org>",
        "pending    carol@other.example.org",
        "451",
        "Subject: admin test",
    ] {
        assert!(out.stdout.contains(part), "{part} in {}", out.stdout);
    }
    let json = admin(&world, &["show", "--json", &id]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["envelope"]["id"], id.as_str());
    assert_eq!(v["state"], "queued");
}

#[test]
fn listing_into_a_closed_pipe_exits_quietly() {
    let world = World::new(zone(), "");
    for _ in 0..50 {
        world.send(
            &["-f", "bob@example.org", "carol@other.example.org"],
            MESSAGE,
        );
    }
    for args in [
        &["queue", "list", "--json"][..],
        &["queue", "list"][..],
        &["mailq"][..],
    ] {
        let mut child = world
            .env
            .cmd(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away at once, as `| head -1` would.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}
