use super::*;
use crate::submission::args::parse_sendmail_args;

fn ctx() -> SubmitContext {
    SubmitContext {
        domain: "host.example.net".into(),
        hostname: "mx.example.net".into(),
        aliases: BTreeMap::new(),
        real_user: "alice".into(),
        gecos_name: Some("Alice Liddell".into()),
        env_name: None,
        now: chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00+01:00").unwrap(),
        queue_id: "QID1".into(),
    }
}

fn run(words: &[&str], input: &str, ctx: &SubmitContext) -> Result<PreparedMessage, SubmitError> {
    let words: Vec<std::ffi::OsString> = words.iter().map(Into::into).collect();
    let args = parse_sendmail_args(&words).unwrap();
    let raw = read_message(&mut input.as_bytes(), args.ignore_dots, 1 << 20).unwrap();
    prepare(&args, raw, ctx)
}

fn text(p: &PreparedMessage) -> String {
    String::from_utf8(p.message.clone()).unwrap()
}

#[test]
fn bcc_is_removed_and_its_recipients_kept_with_t() {
    let p = run(
        &["-t", "-i"],
        "To: a@x.org\nBcc: hidden@y.org,\n  also@y.org\nReturn-Path: <old@x>\nContent-Length: 12\nSubject: s\n\nbody\n",
        &ctx(),
    )
    .unwrap();
    assert_eq!(p.recipients, ["a@x.org", "hidden@y.org", "also@y.org"]);
    let t = text(&p);
    for gone in ["Bcc", "hidden", "also@", "Return-Path", "Content-Length"] {
        assert!(!t.contains(gone), "{gone} left in {t}");
    }
}

#[test]
fn bcc_is_removed_without_t_too() {
    let p = run(
        &["-i", "a@x.org"],
        "To: a@x.org\nBcc: b@y.org\n\nbody\n",
        &ctx(),
    )
    .unwrap();
    assert_eq!(p.recipients, ["a@x.org"]);
    assert!(!text(&p).contains("b@y.org"));
}

#[test]
fn t_with_arguments_is_the_union_without_duplicates() {
    let p = run(
        &["-t", "a@x.org", "C <c@Z.org>"],
        "To: A@x.org, a@X.ORG\nCc: c@z.org, d@z.org\n\n",
        &ctx(),
    )
    .unwrap();
    assert_eq!(p.recipients, ["a@x.org", "c@z.org", "A@x.org", "d@z.org"]);
}

#[test]
fn resent_block_replaces_to_and_cc_rfc5322_section_3_6_6() {
    let p = run(
        &["-t"],
        "Resent-To: new@x.org\nResent-Bcc: blind@x.org\nResent-Date: Thu, 3 Dec 2026 10:00:00 +0000\nResent-To: other@x.org\nResent-To: old-block@x.org\nX: y\nResent-To: oldest@x.org\nTo: original@x.org\n\n",
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        p.recipients,
        ["new@x.org", "blind@x.org", "other@x.org", "old-block@x.org"]
    );
    assert!(!text(&p).contains("blind"));
}

#[test]
fn groups_and_comma_lists_on_the_command_line() {
    let p = run(
        &["-t", "a@x.org,b@y.org", "Name <c@z.org>"],
        "To: undisclosed-recipients:;\n\n",
        &ctx(),
    )
    .unwrap();
    assert_eq!(p.recipients, ["a@x.org", "b@y.org", "c@z.org"]);
}

#[test]
fn internationalised_domains_become_a_labels_and_utf8_local_parts_need_smtputf8() {
    let p = run(&["user@bücher.example"], "\n", &ctx()).unwrap();
    assert_eq!(p.recipients, ["user@xn--bcher-kva.example"]);
    assert!(!p.smtputf8);
    let p = run(&["jörg@example.org"], "\n", &ctx()).unwrap();
    assert!(p.smtputf8);
}

#[test]
fn an_invalid_address_fails_naming_it() {
    let e = run(&["-t"], "To: good@x.org, bad@@x.org\n\n", &ctx()).unwrap_err();
    assert_eq!(e.exit_code(), exitcode::DATAERR);
    let msg = e.to_string();
    assert!(
        msg.contains("To: header") && msg.contains("bad@@x.org"),
        "{msg}"
    );
    let e = run(&["john doe@x.org"], "\n", &ctx()).unwrap_err();
    assert!(e.to_string().contains("john doe@x.org"));
    let e = run(&["-f", "a@b@c", "x@y.org"], "\n", &ctx()).unwrap_err();
    assert!(e.to_string().contains("-f"));
}

#[test]
fn no_recipients_is_a_usage_error() {
    let e = run(&[], "To: a@x.org\n\n", &ctx()).unwrap_err();
    assert_eq!(e.exit_code(), exitcode::USAGE);
    let e = run(&["-t"], "To: undisclosed-recipients:;\n\n", &ctx()).unwrap_err();
    assert_eq!(e.exit_code(), exitcode::USAGE);
}

#[test]
fn missing_date_message_id_and_from_are_added() {
    let p = run(&["a@x.org"], "Subject: s\n\nbody\n", &ctx()).unwrap();
    let t = text(&p);
    assert!(
        t.contains("\r\nFrom: \"Alice Liddell\" <alice@host.example.net>\r\n"),
        "{t}"
    );
    assert!(
        t.contains("\r\nDate: Fri, 4 Dec 2026 10:00:00 +0100\r\n"),
        "{t}"
    );
    assert!(t.contains("\r\nMessage-ID: <QID1."), "{t}");
    assert!(t.ends_with("\r\n\r\nbody\r\n"));
    assert_eq!(p.sender, "alice@host.example.net");
}

#[test]
fn existing_date_message_id_and_from_are_kept() {
    let input = "From: Bob <bob@x.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-Id: <m@x.org>\n\nbody\n";
    let p = run(&["a@x.org"], input, &ctx()).unwrap();
    assert_eq!(text(&p), input.replace('\n', "\r\n"));
}

#[test]
fn full_name_from_f_then_name_then_gecos() {
    let mut c = ctx();
    c.env_name = Some("Env Name".into());
    let p = run(&["-F", "Cron Daemon", "a@x.org"], "\n", &c).unwrap();
    assert!(text(&p).contains("From: \"Cron Daemon\" <alice@host.example.net>"));
    let p = run(&["a@x.org"], "\n", &c).unwrap();
    assert!(text(&p).contains("From: \"Env Name\" <alice@host.example.net>"));
    let p = run(&["-F", "Jürgen Müller", "a@x.org"], "\n", &c).unwrap();
    let t = text(&p);
    assert!(t.contains("From: =?utf-8?"), "{t}");
    assert!(t.is_ascii());
}

#[test]
fn sender_forms() {
    let p = run(&["-f", "<>", "a@x.org"], "\n", &ctx()).unwrap();
    assert_eq!(p.sender, "");
    // With the null sender, a generated From: names the real user.
    assert!(text(&p).contains("<alice@host.example.net>"));
    let p = run(&["-f", "", "a@x.org"], "\n", &ctx()).unwrap();
    assert_eq!(p.sender, "");
    let p = run(&["-fBounce <bounce@Example.ORG>", "a@x.org"], "\n", &ctx()).unwrap();
    assert_eq!(p.sender, "bounce@example.org");
    let p = run(&["-f", "root", "a@x.org"], "\n", &ctx()).unwrap();
    assert_eq!(p.sender, "root@host.example.net");
}

#[test]
fn bare_names_are_qualified_in_the_header_and_envelope() {
    let p = run(
        &["-t", "-f", "root"],
        "From: root (Cron Daemon)\nTo: root, \"Ops\" <ops>\nCc: x@y.org\n\n",
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        p.recipients,
        ["root@host.example.net", "ops@host.example.net", "x@y.org"]
    );
    let t = text(&p);
    assert!(t.starts_with(
        "From: root@host.example.net (Cron Daemon)\r\nTo: root@host.example.net, \"Ops\" <ops@host.example.net>\r\nCc: x@y.org\r\n"
    ), "{t}");
}

#[test]
fn aliases_redirect_bare_names_in_the_envelope() {
    let mut c = ctx();
    c.aliases
        .insert("root".into(), "admin@example.org, ops@example.org".into());
    c.aliases
        .insert("default".into(), "catchall@example.org".into());
    let p = run(&["root", "www-data", "x@y.org"], "\n", &c).unwrap();
    assert_eq!(
        p.recipients,
        [
            "admin@example.org",
            "ops@example.org",
            "catchall@example.org",
            "x@y.org"
        ]
    );
}

#[test]
fn a_bad_alias_is_a_configuration_error() {
    let mut c = ctx();
    c.aliases.insert("root".into(), "not an address@".into());
    let e = run(&["root"], "\n", &c).unwrap_err();
    assert_eq!(e.exit_code(), exitcode::CONFIG);
}

#[test]
fn tls_required_no_is_recorded_and_kept_rfc8689_section_3() {
    let p = run(&["a@x.org"], "TLS-Required: No\nSubject: s\n\n", &ctx()).unwrap();
    assert!(p.tls_required_no);
    assert!(text(&p).contains("TLS-Required: No\r\n"));
    let p = run(&["a@x.org"], "TLS-Required: Yes\n\n", &ctx()).unwrap();
    assert!(!p.tls_required_no);
    // A repeated field is treated as absent: only one clear request
    // weakens the policy.
    let p = run(
        &["a@x.org"],
        "TLS-Required: No\nTLS-Required: no\n\n",
        &ctx(),
    )
    .unwrap();
    assert!(!p.tls_required_no);
    let p = run(&["a@x.org"], "tls-required:   no  \n\n", &ctx()).unwrap();
    assert!(p.tls_required_no);
}

#[test]
fn eight_bit_content_is_noticed() {
    let p = run(&["a@x.org"], "Subject: s\n\nGrüße\n", &ctx()).unwrap();
    assert!(p.eight_bit);
    let p = run(&["a@x.org"], "Subject: s\n\nplain\n", &ctx()).unwrap();
    assert!(!p.eight_bit);
}

#[test]
fn a_message_without_header_gets_one() {
    let p = run(&["a@x.org"], "just a line\n", &ctx()).unwrap();
    let t = text(&p);
    assert!(t.starts_with("From: "));
    assert!(t.ends_with("\r\n\r\njust a line\r\n"), "{t}");
}

#[test]
fn dsn_options_follow_the_message() {
    let p = run(
        &["-N", "success,failure", "-R", "hdrs", "-V", "E1", "a@x.org"],
        "\n",
        &ctx(),
    )
    .unwrap();
    assert_eq!(p.dsn.envid.as_deref(), Some("E1"));
    assert_eq!(p.dsn.ret, Some(crate::envelope::Ret::Hdrs));
}
