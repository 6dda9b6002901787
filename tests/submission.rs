//! The sendmail interface as its real callers use it: each test runs the
//! real binary (as `smarthost sendmail`, or through a symbolic link named
//! `sendmail`, directly or under `sh -c`) with the exact arguments and the
//! input shape of one caller, then delivers the queue to a fake MX and
//! checks the envelope and the bytes that arrived. The rest pins the rules
//! those callers depend on: `-t` and Bcc, the lone-dot line, the header
//! fields submission adds, sender and recipient forms, aliases, and the
//! sysexits status of every refusal, with standard input always read to
//! the end.
//!
//! Callers that speak SMTP on standard input (`-bs`: Alpine, Symfony
//! Mailer's default) are not here; that mode does not exist yet.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use mail_parser::MessageParser;
use support::env::run_command;
use support::world::{zone, World, MX1};
use support::{FakeMx, Output, ReceivedMessage, TestEnv};

/// How long a test waits for the fake MX to see something.
const WAIT: Duration = Duration::from_secs(10);

/// More than any pipe buffer holds, so a writer only finishes when the
/// reader has read it all.
const BIG: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A world whose `domain` is `example.org`, so bare names and the default
/// sender land on the fake MX.
fn world() -> World {
    World::new(zone(), "domain = \"example.org\"")
}

/// The login name of the real uid: the default sender's local part.
fn user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .expect("read the password database")
        .expect("the test user has a name")
        .name
}

/// The default envelope sender in [`world`].
fn default_sender() -> String {
    format!("{}@example.org", user())
}

/// `<dir>/bin/<name>`, a symbolic link to the binary.
fn link(env: &TestEnv, name: &str) -> PathBuf {
    let dir = env.dir.path().join("bin");
    std::fs::create_dir_all(&dir).expect("create bin directory");
    let path = dir.join(name);
    match std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_smarthost"), &path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("symlink {}: {e}", path.display()),
    }
    path
}

/// Points a command at the test configuration, with a fixed environment:
/// no log filter, no `$NAME` unless a test sets it.
fn prepare(cmd: &mut Command, env: &TestEnv) {
    cmd.env("SMARTHOST_CONFIG", &env.config_path)
        .env_remove("RUST_LOG")
        .env_remove("SMARTHOST_LOG")
        .env_remove("NAME")
        .current_dir(env.dir.path());
}

/// The binary run under the name `name` (through a symbolic link).
fn named(env: &TestEnv, name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(link(env, name));
    cmd.args(args);
    prepare(&mut cmd, env);
    cmd
}

/// `smarthost sendmail <args>`.
fn smarthost_sendmail(env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = env.cmd(&["sendmail"]);
    cmd.args(args);
    prepare(&mut cmd, env);
    cmd
}

/// `/bin/sh -c "<line>"`, as PHP and logwatch start sendmail; the line
/// may use `$SENDMAIL` for the path of the `sendmail` link.
fn shell(env: &TestEnv, line: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(line)
        .env("SENDMAIL", link(env, "sendmail"));
    prepare(&mut cmd, env);
    cmd
}

/// Runs a command that must queue the message.
fn submit(cmd: Command, input: &[u8]) {
    let description = format!("{cmd:?}");
    let out = run_command(cmd, input);
    assert_eq!(
        out.status, 0,
        "{description} failed:\n{}{}",
        out.stdout, out.stderr
    );
}

/// Runs `cmd` with `input` written in full, and reports whether all of it
/// could be written: `false` means the child closed its input early and
/// the caller got a broken pipe.
fn run_feeding(mut cmd: Command, input: Vec<u8>) -> (Output, bool) {
    let description = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {description}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = thread::spawn(move || stdin.write_all(&input).is_ok());
    let out = child.wait_with_output().expect("wait for the child");
    let all_written = writer.join().expect("the writer thread");
    let output = Output {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (output, all_written)
}

/// A message followed by `BIG` bytes of body text.
fn big_message(head: &str) -> Vec<u8> {
    let mut input = head.as_bytes().to_vec();
    let line = b"0123456789 abcdefghijklmnopqrstuvwxyz 0123456789 abcdefghijklmnopqrstuvwxyz\n";
    while input.len() < BIG {
        input.extend_from_slice(line);
    }
    input
}

/// The files in the maildrop (none when it does not exist yet).
fn maildrop_files(env: &TestEnv) -> Vec<PathBuf> {
    match std::fs::read_dir(env.queue_dir.join("maildrop")) {
        Ok(dir) => dir.map(|e| e.expect("maildrop entry").path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Nothing is in the queue: `mailq` says so and the maildrop is empty.
fn assert_nothing_queued(world: &World) {
    let listing = world.mailq();
    assert!(
        listing.contains("Mail queue is empty"),
        "nothing must be queued:\n{listing}"
    );
    assert!(
        maildrop_files(&world.env).is_empty(),
        "maildrop: {:?}",
        maildrop_files(&world.env)
    );
}

/// Runs the queue once and returns the `n` transactions MX1 received; the
/// queue must be empty afterwards.
fn deliver(world: &World, mx: &FakeMx, n: usize) -> Vec<ReceivedMessage> {
    world.queue_run(&[]);
    let got = mx.wait_for_messages(n, WAIT);
    assert_eq!(got.len(), n, "transactions received");
    let listing = world.mailq();
    assert!(listing.contains("Mail queue is empty"), "{listing}");
    got
}

/// Submits with `cmd`, runs the queue, returns the one transaction.
fn deliver_one(world: &World, cmd: Command, input: &[u8]) -> ReceivedMessage {
    let mx = world.mx(MX1, "mx1.example.org").start();
    submit(cmd, input);
    deliver(world, &mx, 1).remove(0)
}

/// The header fields of delivered content, in order: name and unfolded
/// value (RFC 5322 §2.2.3), leading white space trimmed.
fn fields(data: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(data);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_string(), value.trim_start().to_string()));
        }
    }
    out
}

/// Every value of the field `name` in the delivered content.
fn values(m: &ReceivedMessage, name: &str) -> Vec<String> {
    fields(&m.data)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// The one value of the field `name`; the field must appear exactly once.
fn value(m: &ReceivedMessage, name: &str) -> String {
    let all = values(m, name);
    assert_eq!(all.len(), 1, "{name}: exactly once in\n{}", m.data_str());
    all.into_iter().next().unwrap_or_default()
}

/// The delivered body, after the first empty line.
fn body(m: &ReceivedMessage) -> String {
    let text = m.data_str();
    match text.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => String::new(),
    }
}

/// The delivered content after smarthost's own `Received:` field.
fn after_trace(m: &ReceivedMessage) -> &[u8] {
    let data = &m.data;
    assert!(data.starts_with(b"Received: by client.example.net"));
    // The trace field is two lines: "Received: ..." and "\tid ...".
    let mut at = 0;
    for _ in 0..2 {
        at += data[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a line end")
            + 2;
    }
    assert!(
        !matches!(data.get(at), Some(b' ' | b'\t')),
        "trace field ends"
    );
    &data[at..]
}

/// Every line ended by CRLF.
fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

fn rcpt_set(m: &ReceivedMessage) -> BTreeSet<String> {
    m.rcpt_addrs().into_iter().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The transaction whose `Subject:` is `subject`.
fn by_subject<'a>(got: &'a [ReceivedMessage], subject: &str) -> &'a ReceivedMessage {
    got.iter()
        .find(|m| values(m, "Subject").iter().any(|s| s == subject))
        .unwrap_or_else(|| panic!("no message with Subject: {subject}"))
}

/// The queue id that `-v` printed.
fn queued_id(out: &Output) -> String {
    out.stderr
        .lines()
        .find_map(|l| l.strip_prefix("sendmail: queued as "))
        .unwrap_or_else(|| panic!("no queue id in {:?}", out.stderr))
        .trim()
        .to_string()
}

/// The envelope `queue show --json ID` prints for a message still in the
/// maildrop.
fn queue_show(env: &TestEnv, id: &str) -> serde_json::Value {
    let out = env.run(&["queue", "show", "--json", id]);
    assert_eq!(out.status, 0, "queue show: {}", out.stderr);
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert_eq!(v["state"], "waiting in the maildrop for pickup", "{v}");
    v["envelope"].clone()
}

/// The display name and address of the one `From:` mailbox, decoded
/// (quoting and RFC 2047 encoding are the writer's choice).
fn from_mailbox(m: &ReceivedMessage) -> (Option<String>, String) {
    let parsed = MessageParser::default()
        .parse(&m.data)
        .expect("mail-parser reads the message");
    let from = parsed
        .from()
        .and_then(|a| a.first())
        .unwrap_or_else(|| panic!("a From: mailbox in\n{}", m.data_str()));
    (
        from.name.as_deref().map(str::to_string),
        from.address.as_deref().unwrap_or_default().to_string(),
    )
}

/// The `Message-ID:` smarthost generates: `<id.random@hostname>`.
fn assert_generated_message_id(m: &ReceivedMessage) {
    let id = value(m, "Message-ID");
    assert!(
        id.starts_with('<') && id.ends_with("@client.example.net>") && id.contains('.'),
        "generated Message-ID: {id}"
    );
}

/// A `Date:` that parses as RFC 5322 §3.3 date-time.
fn assert_valid_date(m: &ReceivedMessage) {
    let date = value(m, "Date");
    chrono::DateTime::parse_from_rfc2822(&date)
        .unwrap_or_else(|e| panic!("Date: {date:?} is not RFC 5322: {e}"));
}

// ---------------------------------------------------------------------------
// The callers of SENDMAIL-NOTES §7, with their exact arguments and input
// ---------------------------------------------------------------------------

/// PHP 8 `mail()`: `sh -c "<sendmail_path> <5th argument>"` with the
/// default `sendmail_path` (`sendmail -t -i`) and an attached `-f`; CRLF
/// input, a `Bcc:` among the user's headers, a lone dot in the text.
#[test]
fn php_mail_sh_c_sendmail_path_t_i_attached_f_crlf_input_with_bcc() {
    let world = world();
    let input = b"To: bob@example.org\r\nSubject: Your order 1234\r\nFrom: Shop <shop@example.org>\r\nBcc: audit@example.org\r\nX-Mailer: PHP/8.3.6\r\n\r\nThank you for your order.\r\n.\r\nTotal: 3 items\r\n";
    let cmd = shell(&world.env, "$SENDMAIL -t -i -fbounce@example.org");
    let m = deliver_one(&world, cmd, input);
    assert_eq!(m.mail_from, "bounce@example.org", "attached -f");
    assert_eq!(rcpt_set(&m), set(&["bob@example.org", "audit@example.org"]));
    let data = m.data_str();
    assert!(!data.contains("Bcc") && !data.contains("audit@"), "{data}");
    assert_eq!(value(&m, "From"), "Shop <shop@example.org>");
    assert_valid_date(&m);
    assert_generated_message_id(&m);
    assert_eq!(
        body(&m),
        "Thank you for your order.\r\n.\r\nTotal: 3 items\r\n",
        "-i: the lone dot is text"
    );
    assert!(
        m.raw_data.ends_with(b"\r\n..\r\nTotal: 3 items\r\n"),
        "dot-stuffed on the wire (RFC 5321 §4.5.2)"
    );
}

/// PHP 7 `mail()` wrote its own lines with LF and the user's headers as
/// given, here CRLF, and a user header may repeat `To:`.
#[test]
fn php7_mail_mixed_line_ends_and_a_repeated_to_field_reach_both_recipients() {
    let world = world();
    let input = b"To: bob@example.org\nSubject: Newsletter\nTo: carol@example.org\r\nFrom: news@example.org\r\n\nline one\r\nline two\n";
    let cmd = shell(&world.env, "$SENDMAIL -t -i -fbounce@example.org");
    let m = deliver_one(&world, cmd, input);
    assert_eq!(m.rcpt_addrs(), ["bob@example.org", "carol@example.org"]);
    assert_eq!(body(&m), "line one\r\nline two\r\n");
    assert!(
        !m.data.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "only CRLF line ends on the wire (RFC 5321 §2.3.8)"
    );
}

/// cronie: `-FCronDaemon -i -odi -oem -oi -t -f <>` split on blanks (no
/// shell, so `<>` arrives as a word), `From:` and `To:` with the bare
/// user, no `Date:`, LF, 8-bit UTF-8 output.
#[test]
fn cronie_null_sender_bare_user_qualified_date_and_message_id_added() {
    let world = world();
    let input = "From: \"(Cron Daemon)\" <root>\nTo: root\nSubject: Cron <root@host> /usr/local/bin/backup\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\nAuto-Submitted: auto-generated\nPrecedence: bulk\nX-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <HOME=/root>\n\nbackup: 12 files, größe 3 MB\n.\ndone\n";
    let cmd = named(
        &world.env,
        "sendmail",
        &[
            "-FCronDaemon",
            "-i",
            "-odi",
            "-oem",
            "-oi",
            "-t",
            "-f",
            "<>",
        ],
    );
    let m = deliver_one(&world, cmd, input.as_bytes());
    assert_eq!(m.mail_from, "", "MAIL FROM:<> (RFC 5321 §4.5.5)");
    assert_eq!(m.rcpt_addrs(), ["root@example.org"]);
    assert_eq!(value(&m, "From"), "\"(Cron Daemon)\" <root@example.org>");
    assert_eq!(value(&m, "To"), "root@example.org");
    assert_eq!(values(&m, "X-Cron-Env").len(), 2);
    assert_valid_date(&m);
    assert_generated_message_id(&m);
    assert_eq!(body(&m), "backup: 12 files, größe 3 MB\r\n.\r\ndone\r\n");
    assert!(
        m.mail_params.iter().any(|p| p == "BODY=8BITMIME"),
        "8-bit content is sent as 8BITMIME (RFC 6152): {:?}",
        m.mail_params
    );
}

/// cronie without MAILFROM passes `-f <user>`: a bare name, qualified.
#[test]
fn cronie_bare_f_user_is_qualified_with_domain() {
    let world = world();
    let input = "From: \"(Cron Daemon)\" <backup>\nTo: ops@example.org\nSubject: Cron <backup@host> true\n\nok\n";
    let cmd = named(
        &world.env,
        "sendmail",
        &[
            "-FCronDaemon",
            "-i",
            "-odi",
            "-oem",
            "-oi",
            "-t",
            "-f",
            "backup",
        ],
    );
    let m = deliver_one(&world, cmd, input.as_bytes());
    assert_eq!(m.mail_from, "backup@example.org");
    assert_eq!(m.rcpt_addrs(), ["ops@example.org"]);
}

/// Debian's vixie cron: `-i -FCronDaemon -B8BITMIME -oem <MAILTO>` with
/// MAILTO as one word holding a comma list and a bare name, which the
/// `[aliases]` table redirects; `From: root (Cron Daemon)`.
#[test]
fn debian_cron_comma_list_in_one_word_with_alias_and_b8bitmime_rfc6152() {
    let world = world();
    world.add_to_table("aliases", "root = \"admin@example.org\"");
    let mailto = "root,ops@example.org";
    let input = format!(
        "From: root (Cron Daemon)\nTo: {mailto}\nSubject: Cron <root@host> test -x /usr/sbin/anacron || run-parts --report /etc/cron.daily\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\nX-Cron-Env: <MAILTO={mailto}>\n\nÜberprüfung abgeschlossen\n"
    );
    let mx = world.mx(MX1, "mx1.example.org").start();
    let out = run_command(
        named(
            &world.env,
            "sendmail",
            &["-i", "-FCronDaemon", "-B8BITMIME", "-oem", "-v", mailto],
        ),
        input.as_bytes(),
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    let shown = queue_show(&world.env, &queued_id(&out));
    assert_eq!(shown["dsn"]["body"], "8bitmime", "-B is kept: {shown}");
    let m = deliver(&world, &mx, 1).remove(0);
    assert_eq!(m.mail_from, default_sender());
    assert_eq!(m.rcpt_addrs(), ["admin@example.org", "ops@example.org"]);
    assert_eq!(value(&m, "From"), "root@example.org (Cron Daemon)");
    assert_eq!(value(&m, "To"), "root@example.org,ops@example.org");
    assert!(m.mail_params.iter().any(|p| p == "BODY=8BITMIME"));
    assert_eq!(body(&m), "Überprüfung abgeschlossen\r\n");
}

/// anacron: `-FAnacron -odi <mailto>`, without `-i`, so a lone dot in the
/// job's output ends the message, as with every dot-mode sendmail. The
/// rest of the output is still read, so anacron never gets a broken pipe.
#[test]
fn anacron_without_i_a_lone_dot_ends_the_message_and_the_rest_is_read() {
    let world = world();
    let mx = world.mx(MX1, "mx1.example.org").start();
    let mut input = b"From: Anacron <root>\nTo: root\nMIME-Version: 1.0\nContent-Type: text/plain; charset=\"UTF-8\"\nContent-Transfer-Encoding: 8bit\nSubject: Anacron job 'cron.daily' on host\n\n/etc/cron.daily/logrotate:\n.\n".to_vec();
    input.extend_from_slice(&big_message("after the dot\n"));
    let (out, all_written) = run_feeding(
        named(&world.env, "sendmail", &["-FAnacron", "-odi", "root"]),
        input,
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(all_written, "the input after the dot was read, not cut off");
    let m = deliver(&world, &mx, 1).remove(0);
    assert_eq!(m.rcpt_addrs(), ["root@example.org"]);
    assert_eq!(body(&m), "/etc/cron.daily/logrotate:\r\n");
    assert!(!m.data_str().contains("after the dot"));
}

/// git send-email, exactly as git 2.47 runs it: `-f <from> -i <to> <cc>
/// <cc> <bcc>`, no `--`; the `Bcc` recipient is only on the command line,
/// and `Date:` and `Message-ID:` are git's and stay as they are.
#[test]
fn git_send_email_argv_recipients_with_bcc_only_on_argv_and_its_own_date_and_message_id() {
    let world = world();
    let input = "From: A <a@example.org>\nTo: bob@example.org\nCc: carol@example.org,\n\tA <a@example.org>\nSubject: [PATCH] test patch\nDate: Fri,  4 Dec 2026 05:52:57 +0000\nMessage-ID: <20261204055257.17295-1-a@example.org>\nX-Mailer: git-send-email 2.47.3\nMIME-Version: 1.0\nContent-Transfer-Encoding: 8bit\n\n---\n-- \n2.47.3\n\n";
    let cmd = named(
        &world.env,
        "sendmail",
        &[
            "-f",
            "a@example.org",
            "-i",
            "bob@example.org",
            "carol@example.org",
            "a@example.org",
            "dave@example.org",
        ],
    );
    let m = deliver_one(&world, cmd, input.as_bytes());
    assert_eq!(m.mail_from, "a@example.org");
    assert_eq!(
        m.rcpt_addrs(),
        [
            "bob@example.org",
            "carol@example.org",
            "a@example.org",
            "dave@example.org"
        ]
    );
    assert_eq!(
        after_trace(&m),
        crlf(input),
        "nothing added or changed: git's Date:, Message-ID: and From: are kept"
    );
}

/// mutt's default `$sendmail` (`sendmail -oem -oi`) plus `-B8BITMIME -f
/// addr -N notify -R ret -- to cc bcc`; with `$write_bcc` the text has a
/// `Bcc:` field, which must not leave the host.
#[test]
fn mutt_double_dash_recipients_with_dsn_flags_rfc3461_and_bcc_removed() {
    let world = world();
    let input = "Date: Fri, 4 Dec 2026 10:00:00 +0100\nFrom: Me <me@example.org>\nTo: bob@example.org\nCc: carol@example.org\nBcc: hidden@example.org\nSubject: minutes\nMessage-ID: <20261204090000.GA1@example.org>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Disposition: inline\nContent-Transfer-Encoding: 8bit\nUser-Agent: Mutt/2.2.13\n\nSee you Tuesday.\n";
    let cmd = named(
        &world.env,
        "sendmail",
        &[
            "-oem",
            "-oi",
            "-B8BITMIME",
            "-f",
            "me@example.org",
            "-N",
            "failure,delay",
            "-R",
            "hdrs",
            "--",
            "bob@example.org",
            "carol@example.org",
            "hidden@example.org",
        ],
    );
    let m = deliver_one(&world, cmd, input.as_bytes());
    assert_eq!(m.mail_from, "me@example.org");
    assert!(
        m.mail_params.iter().any(|p| p == "RET=HDRS"),
        "RET (RFC 3461 §4.3): {:?}",
        m.mail_params
    );
    assert!(m.mail_params.iter().any(|p| p == "BODY=8BITMIME"));
    assert_eq!(m.rcpts.len(), 3);
    for (addr, params) in &m.rcpts {
        assert!(
            params.iter().any(|p| p == "NOTIFY=FAILURE,DELAY"),
            "NOTIFY (RFC 3461 §4.1) for {addr}: {params:?}"
        );
    }
    assert_eq!(
        rcpt_set(&m),
        set(&["bob@example.org", "carol@example.org", "hidden@example.org"])
    );
    assert!(values(&m, "Bcc").is_empty());
    assert!(!m.data_str().contains("hidden@"));
    assert_eq!(value(&m, "Message-ID"), "<20261204090000.GA1@example.org>");
}

/// `--` ends the options for `smarthost sendmail` exactly as for the
/// `sendmail` link: mutt's `-- to...` words reach sendmail's own parser,
/// so recipients that start with a dash stay recipients (and are not read
/// as `-o` or `-f`), with or without a global `-c FILE` in front.
#[test]
fn double_dash_keeps_dash_recipients_for_smarthost_sendmail_as_for_the_link() {
    let world = world();
    let mx = world.mx(MX1, "mx1.example.org").start();
    let words = ["--", "-odd@example.org", "-fix@example.org"];
    let mut with_config = Command::new(env!("CARGO_BIN_EXE_smarthost"));
    with_config
        .arg("-c")
        .arg(&world.env.config_path)
        .arg("sendmail")
        .args(words);
    prepare(&mut with_config, &world.env);
    with_config.env_remove("SMARTHOST_CONFIG");
    let commands = [
        ("link", named(&world.env, "sendmail", &words)),
        ("subcommand", smarthost_sendmail(&world.env, &words)),
        ("with -c", with_config),
    ];
    for (subject, cmd) in commands {
        submit(cmd, format!("Subject: {subject}\n\nbody\n").as_bytes());
    }
    let got = deliver(&world, &mx, 3);
    for subject in ["link", "subcommand", "with -c"] {
        let m = by_subject(&got, subject);
        assert_eq!(
            m.rcpt_addrs(),
            ["-odd@example.org", "-fix@example.org"],
            "{subject}"
        );
        assert_eq!(m.mail_from, default_sender(), "{subject}: no -f was given");
    }
}

/// logwatch: `open "|/usr/sbin/sendmail -t"` (through the shell), one
/// `To:` line per address, `From:` the bare word `Logwatch`, 7bit
/// iso-8859-1, and no `-i`.
#[test]
fn logwatch_pipe_t_several_to_lines_and_bare_word_from_is_qualified() {
    let world = world();
    let input = "To: ops@example.org\nTo: admin@example.org\nFrom: Logwatch\nSubject: Logwatch for host (Linux)\nContent-Transfer-Encoding: 7bit\nContent-Type: text/plain; charset=\"iso-8859-1\"\nMIME-Version: 1.0\n\n\n ################### Logwatch 7.11 (01/22/24) ####################\n        Processing Initiated: Fri Dec  4 06:25:01 2026\n ###################################################################\n";
    let cmd = shell(&world.env, "$SENDMAIL -t");
    let m = deliver_one(&world, cmd, input.as_bytes());
    assert_eq!(m.rcpt_addrs(), ["ops@example.org", "admin@example.org"]);
    assert_eq!(m.mail_from, default_sender());
    assert_eq!(value(&m, "From"), "Logwatch@example.org");
    assert_eq!(values(&m, "To"), ["ops@example.org", "admin@example.org"]);
    assert!(body(&m).ends_with("#######\r\n"), "{}", body(&m));
}

/// A Python script: `subprocess.Popen(["/usr/sbin/sendmail", "-t", "-oi"])`
/// fed `EmailMessage.as_bytes()` (LF, RFC 2047 subject, 8-bit UTF-8 body)
/// and, with `policy=SMTP`, the same with CRLF. A lone dot is text.
#[test]
fn python_email_as_bytes_t_oi_lf_and_crlf_policy_arrive_intact() {
    let world = world();
    let mx = world.mx(MX1, "mx1.example.org").start();
    // Python 3's email package, byte for byte.
    let lf = b"From: Backup Script <backup@example.org>\nTo: ops@example.org\nSubject: Sauvegarde =?utf-8?q?termin=C3=A9e_=E2=9C=93?=\nContent-Type: text/plain; charset=\"utf-8\"\nContent-Transfer-Encoding: 8bit\nMIME-Version: 1.0\n\nR\xc3\xa9sum\xc3\xa9: 3 fichiers\n.\nfin\n".to_vec();
    let crlf_input: Vec<u8> = String::from_utf8(lf.clone())
        .expect("UTF-8")
        .replace("ops@", "oncall@")
        .replace('\n', "\r\n")
        .into_bytes();
    for input in [&lf, &crlf_input] {
        submit(named(&world.env, "sendmail", &["-t", "-oi"]), input);
    }
    let got = deliver(&world, &mx, 2);
    for (rcpt, input) in [
        ("ops@example.org", &lf),
        ("oncall@example.org", &crlf_input),
    ] {
        let m = got
            .iter()
            .find(|m| m.rcpt_addrs() == [rcpt])
            .unwrap_or_else(|| panic!("a message for {rcpt}"));
        let text = String::from_utf8(input.to_vec()).expect("UTF-8");
        let delivered = after_trace(m);
        let expected = crlf(&text);
        // Only Date: and Message-ID: are added, at the end of the header.
        let split = delivered
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header end");
        let expected_split = expected
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header end");
        assert_eq!(
            delivered[split..],
            expected[expected_split..],
            "body intact"
        );
        assert!(delivered.starts_with(&expected[..expected_split + 2]));
        assert_eq!(
            value(m, "Subject"),
            "Sauvegarde =?utf-8?q?termin=C3=A9e_=E2=9C=93?="
        );
        assert_valid_date(m);
        assert_generated_message_id(m);
        let parsed = MessageParser::default().parse(&m.data).expect("parse");
        assert_eq!(parsed.subject(), Some("Sauvegarde terminée ✓"));
        assert_eq!(
            parsed.body_text(0).as_deref(),
            Some("Résumé: 3 fichiers\r\n.\r\nfin\r\n")
        );
    }
}

// ---------------------------------------------------------------------------
// -t and Bcc
// ---------------------------------------------------------------------------

/// RFC 5322 §3.6.3: blind copies stay blind. The folded `Bcc:` field goes
/// with all its lines; its recipients still get the message.
#[test]
fn t_with_folded_bcc_removes_the_field_and_still_delivers_to_bcc_rfc5322_section_3_6_3() {
    let world = world();
    let input = b"From: a@example.org\nTo: bob@example.org\nBcc: hidden@example.org,\n  Secret Person <secret@example.org>\nSubject: s\n\nbody\n";
    let m = deliver_one(&world, smarthost_sendmail(&world.env, &["-t"]), input);
    assert_eq!(
        m.rcpt_addrs(),
        [
            "bob@example.org",
            "hidden@example.org",
            "secret@example.org"
        ]
    );
    let data = m.data_str();
    for gone in ["Bcc", "hidden", "Secret", "secret@"] {
        assert!(!data.contains(gone), "{gone:?} left in\n{data}");
    }
    assert_eq!(values(&m, "To"), ["bob@example.org"]);
}

/// A mass mailing with recipients only in `Bcc:` (a common PHP pattern):
/// every one gets it, the header shows none of them, and no `To:` is
/// made up (Postfix ≥ 2.8 adds none either).
#[test]
fn t_with_only_bcc_recipients_delivers_to_each_and_adds_no_to() {
    let world = world();
    let input =
        b"From: list@example.org\nSubject: news\nBcc: a@example.org, b@example.org\n\nbody\n";
    let m = deliver_one(&world, smarthost_sendmail(&world.env, &["-t", "-i"]), input);
    assert_eq!(m.rcpt_addrs(), ["a@example.org", "b@example.org"]);
    assert!(values(&m, "To").is_empty() && values(&m, "Cc").is_empty());
    assert!(
        !m.data_str().contains("@example.org, b@"),
        "{}",
        m.data_str()
    );
}

/// `-t` plus recipients on the command line: the union, de-duplicated
/// (domains compared without case, RFC 5321 §2.4), not the subtraction
/// that Exim and old BSD sendmail make.
#[test]
fn t_plus_argument_recipients_is_the_union_without_duplicates() {
    let world = world();
    let input = b"From: a@example.org\nTo: Bob <bob@example.org>, carol@EXAMPLE.org\nCc: bob@example.org\nSubject: s\n\nbody\n";
    let cmd = smarthost_sendmail(
        &world.env,
        &[
            "-t",
            "extra@example.org",
            "bob@Example.Org,carol@example.org",
        ],
    );
    let m = deliver_one(&world, cmd, input);
    let rcpts = m.rcpt_addrs();
    assert_eq!(rcpts.len(), 3, "one RCPT per recipient: {rcpts:?}");
    assert_eq!(
        rcpt_set(&m),
        set(&["extra@example.org", "bob@example.org", "carol@example.org"])
    );
}

/// Only Exim's subtraction would leave nothing here: the argument
/// recipient is also in `To:`, and must get the message once.
#[test]
fn t_with_the_same_recipient_in_to_and_on_the_command_line_delivers_once() {
    let world = world();
    let cmd = smarthost_sendmail(&world.env, &["-t", "bob@example.org"]);
    let m = deliver_one(&world, cmd, b"To: bob@example.org\nSubject: t\n\nx\n");
    assert_eq!(m.rcpt_addrs(), ["bob@example.org"]);
}

/// An empty group is no recipient and no error; with `-t` the command
/// line recipient still counts, and the group stays in the header.
#[test]
fn t_with_undisclosed_recipients_group_and_an_argument_rfc5322_section_3_4() {
    let world = world();
    let cmd = smarthost_sendmail(&world.env, &["-t", "-i", "bob@example.org"]);
    let input = b"To: undisclosed-recipients:;\nSubject: s\n\nbody\n";
    let m = deliver_one(&world, cmd, input);
    assert_eq!(m.rcpt_addrs(), ["bob@example.org"]);
    assert_eq!(value(&m, "To"), "undisclosed-recipients:;");
}

/// RFC 5322 §3.6.6: with a resent block, `-t` takes its recipients only;
/// the original `To:` is not mailed again, and `Resent-Bcc:` is removed.
#[test]
fn t_with_a_resent_block_takes_only_the_resent_recipients_rfc5322_section_3_6_6() {
    let world = world();
    let input = b"Resent-From: a@example.org\nResent-To: new@example.org\nResent-Bcc: blind@example.org\nResent-Date: Fri, 4 Dec 2026 10:00:00 +0000\nFrom: orig@example.org\nTo: original@example.org\nSubject: fwd\n\nbody\n";
    let m = deliver_one(&world, smarthost_sendmail(&world.env, &["-t"]), input);
    assert_eq!(m.rcpt_addrs(), ["new@example.org", "blind@example.org"]);
    assert!(values(&m, "Resent-Bcc").is_empty());
    assert!(!m.data_str().contains("blind@"));
    assert_eq!(value(&m, "To"), "original@example.org");
}

/// Without `-t` the header recipients are not mailed, but `Bcc:` is
/// still removed (old mutt's `write_bcc`, MH front-ends).
#[test]
fn without_t_header_recipients_are_not_mailed_and_bcc_is_still_removed() {
    let world = world();
    let input = b"To: bob@example.org\nCc: carol@example.org\nBcc: hidden@example.org\nSubject: s\n\nbody\n";
    let cmd = smarthost_sendmail(&world.env, &["-i", "dave@example.org"]);
    let m = deliver_one(&world, cmd, input);
    assert_eq!(m.rcpt_addrs(), ["dave@example.org"]);
    assert!(!m.data_str().contains("hidden@"));
    assert_eq!(value(&m, "Cc"), "carol@example.org");
}

// ---------------------------------------------------------------------------
// The lone-dot line
// ---------------------------------------------------------------------------

/// Without `-i`, a line that is exactly "." ends the message, with LF or
/// CRLF; other lines starting with a dot are kept as they are.
#[test]
fn without_i_a_lone_dot_line_ends_the_message_lf_and_crlf() {
    let world = world();
    let mx = world.mx(MX1, "mx1.example.org").start();
    let inputs: [&[u8]; 2] = [
        b"Subject: lf\n\n.hidden\nline 1\n.\nline 2\n",
        b"Subject: crlf\r\n\r\n.hidden\r\nline 1\r\n.\r\nline 2\r\n",
    ];
    for input in inputs {
        submit(smarthost_sendmail(&world.env, &["bob@example.org"]), input);
    }
    let got = deliver(&world, &mx, 2);
    for subject in ["lf", "crlf"] {
        let m = by_subject(&got, subject);
        assert_eq!(body(m), ".hidden\r\nline 1\r\n", "{subject}");
        assert!(m.raw_data.ends_with(b"\r\n..hidden\r\nline 1\r\n"));
    }
}

/// `-i`, `-oi`, `-oi<anything>` and `-O IgnoreDots` make the lone dot
/// text; it is dot-stuffed on the wire (RFC 5321 §4.5.2) and arrives.
#[test]
fn i_oi_oitrue_and_o_ignoredots_keep_a_lone_dot_as_text_rfc5321_section_4_5_2() {
    let world = world();
    let mx = world.mx(MX1, "mx1.example.org").start();
    let spellings: [&[&str]; 5] = [
        &["-i"],
        &["-oi"],
        &["-oitrue"],
        &["-O", "IgnoreDots"],
        &["-ti"],
    ];
    for (n, flags) in spellings.iter().enumerate() {
        let mut args = flags.to_vec();
        if !flags.contains(&"-ti") {
            args.push("bob@example.org");
        }
        let input = format!("To: bob@example.org\nSubject: {n}\n\nline 1\n.\nline 2\n");
        submit(smarthost_sendmail(&world.env, &args), input.as_bytes());
    }
    let got = deliver(&world, &mx, spellings.len());
    for (n, flags) in spellings.iter().enumerate() {
        let m = by_subject(&got, &n.to_string());
        assert_eq!(body(m), "line 1\r\n.\r\nline 2\r\n", "{flags:?}");
        assert!(
            m.raw_data.ends_with(b"line 1\r\n..\r\nline 2\r\n"),
            "{flags:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Header fields added
// ---------------------------------------------------------------------------

/// RFC 5322 §3.6: `Date:` and `From:` are required, `Message-ID:` should
/// be there; submission adds what the message lacks (RFC 6409 §8.2, §8.3).
#[test]
fn missing_date_message_id_and_from_are_added_rfc5322_section_3_6() {
    let world = world();
    let cmd = smarthost_sendmail(&world.env, &["-t", "-F", "Backup Robot"]);
    let m = deliver_one(&world, cmd, b"To: bob@example.org\nSubject: s\n\nbody\n");
    assert_eq!(
        from_mailbox(&m),
        (Some("Backup Robot".to_string()), default_sender())
    );
    assert!(value(&m, "From").ends_with(&format!(" <{}>", default_sender())));
    assert_valid_date(&m);
    assert_generated_message_id(&m);
    assert_eq!(value(&m, "To"), "bob@example.org");
    assert_eq!(body(&m), "body\r\n");
}

/// A message that is only a body (no header at all) gets the fields too,
/// and its first line stays body text.
#[test]
fn a_message_without_any_header_gets_from_date_and_message_id() {
    let world = world();
    let cmd = smarthost_sendmail(&world.env, &["bob@example.org"]);
    let m = deliver_one(&world, cmd, b"just a line of text\n");
    assert_eq!(from_mailbox(&m), (gecos_name(), default_sender()));
    assert_eq!(values(&m, "From").len(), 1);
    assert_valid_date(&m);
    assert_generated_message_id(&m);
    assert_eq!(body(&m), "just a line of text\r\n");
}

/// The full name the binary falls back on: the first field of the
/// password entry's gecos, else nothing (then `From:` has no name).
fn gecos_name() -> Option<String> {
    let entry = nix::unistd::User::from_uid(nix::unistd::getuid())
        .expect("read the password database")
        .expect("the test user has an entry");
    let gecos = entry.gecos.to_string_lossy().into_owned();
    let name = gecos
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    (!name.is_empty()).then_some(name)
}

// ---------------------------------------------------------------------------
// Senders and full names
// ---------------------------------------------------------------------------

/// `-faddr`, `-f addr`, `-raddr`, `-r addr`, `-f 'Name <addr>'` and a bare
/// `-f name` (qualified with `domain`) all set the envelope sender.
#[test]
fn sender_forms_f_attached_separate_r_display_name_and_bare_name() {
    let world = world();
    let mx = world.mx(MX1, "mx1.example.org").start();
    let cases: [(&[&str], &str); 6] = [
        (&["-fone@example.org"], "one@example.org"),
        (&["-f", "two@example.org"], "two@example.org"),
        (&["-rthree@example.org"], "three@example.org"),
        (&["-r", "four@example.org"], "four@example.org"),
        (
            &["-f", "Five Person <five@Example.ORG>"],
            "five@example.org",
        ),
        (&["-f", "six"], "six@example.org"),
    ];
    for (n, (flags, _)) in cases.iter().enumerate() {
        let mut args = flags.to_vec();
        args.push("bob@example.org");
        let input = format!("From: x@example.org\nSubject: {n}\n\nbody\n");
        submit(smarthost_sendmail(&world.env, &args), input.as_bytes());
    }
    let got = deliver(&world, &mx, cases.len());
    for (n, (flags, sender)) in cases.iter().enumerate() {
        let m = by_subject(&got, &n.to_string());
        assert_eq!(m.mail_from, *sender, "{flags:?}");
    }
}

/// `-f '<>'`, `-f ''`, `-f<>` and `-r '<>'` give the null reverse-path
/// (RFC 5321 §4.5.5); the generated `From:` is still a real address.
#[test]
fn null_sender_forms_give_mail_from_empty_and_a_real_from_rfc5321_section_4_5_5() {
    let world = world();
    let mx = world.mx(MX1, "mx1.example.org").start();
    let forms: [&[&str]; 4] = [&["-f", "<>"], &["-f", ""], &["-f<>"], &["-r", "<>"]];
    for (n, flags) in forms.iter().enumerate() {
        let mut args = flags.to_vec();
        args.extend(["-F", "Daemon", "bob@example.org"]);
        let input = format!("Subject: {n}\n\nbody\n");
        submit(smarthost_sendmail(&world.env, &args), input.as_bytes());
    }
    let got = deliver(&world, &mx, forms.len());
    for (n, flags) in forms.iter().enumerate() {
        let m = by_subject(&got, &n.to_string());
        assert_eq!(m.mail_from, "", "{flags:?}");
        assert_eq!(
            from_mailbox(m),
            (Some("Daemon".to_string()), default_sender()),
            "{flags:?}"
        );
    }
}

/// `-F` names a generated `From:`; it beats `$NAME`, `$NAME` beats the
/// password entry, names are quoted or RFC 2047-encoded as needed, and a
/// `From:` that is there already is left alone.
#[test]
fn full_name_f_beats_name_env_and_only_shapes_a_generated_from_rfc5322_section_3_4() {
    let world = world();
    let mx = world.mx(MX1, "mx1.example.org").start();
    let send = |subject: &str, args: &[&str], name_env: Option<&str>, from: &str| {
        let mut args = args.to_vec();
        args.push("bob@example.org");
        let mut cmd = smarthost_sendmail(&world.env, &args);
        if let Some(name) = name_env {
            cmd.env("NAME", name);
        }
        submit(
            cmd,
            format!("{from}Subject: {subject}\n\nbody\n").as_bytes(),
        );
    };
    send("f-wins", &["-F", "Doe, John"], Some("Env Name"), "");
    send("env", &[], Some("Jane Roe"), "");
    send("utf8", &["-FJörg Müller"], None, "");
    send(
        "kept",
        &["-F", "Ignored"],
        None,
        "From: Kept <kept@example.org>\n",
    );
    let got = deliver(&world, &mx, 4);
    let sender = default_sender();
    let named_from = |subject: &str, name: &str| {
        assert_eq!(
            from_mailbox(by_subject(&got, subject)),
            (Some(name.to_string()), sender.clone()),
            "{subject}"
        );
    };
    named_from("f-wins", "Doe, John");
    named_from("env", "Jane Roe");
    named_from("utf8", "Jörg Müller");
    let raw_from = value(by_subject(&got, "utf8"), "From");
    assert!(raw_from.is_ascii(), "RFC 2047 encoded: {raw_from}");
    assert_eq!(
        value(by_subject(&got, "kept"), "From"),
        "Kept <kept@example.org>"
    );
}

// ---------------------------------------------------------------------------
// Bare names and aliases
// ---------------------------------------------------------------------------

/// Bare names (cron's `root`, a `-t` header written by a script) are
/// qualified with `domain` in the envelope and in `From:`, `To:`, `Cc:`,
/// leaving the rest of each field as written.
#[test]
fn bare_names_are_qualified_with_domain_in_envelope_and_header_fields() {
    let world = world();
    let input = b"From: backup\nTo: root, bob@example.org\nCc: \"Ops Team\" <ops>\nReply-To: admin (the admin)\nSubject: s\n\nbody\n";
    let m = deliver_one(&world, smarthost_sendmail(&world.env, &["-t"]), input);
    assert_eq!(
        m.rcpt_addrs(),
        ["root@example.org", "bob@example.org", "ops@example.org"]
    );
    assert_eq!(value(&m, "From"), "backup@example.org");
    assert_eq!(value(&m, "To"), "root@example.org, bob@example.org");
    assert_eq!(value(&m, "Cc"), "\"Ops Team\" <ops@example.org>");
    assert_eq!(value(&m, "Reply-To"), "admin@example.org (the admin)");
}

/// `[aliases]`: `root` goes to its entry (a list here), every other bare
/// name to `default`; full addresses are not touched by either.
#[test]
fn aliases_redirect_root_and_default_takes_other_bare_names() {
    let world = world();
    world.add_to_table(
        "aliases",
        "root = \"admin@example.org, Second Admin <admin2@example.org>\"\ndefault = \"postmaster@example.org\"",
    );
    let cmd = smarthost_sendmail(
        &world.env,
        &["-t", "-i", "root", "www-data", "carol@example.org"],
    );
    let input = b"To: root\nCc: nobody\nSubject: s\n\nbody\n";
    let m = deliver_one(&world, cmd, input);
    assert_eq!(
        m.rcpt_addrs(),
        [
            "admin@example.org",
            "admin2@example.org",
            "postmaster@example.org",
            "carol@example.org"
        ]
    );
    assert_eq!(value(&m, "To"), "root@example.org");
}

/// An internationalised domain is stored and sent in A-labels (RFC 5890);
/// a UTF-8 local part asks for SMTPUTF8 (RFC 6531 §3.4).
#[test]
fn idn_recipient_is_sent_in_a_labels_and_utf8_local_part_with_smtputf8_rfc6531() {
    let world = World::new(
        zone().mx("xn--bcher-kva.example.org", 10, "mx1.example.org"),
        "domain = \"example.org\"",
    );
    let mx = world.mx(MX1, "mx1.example.org").start();
    let inputs = [
        "To: Bücherwurm <info@bücher.example.org>\nSubject: ascii\n\nx\n",
        "To: Jörg <jörg@bücher.example.org>\nSubject: utf8\n\nx\n",
    ];
    for input in inputs {
        submit(smarthost_sendmail(&world.env, &["-t"]), input.as_bytes());
    }
    let got = deliver(&world, &mx, 2);
    let ascii = by_subject(&got, "ascii");
    assert_eq!(ascii.rcpt_addrs(), ["info@xn--bcher-kva.example.org"]);
    assert!(!ascii.mail_params.iter().any(|p| p == "SMTPUTF8"));
    let utf8 = by_subject(&got, "utf8");
    assert_eq!(utf8.rcpt_addrs(), ["jörg@xn--bcher-kva.example.org"]);
    assert!(
        utf8.mail_params.iter().any(|p| p == "SMTPUTF8"),
        "{:?}",
        utf8.mail_params
    );
    assert_eq!(
        value(utf8, "To"),
        "Jörg <jörg@bücher.example.org>",
        "the header as written"
    );
}

// ---------------------------------------------------------------------------
// Refusals: exit status, message, nothing queued, input read to the end
// ---------------------------------------------------------------------------

/// A refusal: the exit status, a message that names the problem, nothing
/// in the queue, and the whole of a large input read (no broken pipe).
fn assert_refused(world: &World, cmd: Command, input: Vec<u8>, status: i32, names: &[&str]) {
    let description = format!("{cmd:?}");
    let (out, all_written) = run_feeding(cmd, input);
    assert_eq!(out.status, status, "{description}: {}", out.stderr);
    for name in names {
        assert!(
            out.stderr.contains(name),
            "{description}: the message names {name:?}: {}",
            out.stderr
        );
    }
    assert_eq!(
        out.stderr.trim_end().lines().count(),
        1,
        "{description}: one line on stderr: {:?}",
        out.stderr
    );
    assert!(all_written, "{description}: standard input read to the end");
    assert_nothing_queued(world);
}

/// RFC 5322 §3.4.1: `john doe@x` is not an address. The whole submission
/// is refused with EX_DATAERR (65) and the address is named, whether it
/// came from the command line, a `-t` header or `-f`; good recipients
/// beside it get nothing either.
#[test]
fn invalid_address_is_ex_dataerr_names_the_address_and_queues_nothing() {
    let world = world();
    let mx = world.mx(MX1, "mx1.example.org").start();
    let message = || big_message("To: bob@example.org, bad@@example.org\nSubject: s\n\n");
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["bob@example.org", "john doe@example.org"],
            &["john doe@example.org", "recipient"],
        ),
        (&["-t"], &["bad@@example.org", "To"]),
        (
            &["-f", "me@@example.org", "bob@example.org"],
            &["me@@example.org", "-f"],
        ),
        (&["bob@example.org", "x@exa mple.org"], &["x@exa mple.org"]),
    ];
    for (args, names) in cases {
        assert_refused(
            &world,
            smarthost_sendmail(&world.env, args),
            message(),
            65,
            names,
        );
    }
    world.queue_run(&[]);
    assert_eq!(mx.sessions(), 0, "nothing was sent to anyone");
}

/// No recipient on the command line and none found by `-t` is a usage
/// error (EX_USAGE, 64), as with Postfix and msmtp.
#[test]
fn no_recipients_is_ex_usage_64() {
    let world = world();
    let cases: [(&[&str], &str); 3] = [
        (&[], "Subject: s\n\n"),
        (&["-t"], "To: undisclosed-recipients:;\nSubject: s\n\n"),
        (&["-t", "-i"], "Subject: no To at all\n\n"),
    ];
    for (args, head) in cases {
        let cmd = smarthost_sendmail(&world.env, args);
        assert_refused(&world, cmd, big_message(head), 64, &["no recipients"]);
    }
}

/// An option sendmail does not have is EX_USAGE and never "sent": letters,
/// long options, a value-taking option with no value, a bad DSN value.
#[test]
fn unknown_or_malformed_option_is_ex_usage_64_and_nothing_is_queued() {
    let world = world();
    let cases: [(&[&str], &str); 5] = [
        (&["-Z", "bob@example.org"], "-Z"),
        (&["-tZ"], "-Z"),
        (&["--help"], "--help"),
        (&["-i", "-f"], "-f"),
        (&["-N", "sometimes", "bob@example.org"], "sometimes"),
    ];
    for (args, name) in cases {
        let cmd = smarthost_sendmail(&world.env, args);
        assert_refused(
            &world,
            cmd,
            big_message("To: bob@example.org\n\n"),
            64,
            &[name],
        );
    }
}

/// `-bd` (daemon) and `-bv` (verify) are modes smarthost does not have:
/// EX_USAGE with a message saying so, and nothing is sent, unlike dma and
/// OpenSMTPD, which ignore `-bv` and send the message.
#[test]
fn bd_and_bv_are_refused_with_ex_usage_and_nothing_is_sent() {
    let world = world();
    let mx = world.mx(MX1, "mx1.example.org").start();
    let cases: [&[&str]; 3] = [&["-bd"], &["-bv", "bob@example.org"], &["-bD"]];
    for args in cases {
        let cmd = smarthost_sendmail(&world.env, args);
        let input = big_message("To: bob@example.org\nSubject: s\n\n");
        assert_refused(&world, cmd, input, 64, &["-b", "nothing was sent"]);
    }
    world.queue_run(&[]);
    assert_eq!(mx.sessions(), 0);
}

/// `newaliases`, `-bi` and `-I` say that aliases live in `[aliases]` and
/// exit 0 (there is no database to rebuild); nothing is queued.
#[test]
fn newaliases_bi_and_capital_i_print_a_note_and_exit_0() {
    let world = world();
    let commands = [
        named(&world.env, "newaliases", &[]),
        smarthost_sendmail(&world.env, &["-bi"]),
        named(&world.env, "sendmail", &["-I"]),
    ];
    for cmd in commands {
        let description = format!("{cmd:?}");
        let out = run_command(cmd, b"");
        assert_eq!(out.status, 0, "{description}: {}", out.stderr);
        assert!(
            out.stderr.contains("[aliases]") && out.stderr.contains("no alias database"),
            "{description}: {}",
            out.stderr
        );
    }
    assert_nothing_queued(&world);
}

/// `max_message_size` counts the input: exactly the limit is accepted, one
/// byte more is EX_DATAERR (65), says why, and is read to the end.
#[test]
fn message_over_max_message_size_is_ex_dataerr_65_and_the_input_is_read_to_the_end() {
    let world = World::new(zone(), "domain = \"example.org\"\nmax_message_size = 4096");
    let head = b"To: bob@example.org\nSubject: size\n\n";
    let mut at_limit = head.to_vec();
    while at_limit.len() < 4096 - 80 {
        at_limit.extend_from_slice(&[b'x'; 79]);
        at_limit.push(b'\n');
    }
    at_limit.resize(4095, b'z');
    at_limit.push(b'\n');
    assert_eq!(at_limit.len(), 4096);
    let mut over = at_limit.clone();
    over.insert(head.len(), b'y');
    assert_refused(
        &world,
        smarthost_sendmail(&world.env, &["-t"]),
        over,
        65,
        &["max_message_size", "4096"],
    );
    assert_refused(
        &world,
        smarthost_sendmail(&world.env, &["-t"]),
        big_message("To: bob@example.org\n\n"),
        65,
        &["max_message_size"],
    );
    let m = deliver_one(&world, smarthost_sendmail(&world.env, &["-t"]), &at_limit);
    let lines = at_limit[head.len()..]
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    assert_eq!(
        body(&m).len(),
        4096 - head.len() + lines,
        "the body, with CRLF"
    );
}

/// A queue that cannot be written is EX_CANTCREAT (73), never 75: PHP's
/// `mail()` counts 75 as success and the message would be lost silently.
#[test]
fn unwritable_queue_is_ex_cantcreat_73_not_tempfail_75() {
    let env = TestEnv::new();
    let not_a_dir = env.dir.path().join("not-a-directory");
    std::fs::write(&not_a_dir, b"").expect("create a plain file");
    env.write_config(&format!(
        "queue_dir = {}\ndomain = \"example.org\"\nsubmit_only = true\n",
        support::env::toml_string(&not_a_dir.to_string_lossy())
    ));
    let cmd = shell(&env, "$SENDMAIL -t -i -fbounce@example.org");
    let out = run_command(cmd, b"To: bob@example.org\r\nSubject: s\r\n\r\nbody\r\n");
    assert_eq!(out.status, 73, "{}", out.stderr);
    assert!(out.stderr.contains("cannot queue"), "{}", out.stderr);
}

/// Every early refusal reads standard input to its end, so that callers
/// such as git send-email never die of a broken pipe: the `-bs` mode that
/// `-bs` and `-bp` given recipients, and a bad configuration.
#[test]
fn stdin_is_read_to_the_end_on_early_errors_and_bad_configuration() {
    let world = world();
    let input = || big_message("To: bob@example.org\n\n");
    assert_refused(
        &world,
        smarthost_sendmail(&world.env, &["-bs", "bob@example.org"]),
        input(),
        64,
        &["-bs"],
    );
    assert_refused(
        &world,
        smarthost_sendmail(&world.env, &["-bp", "bob@example.org"]),
        input(),
        64,
        &["-bp"],
    );

    let env = TestEnv::new();
    env.write_config("domain = \"example.org\"\nno_such_key = 1\n");
    let (out, all_written) = run_feeding(smarthost_sendmail(&env, &["-t"]), input());
    assert_eq!(out.status, 78, "EX_CONFIG: {}", out.stderr);
    assert!(out.stderr.contains("no_such_key"), "{}", out.stderr);
    assert!(all_written, "standard input read to the end");
}

// ---------------------------------------------------------------------------
// The other names
// ---------------------------------------------------------------------------

/// Run as `mailq` (a symbolic link), the binary lists the queue; `-v`
/// prints the queue id that the listing and `queue show` know.
#[test]
fn mailq_link_lists_what_sendmail_v_queued_and_queue_show_has_its_envelope() {
    let world = world();
    let out = run_command(
        named(
            &world.env,
            "sendmail",
            &[
                "-v",
                "-f",
                "me@example.org",
                "-N",
                "never",
                "-V",
                "env-42",
                "bob@example.org",
            ],
        ),
        b"Subject: s\n\nbody\n",
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    let id = queued_id(&out);
    let listing = run_command(named(&world.env, "mailq", &[]), b"");
    assert_eq!(listing.status, 0, "{}", listing.stderr);
    assert!(listing.stdout.contains(&id), "{}", listing.stdout);
    assert!(listing.stdout.contains("<me@example.org>"));
    assert!(listing.stdout.contains("bob@example.org"));
    let shown = queue_show(&world.env, &id);
    assert_eq!(shown["sender"], "me@example.org");
    assert_eq!(shown["recipients"][0]["address"], "bob@example.org");
    assert_eq!(shown["dsn"]["envid"], "env-42");
    assert_eq!(shown["dsn"]["notify"][0], "never");

    let with_args = run_command(named(&world.env, "mailq", &["-v"]), b"");
    assert_eq!(with_args.status, 64, "mailq takes no arguments");
}

/// `-bp` is `mailq`, and `-q` is one queue run that delivers.
#[test]
fn bp_lists_and_q_runs_the_queue() {
    let world = world();
    let mx = world.mx(MX1, "mx1.example.org").start();
    submit(
        named(&world.env, "sendmail", &["bob@example.org"]),
        b"Subject: s\n\nbody\n",
    );
    let listing = run_command(named(&world.env, "sendmail", &["-bp"]), b"");
    assert_eq!(listing.status, 0, "{}", listing.stderr);
    assert!(
        listing.stdout.contains("bob@example.org"),
        "{}",
        listing.stdout
    );
    let run = run_command(named(&world.env, "sendmail", &["-q"]), b"");
    assert_eq!(run.status, 0, "{}", run.stderr);
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got[0].rcpt_addrs(), ["bob@example.org"]);
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn helpers_parse_fields_and_line_ends() {
    // The assertions above are only as good as these helpers.
    let data = b"A: 1\r\nB: two,\r\n\tthree\r\nA: 4\r\n\r\nbody: x\r\n";
    assert_eq!(
        fields(data),
        [
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "two,\tthree".to_string()),
            ("A".to_string(), "4".to_string()),
        ]
    );
    assert_eq!(crlf("a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
    assert!(Path::new(env!("CARGO_BIN_EXE_smarthost")).exists());
}
