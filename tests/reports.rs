//! Delivery status notifications end to end (RFC 3461, RFC 3464, RFC 6522):
//! a queue run that fails, delays or gives up on a recipient queues a
//! report from the null sender to the envelope sender, and delivers it in
//! the same run.

mod support;

use std::time::Duration;

use support::world::{zone, World, MX1, MX3};
use support::ReceivedMessage;

const WAIT: Duration = Duration::from_secs(10);

const MESSAGE: &str = "From: bob@example.org\nSubject: quarterly figures\n\nthe body\n";

/// The report that reached bob's MX.
fn report_at(mx: &support::FakeMx) -> ReceivedMessage {
    let got = mx.wait_for_messages(1, WAIT);
    let report = got
        .iter()
        .find(|m| m.mail_from.is_empty())
        .unwrap_or_else(|| panic!("no report from <> among {} messages", got.len()))
        .clone();
    assert_eq!(report.rcpt_addrs(), ["bob@example.org"]);
    report
}

#[test]
fn permanent_failure_sends_a_failure_report_from_the_null_sender_rfc3464_section_2() {
    let world = World::new(zone(), "");
    let sender_mx = world.mx(MX1, "mx1.example.org").start();
    let rcpt_mx = world
        .mx(MX3, "mx3.example.org")
        .rcpt_reply("carol@other.example.org", 550, "5.1.1 no such user")
        .start();
    world.send(
        &["-f", "bob@example.org", "carol@other.example.org"],
        MESSAGE,
    );
    world.queue_run(&[]);
    assert_eq!(rcpt_mx.messages().len(), 0);
    let report = report_at(&sender_mx);
    let text = report.data_str();
    assert!(
        text.contains("multipart/report; report-type=delivery-status"),
        "{text}"
    );
    for line in [
        "Final-Recipient: rfc822; carol@other.example.org",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mx3.example.org",
        "Diagnostic-Code: smtp; 550 5.1.1 no such user",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(text.contains("the body"), "a failure returns the message");
    assert!(
        report.rcpts[0].1.iter().all(|p| !p.starts_with("NOTIFY=")) || {
            report.rcpts[0].1.iter().any(|p| p == "NOTIFY=NEVER")
        },
        "a report asks for no reports: {:?}",
        report.rcpts
    );
}

#[test]
fn notify_never_sends_no_report_rfc3461_section_4_1() {
    let world = World::new(zone(), "");
    let sender_mx = world.mx(MX1, "mx1.example.org").start();
    let _rcpt_mx = world
        .mx(MX3, "mx3.example.org")
        .rcpt_reply("carol@other.example.org", 550, "5.1.1 no such user")
        .start();
    world.send(
        &[
            "-f",
            "bob@example.org",
            "-N",
            "never",
            "carol@other.example.org",
        ],
        MESSAGE,
    );
    world.queue_run(&[]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sender_mx.sessions(), 0, "nothing sent to the sender");
}

#[test]
fn ret_hdrs_returns_only_the_header_rfc3461_section_4_3() {
    let world = World::new(zone(), "");
    let sender_mx = world.mx(MX1, "mx1.example.org").start();
    let _rcpt_mx = world
        .mx(MX3, "mx3.example.org")
        .rcpt_reply("carol@other.example.org", 550, "5.1.1 no such user")
        .start();
    world.send(
        &[
            "-f",
            "bob@example.org",
            "-R",
            "hdrs",
            "carol@other.example.org",
        ],
        MESSAGE,
    );
    world.queue_run(&[]);
    let text = report_at(&sender_mx).data_str();
    assert!(text.contains("text/rfc822-headers"), "{text}");
    assert!(text.contains("Subject: quarterly figures"), "{text}");
    assert!(!text.contains("the body"), "{text}");
}

#[test]
fn giving_up_after_max_queue_lifetime_fails_with_5_4_7_and_reports_rfc5321_section_4_5_4_1() {
    let world = World::new(zone(), "max_queue_lifetime = 0");
    let sender_mx = world.mx(MX1, "mx1.example.org").start();
    // Nothing listens for other.example.org: the attempt is deferred, and
    // the lifetime is already over.
    world.send(
        &["-f", "bob@example.org", "carol@other.example.org"],
        MESSAGE,
    );
    world.queue_run(&[]);
    let text = report_at(&sender_mx).data_str();
    assert!(text.contains("Action: failed"), "{text}");
    assert!(text.contains("Status: 5.4.7"), "{text}");
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn one_delay_warning_after_delay_warning_time_rfc3464_section_2_3_3() {
    let world = World::new(zone(), "delay_warning_time = \"1s\"");
    let sender_mx = world.mx(MX1, "mx1.example.org").start();
    let _rcpt_mx = world
        .mx(MX3, "mx3.example.org")
        .rcpt_reply("carol@other.example.org", 451, "4.3.0 try later")
        .start();
    world.send(
        &["-f", "bob@example.org", "carol@other.example.org"],
        MESSAGE,
    );
    std::thread::sleep(Duration::from_millis(1100));
    world.queue_run(&[]);
    let text = report_at(&sender_mx).data_str();
    assert!(text.contains("Action: delayed"), "{text}");
    assert!(text.contains("Will-Retry-Until:"), "{text}");
    assert!(
        !text.contains("the body"),
        "a delay returns the header only"
    );
    // Once only.
    world.queue_run(&["--all"]);
    std::thread::sleep(Duration::from_millis(300));
    let reports = sender_mx
        .messages()
        .iter()
        .filter(|m| m.mail_from.is_empty())
        .count();
    assert_eq!(reports, 1);
}

#[test]
fn notify_success_to_a_server_without_dsn_reports_relayed_rfc3461_section_5_2_2() {
    let world = World::new(zone(), "");
    let sender_mx = world.mx(MX1, "mx1.example.org").start();
    // A server without DSN cannot take the request on.
    let _rcpt_mx = world
        .mx(MX3, "mx3.example.org")
        .extensions(&["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"])
        .start();
    world.send(
        &[
            "-f",
            "bob@example.org",
            "-N",
            "success",
            "carol@other.example.org",
        ],
        MESSAGE,
    );
    world.queue_run(&[]);
    let text = report_at(&sender_mx).data_str();
    assert!(text.contains("Action: relayed"), "{text}");
    assert!(text.contains("X-Smarthost-Protection: TLSv1.3"), "{text}");
}

#[test]
fn notify_success_to_a_dsn_server_is_passed_on_and_not_reported_here_rfc3461_section_5_2_1() {
    let world = World::new(zone(), "");
    let sender_mx = world.mx(MX1, "mx1.example.org").start();
    let rcpt_mx = world.mx(MX3, "mx3.example.org").start();
    world.send(
        &[
            "-f",
            "bob@example.org",
            "-N",
            "success",
            "carol@other.example.org",
        ],
        MESSAGE,
    );
    world.queue_run(&[]);
    let got = rcpt_mx.wait_for_messages(1, WAIT);
    assert!(
        got[0].rcpts[0].1.iter().any(|p| p == "NOTIFY=SUCCESS"),
        "{:?}",
        got[0].rcpts
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sender_mx.sessions(), 0);
}

#[test]
fn a_report_that_cannot_be_delivered_goes_to_the_postmaster_once() {
    let world = World::new(zone(), "postmaster = \"admin@single.example.org\"");
    // The sender's domain refuses the report; the postmaster's MX is mx1.
    let postmaster_mx = world
        .mx(MX1, "mx1.example.org")
        .rcpt_reply("bob@example.org", 550, "5.1.1 gone")
        .start();
    let _rcpt_mx = world
        .mx(MX3, "mx3.example.org")
        .rcpt_reply("carol@other.example.org", 550, "5.1.1 no such user")
        .start();
    world.send(
        &["-f", "bob@example.org", "carol@other.example.org"],
        MESSAGE,
    );
    world.queue_run(&[]);
    let got = postmaster_mx.wait_for_messages(1, WAIT);
    assert_eq!(got[0].rcpt_addrs(), ["admin@single.example.org"]);
    assert!(got[0].mail_from.is_empty());
    assert!(got[0]
        .data_str()
        .contains("Final-Recipient: rfc822; bob@example.org"));
    assert!(world.mailq().contains("Mail queue is empty"), "no loop");
}
