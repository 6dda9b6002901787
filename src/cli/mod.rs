//! The command line: `smarthost <command>`, and the `sendmail`, `mailq` and
//! `newaliases` personalities chosen by the program name.
//!
//! Each command returns a sysexits status; nothing here panics on bad
//! input. The `sendmail` interface has its own parser
//! ([`crate::submission::args`]) because its option syntax is sendmail's,
//! not clap's.

/// `println!` that does not panic when standard output is closed (a
/// reader such as `head` went away): the rest of the output is dropped.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that does not panic when standard output is closed.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

mod queue_cmd;
mod sendmail;
mod serve;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::exitcode;

/// Outbound-only mail delivery agent with REQUIRETLS, DANE and PKIX.
#[derive(Debug, Parser)]
#[command(name = "smarthost", version, about)]
struct Cli {
    /// Configuration file (default /etc/smarthost/smarthost.toml, or
    /// $SMARTHOST_CONFIG).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Submit a message read from standard input (sendmail-compatible
    /// options; `smarthost sendmail -t < message`).
    #[command(disable_help_flag = true)]
    Sendmail {
        /// sendmail options and recipients.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// List the queue (same as `queue list` and `sendmail -bp`).
    Mailq,
    /// Queue administration and delivery runs.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Run the relayhost listener and deliver continuously: an ESMTP
    /// server for the local MTA on `[listen] addresses` (STARTTLS,
    /// REQUIRETLS, DSN, AUTH over TLS). Holds the queue until SIGTERM;
    /// SIGHUP reloads the configuration.
    Serve,
    /// Show what a delivery to DOMAIN would do and why, per MX host,
    /// without sending mail (DNS, DNSSEC, TLSA, EHLO, STARTTLS, EHLO,
    /// QUIT). Exit status 0: a message could be delivered now; 1: it could
    /// not; 75: DNS failed temporarily.
    Probe {
        /// The recipient domain.
        domain: String,
        /// Probe for a REQUIRETLS message (RFC 8689).
        #[arg(long)]
        require_tls: bool,
        /// Probe for a message that requires a DNSSEC-validated MX.
        #[arg(long)]
        require_dnssec: bool,
        /// Restrict the certificate check to one method.
        #[arg(long, value_name = "dane|pkix|any")]
        tls_verify: Option<String>,
        /// The lowest TLS version.
        #[arg(long, value_name = "1.2|1.3")]
        tls_min: Option<String>,
        /// Probe for a message marked `TLS-Required: No` (RFC 8689 §3).
        #[arg(long)]
        tls_required_no: bool,
        /// The envelope sender, for `[[rule]]` entries that match senders.
        #[arg(long, value_name = "ADDRESS", default_value = "")]
        sender: String,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// List queued messages with each recipient's state and last result.
    List {
        /// Print the listing as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Deliver due messages once, then exit (what cron runs).
    Run {
        /// Attempt every queued message now, due or not.
        #[arg(long)]
        all: bool,
        /// Attempt only this queue id (may be repeated).
        #[arg(long = "id", value_name = "QUEUE_ID")]
        ids: Vec<String>,
        /// Attempt only messages with recipients in this domain (may be repeated).
        #[arg(long = "domain", value_name = "DOMAIN")]
        domains: Vec<String>,
        /// Log to the journal (or the queue's log file) instead of stderr;
        /// used for the pass started after a submission.
        #[arg(long, hide = true)]
        detached: bool,
    },
    /// Show everything stored about one message.
    Show {
        /// The queue id.
        id: String,
        /// Print the stored record as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Remove messages from the queue, with no report to the sender.
    Delete {
        /// Queue ids.
        #[arg(value_name = "QUEUE_ID", required_unless_present = "all")]
        ids: Vec<String>,
        /// Every queued message.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Fail a message's pending recipients and report it to the sender.
    Bounce {
        /// Queue ids.
        #[arg(value_name = "QUEUE_ID", required = true)]
        ids: Vec<String>,
    },
    /// Stop attempting messages until they are released.
    Hold {
        /// Queue ids.
        #[arg(value_name = "QUEUE_ID", required = true)]
        ids: Vec<String>,
    },
    /// Attempt held messages again.
    Release {
        /// Queue ids.
        #[arg(value_name = "QUEUE_ID", required = true)]
        ids: Vec<String>,
    },
    /// Deliver messages now, due or not (held ones are released).
    Retry {
        /// Queue ids.
        #[arg(value_name = "QUEUE_ID", required_unless_present = "all")]
        ids: Vec<String>,
        /// Every queued message.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Look for damage without changing anything: unreadable store records
    /// or queue files, files without entries and entries without files,
    /// files set aside in corrupt/, abandoned temporary files. Exit status
    /// 0 when none is found, 65 when some are (one line each on stdout),
    /// 75 while a queue run holds the store.
    Check,
    /// Create the queue directory with the permissions of a system install.
    Init {
        /// Group that may write the maildrop (through a setgid
        /// `smarthost`); without it the maildrop is world-writable and sticky.
        #[arg(long)]
        group: Option<String>,
    },
}

/// Runs the program; returns the exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    let program = args
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let rest = args.get(1..).unwrap_or_default().to_vec();
    match program.as_str() {
        "sendmail" | "send-mail" => sendmail::main(&rest),
        "mailq" => {
            if !rest.is_empty() {
                eprintln!("mailq: takes no arguments");
                return exitcode::USAGE;
            }
            with_config(None, |c| queue_cmd::list(c, false))
        }
        "newaliases" => sendmail::newaliases(),
        _ => main_cli(args),
    }
}

fn main_cli(mut args: Vec<OsString>) -> i32 {
    // clap takes a `--` right after the subcommand as its own end of
    // options and drops it, so `smarthost sendmail -- -odd@example.org`
    // would reach sendmail's parser as the option `-o`. The words after
    // `sendmail` therefore go to that parser exactly as given, as they do
    // when the binary runs under the name `sendmail`.
    let sendmail_words = sendmail_subcommand_at(&args).map(|at| args.split_off(at + 1));
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exitcode::USAGE
            } else {
                exitcode::OK
            };
            let _ = e.print();
            return code;
        }
    };
    let config = cli.config.as_deref();
    match cli.command {
        Command::Sendmail { args: parsed } => {
            let mut args = sendmail_words.unwrap_or(parsed);
            if let Some(path) = config {
                args.splice(0..0, [OsString::from("-C"), path.into()]);
            }
            sendmail::main(&args)
        }
        Command::Probe {
            domain,
            require_tls,
            require_dnssec,
            tls_verify,
            tls_min,
            tls_required_no,
            sender,
        } => {
            let record = match probe_record(
                require_tls,
                require_dnssec,
                tls_verify,
                tls_min,
                tls_required_no,
            ) {
                Ok(r) => r,
                Err(message) => {
                    eprintln!("smarthost probe: {message}");
                    return exitcode::USAGE;
                }
            };
            with_config(config, |c| queue_cmd::probe(c, &domain, &sender, &record))
        }
        Command::Serve => {
            let explicit = config.map(Path::to_owned);
            with_config(config, |c| serve::main(c, explicit))
        }
        Command::Mailq => with_config(config, |c| queue_cmd::list(c, false)),
        Command::Queue(QueueCommand::List { json }) => {
            with_config(config, |c| queue_cmd::list(c, json))
        }
        Command::Queue(QueueCommand::Show { id, json }) => {
            with_config(config, |c| queue_cmd::show(c, &id, json))
        }
        Command::Queue(QueueCommand::Delete { ids, all }) => with_config(config, |c| {
            queue_cmd::admin(c, crate::queue::admin::AdminAction::Delete, &ids, all)
        }),
        Command::Queue(QueueCommand::Bounce { ids }) => with_config(config, |c| {
            queue_cmd::admin(c, crate::queue::admin::AdminAction::Bounce, &ids, false)
        }),
        Command::Queue(QueueCommand::Hold { ids }) => with_config(config, |c| {
            queue_cmd::admin(c, crate::queue::admin::AdminAction::Hold, &ids, false)
        }),
        Command::Queue(QueueCommand::Release { ids }) => with_config(config, |c| {
            queue_cmd::admin(c, crate::queue::admin::AdminAction::Release, &ids, false)
        }),
        Command::Queue(QueueCommand::Retry { ids, all }) => with_config(config, |c| {
            queue_cmd::admin(c, crate::queue::admin::AdminAction::Retry, &ids, all)
        }),
        Command::Queue(QueueCommand::Check) => with_config(config, queue_cmd::check),
        Command::Queue(QueueCommand::Init { group }) => {
            with_config(config, |c| queue_cmd::init(c, group.as_deref()))
        }
        Command::Queue(QueueCommand::Run {
            all,
            ids,
            domains,
            detached,
        }) => {
            let options = crate::delivery::run::RunOptions { all, ids, domains };
            with_config(config, |c| queue_cmd::run(c, &options, detached))
        }
    }
}

/// The security record `probe` pretends the message has.
fn probe_record(
    requiretls: bool,
    require_dnssec: bool,
    tls_verify: Option<String>,
    tls_min: Option<String>,
    tls_optional: bool,
) -> Result<crate::envelope::SecurityRecord, String> {
    use crate::envelope::VerifyMethod;
    let tls_verify = match tls_verify.as_deref() {
        None => None,
        Some("dane") => Some(VerifyMethod::Dane),
        Some("pkix") => Some(VerifyMethod::Pkix),
        Some("any") => Some(VerifyMethod::Any),
        Some(other) => {
            return Err(format!(
                "--tls-verify {other:?}: expected dane, pkix or any"
            ))
        }
    };
    let tls_min = match tls_min.as_deref() {
        None => None,
        Some(v @ ("1.2" | "1.3")) => Some(v.to_owned()),
        Some(other) => return Err(format!("--tls-min {other:?}: expected 1.2 or 1.3")),
    };
    Ok(crate::envelope::SecurityRecord {
        requiretls,
        tls_optional,
        require_dnssec,
        tls_verify,
        tls_min,
    })
}

/// The index of the `sendmail` subcommand word, when only the global
/// `-c FILE` / `--config FILE` options come before it.
fn sendmail_subcommand_at(args: &[OsString]) -> Option<usize> {
    let mut at = 1;
    while let Some(word) = args.get(at) {
        match word.to_str()? {
            "sendmail" => return Some(at),
            "-c" | "--config" => at += 2,
            w if w.starts_with("--config=") || (w.starts_with("-c") && w.len() > 2) => at += 1,
            _ => return None,
        }
    }
    None
}

/// Loads the configuration (explicit path, else `$SMARTHOST_CONFIG`, else
/// the default file) and runs `f` with it; a bad configuration is EX_CONFIG.
fn with_config(explicit: Option<&Path>, f: impl FnOnce(&Config) -> i32) -> i32 {
    match load_config(explicit) {
        Ok(config) => f(&config),
        Err(e) => {
            eprintln!("smarthost: {e}");
            exitcode::CONFIG
        }
    }
}

/// The configuration file to read: an explicit path, else
/// `$SMARTHOST_CONFIG`, else the default.
fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit.map(Path::to_owned).or_else(|| {
        std::env::var_os("SMARTHOST_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

fn load_config(explicit: Option<&Path>) -> Result<Config, crate::config::ConfigError> {
    Config::load(config_path(explicit).as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<OsString> {
        w.iter().map(OsString::from).collect()
    }

    #[test]
    fn sendmail_subcommand_is_found_after_global_options_only() {
        let at = |w: &[&str]| sendmail_subcommand_at(&words(w));
        assert_eq!(at(&["smarthost", "sendmail", "--", "-odd@x.org"]), Some(1));
        assert_eq!(
            at(&["smarthost", "-c", "f.toml", "sendmail", "-t"]),
            Some(3)
        );
        assert_eq!(at(&["smarthost", "--config", "f", "sendmail"]), Some(3));
        assert_eq!(at(&["smarthost", "--config=f", "sendmail"]), Some(2));
        assert_eq!(at(&["smarthost", "-cf.toml", "sendmail"]), Some(2));
        assert_eq!(at(&["smarthost", "mailq"]), None);
        assert_eq!(at(&["smarthost", "-c", "sendmail"]), None);
        assert_eq!(at(&["smarthost", "queue", "run", "sendmail"]), None);
    }
}
