//! The sendmail command line.
//!
//! sendmail's syntax is POSIX getopt with sendmail's own letters, not what
//! an argument-parsing library offers: option letters cluster (`-ti`),
//! values are attached or in the next word (`-fbounce@x`, `-f bounce@x`),
//! `-o` and `-b` take their letter as an attached value, `-q` takes an
//! optional attached value only, and options stop at `--` or at the first
//! recipient (later words are recipients even when they start with `-`,
//! as with Postfix's `getopt("+...")`). `-h N` and `-V envid` are sendmail
//! options, not help and version flags. So this module parses by hand; the
//! rest of the program uses clap.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::envelope::{BodyType, DsnRequest, Notify, Ret, SecurityRecord, VerifyMethod};

/// What the invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `-bm` (the default): read a message and queue it.
    Deliver,
    /// `-bp`: list the queue.
    ListQueue,
    /// `-q...`: one queue run.
    QueueRun {
        /// Which messages.
        selection: QueueSelection,
        /// The interval of `-q30m`: sendmail's daemon interval, here only
        /// accepted (one run happens now; cron or `serve` repeats it).
        interval: Option<String>,
    },
    /// `-bi`, `-I`: rebuild the alias database.
    NewAliases,
    /// `-bs`: SMTP on standard input and output.
    SmtpStdin,
    /// A mode this agent does not have (`-bd`, `-bv`, ...), as written.
    Unsupported(String),
}

/// The messages a `-q` run attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSelection {
    /// Everything due.
    All,
    /// `-qI<id>`.
    Id(String),
    /// `-qR<site>`: recipients at this domain.
    Recipient(String),
    /// `-qS<sender>`.
    Sender(String),
}

/// A parsed sendmail command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendmailArgs {
    /// The mode.
    pub mode: Mode,
    /// `-t`: take recipients from the headers as well.
    pub extract_recipients: bool,
    /// `-i`, `-oi`: a line holding only "." is data, not the end.
    pub ignore_dots: bool,
    /// `-f`/`-r`: the envelope sender as given (`<>` or empty for the null
    /// sender).
    pub sender: Option<String>,
    /// `-F`: the full name for a generated `From:`.
    pub full_name: Option<String>,
    /// `-v`, counted.
    pub verbose: u8,
    /// `-C`: the configuration file.
    pub config_file: Option<PathBuf>,
    /// `-N`, `-R`, `-V`, `-B`.
    pub dsn: DsnRequest,
    /// `-O name=value` pairs, in order, names lower-cased.
    pub options: Vec<(String, String)>,
    /// TLS requirements asked for on the command line: `-O requiretls=yes`
    /// (Postfix's spelling) and `--require-tls`, and the finer options
    /// beyond RFC 8689 (`--require-dnssec`, `--tls-verify=`, `--tls-min=`
    /// and their `-O` forms).
    pub security: SecurityRecord,
    /// Recipient words, as given.
    pub recipients: Vec<String>,
}

impl Default for SendmailArgs {
    fn default() -> Self {
        Self {
            mode: Mode::Deliver,
            extract_recipients: false,
            ignore_dots: false,
            sender: None,
            full_name: None,
            verbose: 0,
            config_file: None,
            dsn: DsnRequest::default(),
            options: Vec::new(),
            security: SecurityRecord::default(),
            recipients: Vec::new(),
        }
    }
}

/// A command line that cannot be used; exit status 64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// An option letter sendmail does not have.
    #[error("unknown option -{0}")]
    UnknownOption(char),
    /// A long option the sendmail interface does not have.
    #[error("unknown option {0}")]
    UnknownLongOption(String),
    /// A long option with a value it cannot take.
    #[error("{option}: {message}")]
    BadLongValue {
        /// The option, as `--tls-min`.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// An option that needs a value came last.
    #[error("option -{0} needs a value")]
    MissingValue(char),
    /// A value an option cannot take.
    #[error("-{option}: {message}")]
    BadValue {
        /// The option letter.
        option: char,
        /// What is wrong.
        message: String,
    },
    /// A word is not valid UTF-8.
    #[error("argument {0:?} is not valid UTF-8")]
    NotUtf8(OsString),
    /// Recipients given to a mode that takes none.
    #[error("{0} takes no recipients")]
    UnexpectedRecipients(&'static str),
}

/// How an option letter takes its value.
enum Takes {
    /// No value; more letters may follow in the same word.
    Nothing,
    /// The rest of the word, else the next word.
    Value,
    /// The rest of the word only, possibly empty.
    AttachedOnly,
}

fn takes(letter: char) -> Option<Takes> {
    Some(match letter {
        't' | 'i' | 'v' | 'G' | 'U' | 'm' | 'n' | 'I' => Takes::Nothing,
        'f' | 'r' | 'F' | 'b' | 'o' | 'O' | 'N' | 'R' | 'V' | 'B' | 'L' | 'X' | 'h' | 'C' | 'A'
        | 'e' => Takes::Value,
        'q' | 'd' => Takes::AttachedOnly,
        _ => return None,
    })
}

/// Parses the words after the program name.
pub fn parse_sendmail_args(words: &[OsString]) -> Result<SendmailArgs, ArgsError> {
    let words: Vec<String> = words
        .iter()
        .map(|w| {
            w.to_str()
                .map(str::to_owned)
                .ok_or_else(|| ArgsError::NotUtf8(w.clone()))
        })
        .collect::<Result<_, _>>()?;
    let mut args = SendmailArgs::default();
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        i += 1;
        if word == "--" {
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (long, None),
            };
            let value = if attached.is_none() && long_takes_value(name) {
                let next = words.get(i).cloned();
                i += usize::from(next.is_some());
                next
            } else {
                attached
            };
            apply_long(&mut args, name, value)?;
            continue;
        }
        let Some(letters) = word.strip_prefix('-').filter(|l| !l.is_empty()) else {
            // The first recipient ends the options.
            i -= 1;
            break;
        };
        for (at, letter) in letters.char_indices() {
            let rest = &letters[at + letter.len_utf8()..];
            match takes(letter).ok_or(ArgsError::UnknownOption(letter))? {
                Takes::Nothing => apply_flag(&mut args, letter),
                Takes::AttachedOnly => {
                    apply_value(&mut args, letter, rest)?;
                    break;
                }
                Takes::Value => {
                    let value = if !rest.is_empty() {
                        rest.to_owned()
                    } else if i < words.len() {
                        i += 1;
                        words[i - 1].clone()
                    } else {
                        return Err(ArgsError::MissingValue(letter));
                    };
                    apply_value(&mut args, letter, &value)?;
                    break;
                }
            }
        }
    }
    args.recipients = words[i..].to_vec();
    if !args.recipients.is_empty() {
        let mode = match args.mode {
            Mode::ListQueue => Some("-bp"),
            Mode::QueueRun { .. } => Some("-q"),
            Mode::NewAliases => Some("-bi"),
            Mode::SmtpStdin => Some("-bs"),
            Mode::Deliver | Mode::Unsupported(_) => None,
        };
        if let Some(mode) = mode {
            return Err(ArgsError::UnexpectedRecipients(mode));
        }
    }
    Ok(args)
}

fn apply_flag(args: &mut SendmailArgs, letter: char) {
    match letter {
        't' => args.extract_recipients = true,
        'i' => args.ignore_dots = true,
        'v' => args.verbose = args.verbose.saturating_add(1),
        'I' => args.mode = Mode::NewAliases,
        // -G (gateway submission), -U (initial user submission), -m (send
        // to me too) and -n (no aliasing) change nothing for an agent that
        // neither delivers locally nor expands aliases lists.
        _ => {}
    }
}

fn apply_value(args: &mut SendmailArgs, letter: char, value: &str) -> Result<(), ArgsError> {
    let bad = |message: String| ArgsError::BadValue {
        option: letter,
        message,
    };
    match letter {
        'f' | 'r' => args.sender = Some(value.to_owned()),
        'F' => args.full_name = Some(value.to_owned()),
        'C' => args.config_file = Some(PathBuf::from(value)),
        'b' => args.mode = parse_mode(value),
        'q' => args.mode = parse_queue_run(value),
        // Any `-oi...` turns dot-termination off, as Postfix reads only the
        // first letter; every other sendmail `-o` option (`-oem`, `-odi`,
        // `-oA...`) is about local delivery and error modes that do not
        // apply here.
        'o' if value.starts_with('i') => args.ignore_dots = true,
        'O' => {
            let (name, val) = value.split_once('=').unwrap_or((value, ""));
            let name = name.trim().to_ascii_lowercase();
            if name == "ignoredots" && !matches!(val.trim(), "false" | "no" | "0") {
                args.ignore_dots = true;
            }
            apply_security_option(&mut args.security, &name, val.trim())
                .map_err(|m| bad(format!("{name}: {m}")))?;
            args.options.push((name, val.trim().to_owned()));
        }
        'N' => args.dsn.notify = Some(parse_notify(value).map_err(bad)?),
        'R' => {
            args.dsn.ret = Some(match value.to_ascii_lowercase().as_str() {
                "full" => Ret::Full,
                "hdrs" | "headers" => Ret::Hdrs,
                _ => return Err(bad(format!("{value:?}: expected full or hdrs"))),
            })
        }
        'V' => {
            // RFC 3461 §4.4: ENVID is at most 100 printable ASCII characters.
            let printable = value.bytes().all(|b| (0x21..=0x7e).contains(&b));
            if value.is_empty() || value.len() > 100 || !printable {
                return Err(bad(
                    "the envelope id must be 1 to 100 printable ASCII characters (RFC 3461 §4.4)"
                        .into(),
                ));
            }
            args.dsn.envid = Some(value.to_owned());
        }
        'B' => {
            args.dsn.body = Some(match value.to_ascii_uppercase().as_str() {
                "8BITMIME" => BodyType::EightBitMime,
                "7BIT" => BodyType::SevenBit,
                _ => return Err(bad(format!("{value:?}: expected 8BITMIME or 7BIT"))),
            })
        }
        // -L (syslog tag), -X (traffic log), -h (hop count), -A (which
        // submit.cf), -e (old error mode), -d (debug) are accepted and
        // ignored: smarthost's logging and loop detection are its own.
        _ => {}
    }
    Ok(())
}

fn parse_mode(value: &str) -> Mode {
    match value {
        "m" => Mode::Deliver,
        "p" => Mode::ListQueue,
        "s" => Mode::SmtpStdin,
        "i" => Mode::NewAliases,
        other => Mode::Unsupported(format!("-b{other}")),
    }
}

fn parse_queue_run(value: &str) -> Mode {
    let (selection, interval) = match value.chars().next() {
        None => (QueueSelection::All, None),
        Some('I') => (QueueSelection::Id(value[1..].to_owned()), None),
        Some('R') => (QueueSelection::Recipient(value[1..].to_owned()), None),
        Some('S') => (QueueSelection::Sender(value[1..].to_owned()), None),
        Some(_) => (QueueSelection::All, Some(value.to_owned())),
    };
    Mode::QueueRun {
        selection,
        interval,
    }
}

/// `-N never` or a comma list of `success`, `failure`, `delay`
/// (RFC 3461 §4.1: NEVER stands alone).
fn parse_notify(value: &str) -> Result<Vec<Notify>, String> {
    let mut out = Vec::new();
    for word in value.split(',').map(str::trim) {
        let notify = match word.to_ascii_lowercase().as_str() {
            "never" => Notify::Never,
            "success" => Notify::Success,
            "failure" => Notify::Failure,
            "delay" => Notify::Delay,
            _ => {
                return Err(format!(
                    "{word:?}: expected never, or a list of success, failure, delay"
                ))
            }
        };
        if !out.contains(&notify) {
            out.push(notify);
        }
    }
    if out.contains(&Notify::Never) && out.len() > 1 {
        return Err("never cannot be combined with other values (RFC 3461 §4.1)".into());
    }
    Ok(out)
}

/// The long options of the sendmail interface that take a value.
fn long_takes_value(name: &str) -> bool {
    matches!(name, "tls-verify" | "tls-min")
}

/// Applies a long option: the TLS requirements a message carries.
fn apply_long(args: &mut SendmailArgs, name: &str, value: Option<String>) -> Result<(), ArgsError> {
    let bad = |message: String| ArgsError::BadLongValue {
        option: format!("--{name}"),
        message,
    };
    let key = match name {
        "require-tls" => "requiretls",
        "require-dnssec" => "require_dnssec",
        "tls-verify" => "tls_verify",
        "tls-min" => "tls_min",
        _ => return Err(ArgsError::UnknownLongOption(format!("--{name}"))),
    };
    let value = match (key, value) {
        ("requiretls" | "require_dnssec", None) => "yes".to_owned(),
        (_, Some(v)) => v,
        (_, None) => return Err(bad("needs a value".into())),
    };
    apply_security_option(&mut args.security, key, &value).map_err(bad)
}

/// Applies one TLS requirement given as `-O name=value` or a long option.
/// Names that are not TLS requirements are left alone (other `-O` options
/// are accepted and ignored). Requirements only add up: `requiretls=no`
/// after `requiretls=yes` does not remove it.
fn apply_security_option(
    security: &mut SecurityRecord,
    name: &str,
    value: &str,
) -> Result<(), String> {
    let yes = || match value.to_ascii_lowercase().as_str() {
        "" | "yes" | "true" | "1" | "on" => Ok(true),
        "no" | "false" | "0" | "off" => Ok(false),
        _ => Err(format!("{value:?}: expected yes or no")),
    };
    match name {
        "requiretls" => security.requiretls |= yes()?,
        "require_dnssec" => security.require_dnssec |= yes()?,
        "tls_verify" => {
            let method = match value.to_ascii_lowercase().as_str() {
                "dane" => VerifyMethod::Dane,
                "pkix" => VerifyMethod::Pkix,
                "any" => VerifyMethod::Any,
                _ => return Err(format!("{value:?}: expected dane, pkix or any")),
            };
            security.tls_verify = match (security.tls_verify, method) {
                (Some(a), b) if a != b && a != VerifyMethod::Any && b != VerifyMethod::Any => {
                    return Err("dane and pkix cannot both be required".into())
                }
                (Some(a), VerifyMethod::Any) => Some(a),
                _ => Some(method),
            };
        }
        "tls_min" => {
            let version = match value {
                "1.2" | "TLSv1.2" => "1.2",
                "1.3" | "TLSv1.3" => "1.3",
                _ => return Err(format!("{value:?}: expected 1.2 or 1.3")),
            };
            if security.tls_min.as_deref() != Some("1.3") {
                security.tls_min = Some(version.to_owned());
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<SendmailArgs, ArgsError> {
        let words: Vec<OsString> = words.iter().map(OsString::from).collect();
        parse_sendmail_args(&words)
    }

    #[test]
    fn cronie_command_line() {
        let a = parse(&[
            "-FCronDaemon",
            "-i",
            "-odi",
            "-oem",
            "-oi",
            "-t",
            "-f",
            "root",
        ])
        .unwrap();
        assert_eq!(a.full_name.as_deref(), Some("CronDaemon"));
        assert!(a.ignore_dots && a.extract_recipients);
        assert_eq!(a.sender.as_deref(), Some("root"));
        assert!(a.recipients.is_empty());
        assert_eq!(a.mode, Mode::Deliver);
    }

    #[test]
    fn debian_cron_with_body_type_and_comma_list() {
        let a = parse(&[
            "-i",
            "-FCronDaemon",
            "-B8BITMIME",
            "-oem",
            "a@x.org,b@y.org",
        ])
        .unwrap();
        assert_eq!(a.dsn.body, Some(BodyType::EightBitMime));
        assert_eq!(a.recipients, ["a@x.org,b@y.org"]);
    }

    #[test]
    fn mutt_with_dsn_and_double_dash() {
        let a = parse(&[
            "-oem",
            "-oi",
            "-B8BITMIME",
            "-f",
            "me@x.org",
            "-N",
            "failure,delay",
            "-R",
            "hdrs",
            "--",
            "-odd@x.org",
            "b@y.org",
        ])
        .unwrap();
        assert_eq!(a.dsn.notify, Some(vec![Notify::Failure, Notify::Delay]));
        assert_eq!(a.dsn.ret, Some(Ret::Hdrs));
        assert_eq!(a.recipients, ["-odd@x.org", "b@y.org"]);
    }

    #[test]
    fn php_attached_sender_and_clustered_flags() {
        let a = parse(&["-ti", "-fbounce@example.org"]).unwrap();
        assert!(a.extract_recipients && a.ignore_dots);
        assert_eq!(a.sender.as_deref(), Some("bounce@example.org"));
    }

    #[test]
    fn options_stop_at_the_first_recipient() {
        let a = parse(&["-i", "a@x.org", "-t"]).unwrap();
        assert!(!a.extract_recipients);
        assert_eq!(a.recipients, ["a@x.org", "-t"]);
    }

    #[test]
    fn null_sender_forms() {
        assert_eq!(parse(&["-f", "<>"]).unwrap().sender.as_deref(), Some("<>"));
        assert_eq!(parse(&["-f", ""]).unwrap().sender.as_deref(), Some(""));
        assert_eq!(parse(&["-r<>"]).unwrap().sender.as_deref(), Some("<>"));
    }

    #[test]
    fn oi_with_anything_ignores_dots() {
        assert!(parse(&["-oitrue"]).unwrap().ignore_dots);
        assert!(parse(&["-o", "i"]).unwrap().ignore_dots);
        assert!(!parse(&["-oem"]).unwrap().ignore_dots);
        assert!(parse(&["-O", "IgnoreDots"]).unwrap().ignore_dots);
    }

    #[test]
    fn h_and_v_are_sendmail_options_not_help_or_version() {
        let a = parse(&["-h", "17", "-V", "env-1", "x@y.org"]).unwrap();
        assert_eq!(a.dsn.envid.as_deref(), Some("env-1"));
        assert_eq!(a.recipients, ["x@y.org"]);
    }

    #[test]
    fn queue_runs() {
        let run = |w: &[&str]| parse(w).unwrap().mode;
        assert_eq!(
            run(&["-q"]),
            Mode::QueueRun {
                selection: QueueSelection::All,
                interval: None
            }
        );
        assert_eq!(
            run(&["-q30m"]),
            Mode::QueueRun {
                selection: QueueSelection::All,
                interval: Some("30m".into())
            }
        );
        assert_eq!(
            run(&["-qIABC"]),
            Mode::QueueRun {
                selection: QueueSelection::Id("ABC".into()),
                interval: None
            }
        );
        assert_eq!(
            run(&["-qRexample.org"]),
            Mode::QueueRun {
                selection: QueueSelection::Recipient("example.org".into()),
                interval: None
            }
        );
        assert!(matches!(
            run(&["-qSme@x"]),
            Mode::QueueRun {
                selection: QueueSelection::Sender(_),
                ..
            }
        ));
    }

    #[test]
    fn modes() {
        assert_eq!(parse(&["-bp"]).unwrap().mode, Mode::ListQueue);
        assert_eq!(parse(&["-bs"]).unwrap().mode, Mode::SmtpStdin);
        assert_eq!(parse(&["-bi"]).unwrap().mode, Mode::NewAliases);
        assert_eq!(parse(&["-I"]).unwrap().mode, Mode::NewAliases);
        assert_eq!(parse(&["-bm", "a@b.c"]).unwrap().mode, Mode::Deliver);
        assert_eq!(
            parse(&["-bd"]).unwrap().mode,
            Mode::Unsupported("-bd".into())
        );
        assert_eq!(
            parse(&["-bv", "a@b.c"]).unwrap().mode,
            Mode::Unsupported("-bv".into())
        );
    }

    #[test]
    fn usage_errors() {
        assert_eq!(parse(&["-Z"]), Err(ArgsError::UnknownOption('Z')));
        assert_eq!(
            parse(&["--help"]),
            Err(ArgsError::UnknownLongOption("--help".into()))
        );
        assert_eq!(parse(&["-i", "-f"]), Err(ArgsError::MissingValue('f')));
        assert!(matches!(
            parse(&["-N", "sometimes"]),
            Err(ArgsError::BadValue { option: 'N', .. })
        ));
        assert!(matches!(
            parse(&["-N", "never,success"]),
            Err(ArgsError::BadValue { .. })
        ));
        assert!(matches!(
            parse(&["-R", "some"]),
            Err(ArgsError::BadValue { .. })
        ));
        assert!(matches!(
            parse(&["-B", "BINARYMIME"]),
            Err(ArgsError::BadValue { .. })
        ));
        let long = "x".repeat(101);
        assert!(matches!(
            parse(&["-V", &long]),
            Err(ArgsError::BadValue { .. })
        ));
        assert_eq!(
            parse(&["-bp", "a@b.c"]),
            Err(ArgsError::UnexpectedRecipients("-bp"))
        );
    }

    #[test]
    fn ignored_options_consume_their_value() {
        let a = parse(&[
            "-L", "tag", "-X", "/tmp/log", "-A", "c", "-G", "-U", "-m", "-n", "a@b.c",
        ])
        .unwrap();
        assert_eq!(a.recipients, ["a@b.c"]);
    }

    #[test]
    fn o_options_are_kept() {
        let a = parse(&["-O", "RequireTLS=yes", "-OSMTPUTF8"]).unwrap();
        assert_eq!(
            a.options,
            [
                ("requiretls".to_owned(), "yes".to_owned()),
                ("smtputf8".to_owned(), String::new())
            ]
        );
    }

    #[test]
    fn requiretls_from_postfix_option_and_long_option_rfc8689_section_4_3() {
        assert!(
            parse(&["-O", "requiretls=yes"])
                .unwrap()
                .security
                .requiretls
        );
        assert!(parse(&["-ORequireTLS=yes"]).unwrap().security.requiretls);
        assert!(
            parse(&["--require-tls", "bob@example.org"])
                .unwrap()
                .security
                .requiretls
        );
        assert!(!parse(&["-O", "requiretls=no"]).unwrap().security.requiretls);
        assert!(parse(&["-O", "requiretls=maybe"]).is_err());
    }

    #[test]
    fn finer_tls_options_long_and_o_forms() {
        let a = parse(&[
            "--require-dnssec",
            "--tls-verify=dane",
            "--tls-min",
            "1.3",
            "bob@example.org",
        ])
        .unwrap();
        assert!(a.security.require_dnssec);
        assert_eq!(a.security.tls_verify, Some(VerifyMethod::Dane));
        assert_eq!(a.security.tls_min.as_deref(), Some("1.3"));
        assert_eq!(a.recipients, ["bob@example.org"]);
        let o = parse(&[
            "-O",
            "require_dnssec=yes",
            "-O",
            "tls_verify=pkix",
            "-Otls_min=1.2",
        ])
        .unwrap();
        assert!(o.security.require_dnssec);
        assert_eq!(o.security.tls_verify, Some(VerifyMethod::Pkix));
        assert_eq!(o.security.tls_min.as_deref(), Some("1.2"));
        // Requirements add up and never weaken.
        let up = parse(&[
            "--tls-min=1.3",
            "--tls-min=1.2",
            "-O",
            "requiretls=yes",
            "-O",
            "requiretls=no",
        ])
        .unwrap();
        assert_eq!(up.security.tls_min.as_deref(), Some("1.3"));
        assert!(up.security.requiretls);
        assert!(parse(&["--tls-verify=dane", "--tls-verify=pkix"]).is_err());
        assert!(matches!(
            parse(&["--tls-min=1.1"]),
            Err(ArgsError::BadLongValue { .. })
        ));
        assert!(matches!(
            parse(&["--tls-verify"]),
            Err(ArgsError::BadLongValue { .. })
        ));
        assert_eq!(
            parse(&["--tls-max=1.3"]),
            Err(ArgsError::UnknownLongOption("--tls-max".into()))
        );
    }
}
