use super::*;
use crate::envelope::DsnRequest;
use crate::queue::record::AttemptResult;

fn config() -> Config {
    Config::from_toml("hostname = \"mta.example.org\"\n", None).unwrap()
}

fn envelope(sender: &str, rcpts: &[(&str, Option<Vec<Notify>>)]) -> Envelope {
    Envelope {
        version: ENVELOPE_VERSION,
        id: "0661C8000000000AAAAA".into(),
        sender: sender.into(),
        recipients: rcpts
            .iter()
            .map(|(a, n)| RecipientSpec {
                address: (*a).into(),
                notify: n.clone(),
                orcpt: None,
            })
            .collect(),
        arrival: 1_000_000,
        dsn: DsnRequest::default(),
        security: SecurityRecord::default(),
        smtputf8: false,
        eight_bit: false,
        submitted_by: "alice".into(),
        report: None,
    }
}

fn result(status: &str) -> AttemptResult {
    AttemptResult {
        at: 1_000_100,
        host: Some("mx.example.net".into()),
        ip: Some("192.0.2.1".into()),
        tls: None,
        reply: Some(format!("{} x", &status[..1])),
        status: status.into(),
        detail: "refused".into(),
        protection: None,
        remote_dsn: false,
    }
}

const MESSAGE: &[u8] = b"Subject: s\r\n\r\nbody\r\n";

fn set(entry: &mut QueueEntry, i: usize, status: RecipientStatus, code: &str) {
    entry.recipients[i].status = status;
    entry.recipients[i].last = Some(result(code));
}

fn pending(n: usize) -> Vec<RecipientStatus> {
    vec![RecipientStatus::Pending; n]
}

#[test]
fn a_new_failure_is_reported_to_the_sender_from_the_null_sender_rfc3461_section_6() {
    let mut entry = QueueEntry::new(
        envelope(
            "alice@example.org",
            &[("bob@example.net", None), ("carol@example.net", None)],
        ),
        10,
    );
    set(&mut entry, 0, RecipientStatus::Failed, "5.1.1");
    let reports = due(&config(), &mut entry, &pending(2), MESSAGE, 1_000_200);
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.envelope.sender, "");
    assert_eq!(r.envelope.recipients[0].address, "alice@example.org");
    assert_eq!(r.envelope.recipients[0].notify, Some(vec![Notify::Never]));
    assert_eq!(r.envelope.report, Some(ReportKind::ToSender));
    let text = String::from_utf8_lossy(&r.message);
    assert!(text.contains("Final-Recipient: rfc822; bob@example.net"));
    assert!(!text.contains("carol@"), "only the failed recipient");
    // Failed before this attempt: not reported again.
    let again = due(
        &config(),
        &mut entry,
        &[RecipientStatus::Failed, RecipientStatus::Pending],
        MESSAGE,
        1_000_300,
    );
    assert!(again.is_empty());
}

#[test]
fn notify_never_and_notify_without_failure_silence_failure_reports_rfc3461_section_4_1() {
    for notify in [vec![Notify::Never], vec![Notify::Success, Notify::Delay]] {
        let mut entry = QueueEntry::new(
            envelope("alice@example.org", &[("bob@example.net", Some(notify))]),
            10,
        );
        set(&mut entry, 0, RecipientStatus::Failed, "5.1.1");
        assert!(due(&config(), &mut entry, &pending(1), MESSAGE, 1_000_200).is_empty());
    }
}

#[test]
fn no_report_about_a_null_sender_message_unless_it_is_our_own_report_rfc5321_section_6_1() {
    let mut entry = QueueEntry::new(envelope("", &[("bob@example.net", None)]), 10);
    set(&mut entry, 0, RecipientStatus::Failed, "5.1.1");
    assert!(due(&config(), &mut entry, &pending(1), MESSAGE, 1_000_200).is_empty());
    // A report we made that failed goes to the postmaster, once.
    let mut env = envelope("", &[("alice@example.org", Some(vec![Notify::Never]))]);
    env.report = Some(ReportKind::ToSender);
    let mut entry = QueueEntry::new(env, 10);
    set(&mut entry, 0, RecipientStatus::Failed, "5.1.1");
    let reports = due(&config(), &mut entry, &pending(1), MESSAGE, 1_000_200);
    assert_eq!(
        reports.len(),
        1,
        "NOTIFY=NEVER on a report does not stop this"
    );
    assert_eq!(
        reports[0].envelope.recipients[0].address,
        "postmaster@mta.example.org"
    );
    assert_eq!(reports[0].envelope.report, Some(ReportKind::ToPostmaster));
    let mut env = reports[0].envelope.clone();
    env.report = Some(ReportKind::ToPostmaster);
    let mut entry = QueueEntry::new(env, 10);
    set(&mut entry, 0, RecipientStatus::Failed, "5.1.1");
    assert!(due(&config(), &mut entry, &pending(1), MESSAGE, 1_000_200).is_empty());
}

#[test]
fn one_delay_warning_after_delay_warning_time_rfc3464_section_2_3_3() {
    let mut entry = QueueEntry::new(
        envelope("alice@example.org", &[("bob@example.net", None)]),
        10,
    );
    set(&mut entry, 0, RecipientStatus::Pending, "4.4.1");
    let early = 1_000_000 + 3600;
    assert!(due(&config(), &mut entry, &pending(1), MESSAGE, early).is_empty());
    let late = 1_000_000 + 4 * 3600;
    let reports = due(&config(), &mut entry, &pending(1), MESSAGE, late);
    assert_eq!(reports.len(), 1);
    assert!(String::from_utf8_lossy(&reports[0].message).contains("Action: delayed"));
    assert!(entry.delay_warned);
    assert!(due(&config(), &mut entry, &pending(1), MESSAGE, late + 3600).is_empty());
}

#[test]
fn success_is_reported_only_when_asked_and_the_server_took_no_dsn_rfc3461_section_5_2_2() {
    let success = Some(vec![Notify::Success]);
    let mut entry = QueueEntry::new(
        envelope("alice@example.org", &[("bob@example.net", success.clone())]),
        10,
    );
    set(&mut entry, 0, RecipientStatus::Delivered, "2.0.0");
    let reports = due(&config(), &mut entry, &pending(1), MESSAGE, 1_000_200);
    assert_eq!(reports.len(), 1);
    assert!(String::from_utf8_lossy(&reports[0].message).contains("Action: relayed"));
    entry.recipients[0].last.as_mut().unwrap().remote_dsn = true;
    assert!(due(&config(), &mut entry, &pending(1), MESSAGE, 1_000_200).is_empty());
    let mut plain = QueueEntry::new(
        envelope("alice@example.org", &[("bob@example.net", None)]),
        10,
    );
    set(&mut plain, 0, RecipientStatus::Delivered, "2.0.0");
    assert!(due(&config(), &mut plain, &pending(1), MESSAGE, 1_000_200).is_empty());
}

#[test]
fn requiretls_reports_return_headers_only_and_drop_the_tag_rfc8689_section_5() {
    let mut env = envelope("alice@example.org", &[("bob@example.net", None)]);
    env.security.requiretls = true;
    env.dsn.ret = Some(Ret::Full);
    let mut entry = QueueEntry::new(env, 10);
    set(&mut entry, 0, RecipientStatus::Failed, "5.7.30");
    let reports = due(&config(), &mut entry, &pending(1), MESSAGE, 1_000_200);
    let text = String::from_utf8_lossy(&reports[0].message);
    assert!(text.contains("text/rfc822-headers"), "{text}");
    assert!(!text.contains("\r\nbody\r\n"), "{text}");
    assert!(!reports[0].envelope.security.requiretls);
}

#[test]
fn reports_have_the_shorter_bounce_queue_lifetime_rfc5321_section_4_5_4_1() {
    let cfg = Config::from_toml(
        "max_queue_lifetime = \"5d\"\nbounce_queue_lifetime = \"1d\"\n",
        None,
    )
    .unwrap();
    let normal = envelope("alice@example.org", &[("bob@example.net", None)]);
    let report = envelope("", &[("alice@example.org", None)]);
    assert_eq!(lifetime(&cfg, &normal), 5 * 86400);
    assert_eq!(lifetime(&cfg, &report), 86400);
}
