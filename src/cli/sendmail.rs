//! The sendmail personality: read one message, queue it durably, exit.
//!
//! Exit statuses follow sysexits as sendmail callers expect: 0 only once
//! the message is on disk (file and directory synced); 64 for usage errors
//! and no recipients; 65 for malformed input or addresses; 73 when the
//! queue cannot be written; 78 for a bad configuration. Standard input is
//! always read to the end, even after an early error, so the caller never
//! gets a broken pipe.

use std::ffi::OsString;
use std::process::{Command, Stdio};

use crate::config::Config;
use crate::delivery::run::RunOptions;
use crate::exitcode;
use crate::queue::file::{Envelope, RecipientSpec, ENVELOPE_VERSION};
use crate::queue::{new_queue_id, QueueDir, QueueError};
use crate::submission::args::{parse_sendmail_args, Mode, QueueSelection, SendmailArgs};
use crate::submission::{self, PreparedMessage, SubmitContext};

/// `sendmail [options] [--] [recipient...]`
pub(super) fn main(args: &[OsString]) -> i32 {
    let args = match parse_sendmail_args(args) {
        Ok(a) => a,
        Err(e) => {
            drain_stdin();
            eprintln!("sendmail: {e}");
            return exitcode::USAGE;
        }
    };
    if args.config_file.is_some() && running_setgid() {
        drain_stdin();
        eprintln!("sendmail: -C is not allowed when sendmail runs with a privileged group");
        return exitcode::NOPERM;
    }
    let config = match super::load_config(args.config_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            if args.mode == Mode::Deliver {
                drain_stdin();
            }
            eprintln!("sendmail: {e}");
            return exitcode::CONFIG;
        }
    };
    match &args.mode {
        Mode::Deliver => submit(&args, &config),
        Mode::ListQueue => super::queue_cmd::list(&config, false),
        Mode::QueueRun { selection, .. } => {
            super::queue_cmd::run(&config, &run_options(selection), false)
        }
        Mode::NewAliases => newaliases(),
        Mode::SmtpStdin => smtp_on_stdin(&args, &config),
        Mode::Unsupported(mode) => {
            drain_stdin();
            eprintln!("sendmail: {mode}: smarthost is an outbound-only delivery agent and has no such mode; nothing was sent");
            exitcode::USAGE
        }
    }
}

/// `newaliases`: there is no alias database; say where aliases live.
pub(super) fn newaliases() -> i32 {
    eprintln!("newaliases: smarthost keeps no alias database; aliases are the [aliases] table of its configuration");
    exitcode::OK
}

fn run_options(selection: &QueueSelection) -> RunOptions {
    match selection {
        QueueSelection::All => RunOptions::default(),
        QueueSelection::Id(id) => RunOptions {
            ids: vec![id.clone()],
            ..RunOptions::default()
        },
        QueueSelection::Recipient(site) => RunOptions {
            domains: vec![site.clone()],
            ..RunOptions::default()
        },
        // LIMITATION: `-qS` (select by sender) runs the whole due queue,
        // as Postfix, which does not implement it, cannot either.
        QueueSelection::Sender(_) => RunOptions::default(),
    }
}

fn running_setgid() -> bool {
    nix::unistd::getegid() != nix::unistd::getgid()
}

/// Reads and discards the rest of standard input, unless it is a terminal
/// (where nobody is waiting to write more).
fn drain_stdin() {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return;
    }
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
}

/// The submitting user, from the real uid (never `$LOGNAME`, which the
/// caller controls).
fn real_user() -> Result<nix::unistd::User, String> {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => Ok(user),
        _ => Err(format!("no user name for uid {uid}")),
    }
}

fn submit(args: &SendmailArgs, config: &Config) -> i32 {
    let raw = {
        let mut stdin = std::io::stdin().lock();
        submission::read_message(&mut stdin, args.ignore_dots, config.max_message_size)
    };
    let raw = match raw {
        Ok(r) => r,
        Err(e) => {
            drain_stdin();
            eprintln!("sendmail: {e}");
            return e.exit_code();
        }
    };
    let user = match real_user() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return exitcode::OSERR;
        }
    };
    let id = new_queue_id();
    let gecos = user.gecos.to_string_lossy();
    let ctx = SubmitContext {
        domain: config.domain.clone(),
        hostname: config.hostname.clone(),
        aliases: config.aliases.clone(),
        real_user: user.name.clone(),
        gecos_name: gecos
            .split(',')
            .next()
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_owned),
        env_name: std::env::var("NAME").ok().filter(|n| !n.is_empty()),
        now: chrono::Local::now().fixed_offset(),
        queue_id: id.clone(),
    };
    let prepared = match submission::prepare(args, raw, &ctx) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return e.exit_code();
        }
    };
    let envelope = envelope_for(id, &prepared, args, &user.name);
    let mut message = trace_header(&config.hostname, user.uid.as_raw(), &envelope.id, &ctx.now);
    message.extend_from_slice(&prepared.message);
    match store(config, &envelope, &message) {
        Ok(dir) => {
            if args.verbose > 0 {
                eprintln!("sendmail: queued as {}", envelope.id);
            }
            if !config.submit_only {
                start_delivery_pass(&dir, args);
            }
            exitcode::OK
        }
        Err(e) => {
            eprintln!("sendmail: cannot queue the message: {e}");
            exitcode::CANTCREAT
        }
    }
}

/// `sendmail -bs`: an SMTP session on standard input and output
/// (SENDMAIL-NOTES §7: Symfony Mailer, Alpine). The caller is the local
/// user, who may relay; STARTTLS is not offered (the pipe never crosses a
/// network, so REQUIRETLS is accepted on it); each message is deposited
/// in the maildrop as a normal submission is, and one delivery pass is
/// started at the end, as after `sendmail`.
fn smtp_on_stdin(args: &SendmailArgs, config: &Config) -> i32 {
    use crate::listener::{Client, Maildrop, Session, SessionEnd, Settings};
    let user = match real_user() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return exitcode::OSERR;
        }
    };
    let dir = match QueueDir::locate(config) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return exitcode::CANTCREAT;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sendmail: cannot start the runtime: {e}");
            return exitcode::OSERR;
        }
    };
    let settings = Settings {
        hostname: config.hostname.clone(),
        domain: config.domain.clone(),
        max_message_size: config.max_message_size,
        listen: config.listen.clone(),
        tls: None,
        credentials: None,
    };
    let client = Client::Local {
        user: user.name.clone(),
        uid: user.uid.as_raw(),
    };
    let sink = std::sync::Arc::new(Maildrop::new(dir.clone(), None));
    let (_keep, shutdown) = tokio::sync::watch::channel(false);
    let stream = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    let mut session = Session::new(
        stream,
        std::sync::Arc::new(settings),
        client,
        true,
        sink,
        shutdown,
    );
    let result = runtime.block_on(session.run());
    // Standard input is read on a blocking thread that may still wait for
    // input nobody will send; do not wait for it.
    runtime.shutdown_background();
    if !session.accepted.is_empty() && !config.submit_only {
        start_delivery_pass(&dir, args);
    }
    match result {
        Ok(()) | Err(SessionEnd::Closed) => exitcode::OK,
        Err(e) => {
            eprintln!("sendmail: -bs: {e}");
            exitcode::TEMPFAIL
        }
    }
}

/// The `Received:` header for a local submission (RFC 5321 §4.4: each
/// host that takes responsibility for a message adds one at the top).
fn trace_header(
    hostname: &str,
    uid: u32,
    id: &str,
    now: &chrono::DateTime<chrono::FixedOffset>,
) -> Vec<u8> {
    format!(
        "Received: by {hostname} (smarthost, from userid {uid})\r\n\tid {id}; {}\r\n",
        now.to_rfc2822()
    )
    .into_bytes()
}

fn envelope_for(
    id: String,
    prepared: &PreparedMessage,
    args: &SendmailArgs,
    user: &str,
) -> Envelope {
    let notify = prepared.dsn.notify.clone();
    Envelope {
        version: ENVELOPE_VERSION,
        id,
        sender: prepared.sender.clone(),
        recipients: prepared
            .recipients
            .iter()
            .map(|address| RecipientSpec {
                address: address.clone(),
                notify: notify.clone(),
                orcpt: None,
            })
            .collect(),
        arrival: chrono::Utc::now().timestamp(),
        dsn: prepared.dsn.clone(),
        security: crate::envelope::SecurityRecord {
            tls_optional: prepared.tls_required_no,
            ..args.security.clone()
        },
        smtputf8: prepared.smtputf8,
        eight_bit: prepared.eight_bit,
        submitted_by: user.to_owned(),
        report: None,
    }
}

fn store(config: &Config, envelope: &Envelope, message: &[u8]) -> Result<QueueDir, QueueError> {
    let dir = QueueDir::locate(config)?;
    dir.ensure_maildrop()?;
    dir.deposit(envelope, message)?;
    Ok(dir)
}

/// Starts one detached delivery pass so the message does not wait for
/// cron. Only the queue's owner can deliver; for other users the running
/// daemon or the next cron run picks the message up.
fn start_delivery_pass(dir: &QueueDir, args: &SendmailArgs) {
    if !dir.owned_by_me() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = Command::new(exe);
    if let Some(config) = &args.config_file {
        cmd.arg("--config").arg(config);
    }
    cmd.args(["queue", "run", "--detached"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    if let Err(e) = cmd.spawn() {
        eprintln!("sendmail: queued, but the delivery pass could not start ({e}); the next queue run will deliver it");
    }
}
