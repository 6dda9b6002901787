//! `smarthost serve` as a child process: started on a test's
//! configuration, waited for until it listens, and stopped with SIGTERM.
//!
//! Tests use it as a black box: they talk SMTP to it and look at what
//! arrives at the fake MX hosts.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::env::{run_command, TestEnv};

/// How long `serve` may take to listen, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why `smarthost serve` cannot be tested, or `None` when it can: the
/// binary has the subcommand when `smarthost serve --help` exits 0.
pub fn serve_unavailable() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_smarthost"));
            cmd.args(["serve", "--help"]);
            let out = run_command(cmd, b"");
            (out.status != 0).then(|| {
                format!(
                    "this smarthost has no `serve` (`smarthost serve --help` exited {})",
                    out.status
                )
            })
        })
        .clone()
}

/// A running `smarthost serve`; it is stopped when dropped.
pub struct Serve {
    child: Option<Child>,
    /// The address it was told to listen on.
    pub addr: SocketAddr,
    log_path: PathBuf,
}

impl Serve {
    /// Starts `smarthost -c <config> serve` in `env`, with its log in
    /// `<dir>/serve.log`, and waits until `addr` (which the configuration's
    /// `[listen] addresses` must hold) accepts connections.
    pub fn start(env: &TestEnv, addr: SocketAddr) -> Self {
        let log_path = env.dir.path().join("serve.log");
        let log = File::create(&log_path).expect("create the serve log");
        let config = env.config_path.to_string_lossy().into_owned();
        let mut cmd = env.cmd(&["-c", &config, "serve"]);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("share the serve log"))
            .stderr(log);
        let child = cmd.spawn().expect("start smarthost serve");
        let mut serve = Self {
            child: Some(child),
            addr,
            log_path,
        };
        serve.wait_until_listening();
        serve
    }

    /// What `serve` has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and returns the exit code (128 + signal when killed).
    ///
    /// # Panics
    /// When it does not exit within 20 seconds; it is then killed.
    pub fn stop(&mut self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let Some(mut child) = self.child.take() else {
            panic!("serve was already stopped");
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid fits in i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for serve") {
                return status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "serve did not exit within {STOP_TIMEOUT:?} of SIGTERM\nlog:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
                return;
            }
            let child = self.child.as_mut().expect("serve is running");
            if let Some(status) = child.try_wait().expect("wait for serve") {
                self.child = None;
                panic!(
                    "serve exited with {status} before listening\nlog:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "serve did not listen on {} within {START_TIMEOUT:?}\nlog:\n{}",
                    self.addr,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid fits in i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
