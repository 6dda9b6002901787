//! A private Postfix instance that relays everything it receives to one
//! relayhost, for tests of smarthost against a real MTA.
//!
//! Each instance has its own configuration, queue and data directories in a
//! temporary directory (`postfix -c DIR start`), an smtpd on 127.0.0.1 and a
//! port of its own, no local delivery, and is stopped when dropped, also
//! when the test panics. The system Postfix is neither used nor touched.
//!
//! Postfix runs its daemons as `mail_owner` after starting as root, so this
//! needs root and the `postfix` user and `postdrop` group that the Debian
//! package creates.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, Group, Pid, User};

use super::env::{run_command, Output};
use super::fake_mx::free_port_on;
use super::tools::{find_program, is_root};

/// How long Postfix may take to listen after `postfix start`, and its
/// processes to go after `postfix stop`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The services a relay-only Postfix needs, none chrooted (the Debian
/// package's master.cf chroots them into the system queue directory).
/// `{smtpd}` is the smtpd port.
const MASTER_CF: &str = "\
{smtpd}   inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// The name the instance uses for itself (EHLO, Received:).
pub const POSTFIX_HOSTNAME: &str = "postfix.example.net";

/// Why a Postfix instance cannot be started here, or `None` when it can.
pub fn postfix_unavailable() -> Option<String> {
    if find_program("postfix").is_none() || find_program("postconf").is_none() {
        return Some("postfix and postconf are not installed".to_string());
    }
    if !is_root() {
        return Some("a private Postfix instance needs root".to_string());
    }
    if !matches!(User::from_name("postfix"), Ok(Some(_))) {
        return Some("there is no user `postfix`".to_string());
    }
    if !matches!(Group::from_name("postdrop"), Ok(Some(_))) {
        return Some("there is no group `postdrop`".to_string());
    }
    None
}

/// A running private Postfix instance.
pub struct Postfix {
    dir: tempfile::TempDir,
    config_dir: PathBuf,
    /// Where its smtpd listens.
    pub smtpd: SocketAddr,
}

impl Postfix {
    /// Starts an instance that relays all mail to `relayhost` (as
    /// `relayhost = [IP]:PORT`), with opportunistic TLS, and `extra_main_cf`
    /// appended to main.cf. Returns `Err` with the reason when Postfix
    /// cannot run here (see [`postfix_unavailable`]); panics when it is there
    /// but does not start.
    pub fn start(relayhost: SocketAddr, extra_main_cf: &str) -> Result<Self, String> {
        if let Some(reason) = postfix_unavailable() {
            return Err(reason);
        }
        let dir = tempfile::Builder::new()
            .prefix("smarthost-postfix-")
            .tempdir()
            .expect("create the Postfix directory");
        let port = free_port_on(&[Ipv4Addr::LOCALHOST]);
        let postfix = Self {
            config_dir: dir.path().join("etc"),
            smtpd: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            dir,
        };
        postfix.write_config(relayhost, extra_main_cf);
        let out = postfix.postfix(&["start"]);
        assert_eq!(
            out.status,
            0,
            "postfix start failed: {}{}\nlog:\n{}",
            out.stdout,
            out.stderr,
            postfix.log()
        );
        postfix.wait_until_listening();
        Ok(postfix)
    }

    fn write_config(&self, relayhost: SocketAddr, extra_main_cf: &str) {
        use std::os::unix::fs::PermissionsExt;
        let root = self.dir.path();
        // Postfix's daemons run as `postfix` and must reach the queue and
        // data directories through this one.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
            .expect("open the Postfix directory to its daemons");
        let queue = root.join("queue");
        let data = root.join("data");
        for d in [&self.config_dir, &queue, &data] {
            std::fs::create_dir(d).expect("create a Postfix directory");
        }
        let owner = User::from_name("postfix")
            .ok()
            .flatten()
            .expect("the postfix user");
        chown(&data, Some(owner.uid), None).expect("give data_directory to postfix");
        let main_cf = main_cf(root, &queue, &data, relayhost, extra_main_cf);
        std::fs::write(self.config_dir.join("main.cf"), main_cf).expect("write main.cf");
        let master_cf = MASTER_CF.replace("{smtpd}", &format!("{:<9}", self.smtpd.port()));
        std::fs::write(self.config_dir.join("master.cf"), master_cf).expect("write master.cf");
    }

    /// Runs `postfix -c DIR <args>`.
    pub fn postfix(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(find_program("postfix").expect("postfix is installed"));
        cmd.arg("-c").arg(&self.config_dir).args(args);
        run_command(cmd, b"")
    }

    /// A command running this instance's own `sendmail -C DIR <args>`
    /// (`sendmail_path`, so never smarthost's `sendmail` link).
    pub fn sendmail_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.parameter("sendmail_path"));
        cmd.arg("-C").arg(&self.config_dir).args(args);
        cmd
    }

    /// Injects `message` with this instance's `sendmail -C DIR <args>`.
    pub fn sendmail(&self, args: &[&str], message: &[u8]) -> Output {
        run_command(self.sendmail_command(args), message)
    }

    /// The value of a main.cf parameter, from `postconf -c DIR -h NAME`.
    pub fn parameter(&self, name: &str) -> String {
        let mut cmd = Command::new(find_program("postconf").expect("postconf is installed"));
        cmd.arg("-c").arg(&self.config_dir).arg("-h").arg(name);
        let out = run_command(cmd, b"");
        assert_eq!(out.status, 0, "postconf {name}: {}", out.stderr);
        out.stdout.trim().to_string()
    }

    /// Runs `postqueue -c DIR -p`: the instance's queue listing.
    pub fn mailq(&self) -> String {
        let Some(postqueue) = find_program("postqueue") else {
            return "(postqueue is not installed)".to_string();
        };
        let mut cmd = Command::new(postqueue);
        cmd.arg("-c").arg(&self.config_dir).arg("-p");
        let out = run_command(cmd, b"");
        format!("{}{}", out.stdout, out.stderr)
    }

    /// The instance's log so far (`maillog_file`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postfix.log"))
            .unwrap_or_else(|e| format!("(no Postfix log: {e})"))
    }

    /// What to print when a test fails: the log and the queue.
    pub fn diagnostics(&self) -> String {
        format!(
            "Postfix log:\n{}\nPostfix queue:\n{}",
            self.log(),
            self.mailq()
        )
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&self.smtpd, Duration::from_secs(1)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Postfix did not listen on {} within {START_TIMEOUT:?}\nlog:\n{}",
                self.smtpd,
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The instance's configuration directory (`postfix -c DIR`).
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    fn processes(&self) -> Vec<Pid> {
        instance_processes(&self.config_dir)
    }

    fn wait_for_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.processes().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postfix {
    /// `postfix stop`; whatever is still running after that is killed, so
    /// that no test leaves Postfix processes behind.
    fn drop(&mut self) {
        let _ = self.postfix(&["stop"]);
        if !self.wait_for_exit(STOP_TIMEOUT) {
            let _ = self.postfix(&["abort"]);
            for pid in self.processes() {
                let _ = kill(pid, Signal::SIGKILL);
            }
            self.wait_for_exit(STOP_TIMEOUT);
        }
        if thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("Postfix directory kept: {}", self.dir.path().display());
        }
    }
}

/// The processes of the instance configured in `config_dir`: every process
/// whose environment holds `MAIL_CONFIG=<config_dir>`, which `postfix -c`
/// gives master and master passes to each daemon. No other process matches.
pub fn instance_processes(config_dir: &Path) -> Vec<Pid> {
    let marker = format!("MAIL_CONFIG={}", config_dir.display()).into_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker))
        })
        .map(Pid::from_raw)
        .collect()
}

/// main.cf for a relay-only instance rooted at `root`.
fn main_cf(root: &Path, queue: &Path, data: &Path, relayhost: SocketAddr, extra: &str) -> String {
    // `inet_interfaces` must name an address that an interface carries, or
    // master refuses to start; on Linux the loopback interface carries
    // 127.0.0.1/8, and only 127.0.0.1 itself counts.
    format!(
        "compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = {POSTFIX_HOSTNAME}
mydomain = example.net
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 this instance delivers nothing locally
alias_maps =
alias_database =
relayhost = [{ip}]:{port}
smtp_tls_security_level = may
smtp_tls_loglevel = 1
maillog_file = {log}
maillog_file_prefixes = {root}
syslog_name = postfix-test
{extra}
",
        queue = queue.display(),
        data = data.display(),
        ip = relayhost.ip(),
        port = relayhost.port(),
        log = root.join("postfix.log").display(),
        root = root.display(),
    )
}
