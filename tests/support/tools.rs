//! Outside programs the interoperability tests drive (swaks, Postfix), how
//! to find them, and how a test that cannot run says so.
//!
//! A test whose tools are missing skips: it prints one `SKIPPED` line and
//! returns, so the suite stays green on a machine without them. `.ci/run`
//! installs them where it can (`.ci/install-test-tools`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::env::{run_command, Output};

/// Where Debian keeps administrator commands; not always on a test's PATH.
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin"];

/// Says why `test` does not run, on the real standard error.
///
/// libtest captures `eprintln!` and shows it only for failed tests; a skip
/// must be seen in a passing run's log too, so this writes to the stream
/// itself.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// The path of the executable `name`, from PATH or the usual sbin
/// directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether the tests run as root (a private Postfix instance needs it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// swaks, the SMTP test client, with TLS support (Net::SSLeay).
#[derive(Clone, Debug)]
pub struct Swaks {
    path: PathBuf,
}

impl Swaks {
    /// swaks, or why it cannot be used.
    pub fn find() -> Result<Self, String> {
        static FOUND: OnceLock<Result<Swaks, String>> = OnceLock::new();
        FOUND.get_or_init(Self::probe).clone()
    }

    fn probe() -> Result<Self, String> {
        let path = find_program("swaks").ok_or("swaks is not installed")?;
        // `--support` lists each optional feature as "=== X supported" or
        // "*** X not available: requires ...".
        let mut cmd = Command::new(&path);
        cmd.arg("--support");
        let support = run_command(cmd, b"");
        let all = format!("{}{}", support.stdout, support.stderr);
        if !all.contains("TLS supported") {
            return Err(format!(
                "swaks has no TLS support (install libnet-ssleay-perl): {}",
                all.trim()
            ));
        }
        Ok(Self { path })
    }

    /// Runs `swaks <args>` with empty input and returns what it printed.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.path);
        cmd.args(args);
        run_command(cmd, b"")
    }
}
