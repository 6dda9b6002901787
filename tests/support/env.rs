//! A private directory, configuration file and command runner for driving
//! the `smarthost` binary from a test.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::fake_dns::FakeDns;

/// How long one invocation of the binary may run before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished command produced.
#[derive(Clone, Debug)]
pub struct Output {
    /// Exit code; 128 + signal number when killed by a signal.
    pub status: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// A temporary directory holding the queue and the configuration file.
///
/// The directory is deleted when the test passes and kept (its path printed
/// on stderr) when the test panics, so the queue can be inspected.
pub struct TestEnv {
    /// The temporary directory.
    pub dir: tempfile::TempDir,
    /// `<dir>/queue`, the queue directory written into the configuration.
    pub queue_dir: PathBuf,
    /// `<dir>/smarthost.toml`.
    pub config_path: PathBuf,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    /// Creates the directory; no configuration is written yet.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("smarthost-test-")
            .tempdir()
            .expect("create temporary directory");
        let queue_dir = dir.path().join("queue");
        let config_path = dir.path().join("smarthost.toml");
        Self {
            dir,
            queue_dir,
            config_path,
        }
    }

    /// Writes the configuration file. Unless `toml` sets `queue_dir` itself,
    /// `queue_dir = "<dir>/queue"` is put in front of it.
    pub fn write_config(&self, toml: &str) {
        let text = if sets_queue_dir(toml) {
            toml.to_string()
        } else {
            format!(
                "queue_dir = {}\n{toml}",
                toml_string(&self.queue_dir.to_string_lossy())
            )
        };
        std::fs::write(&self.config_path, text)
            .unwrap_or_else(|e| panic!("writing config {}: {e}", self.config_path.display()));
    }

    /// A command running the binary with `args`, the test configuration in
    /// `SMARTHOST_CONFIG`, `RUST_LOG` and `SMARTHOST_LOG` removed (so the
    /// default `info` level applies) and the directory as cwd.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_smarthost"));
        cmd.args(args)
            .env("SMARTHOST_CONFIG", &self.config_path)
            .env_remove("RUST_LOG")
            .env_remove("SMARTHOST_LOG")
            .current_dir(self.dir.path());
        cmd
    }

    /// Runs `smarthost sendmail <args>` with `stdin` as its input.
    pub fn sendmail(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut all = vec!["sendmail"];
        all.extend_from_slice(args);
        run_command(self.cmd(&all), stdin)
    }

    /// Runs `smarthost <args>` with empty input, e.g. `["queue", "run"]`.
    pub fn run(&self, args: &[&str]) -> Output {
        run_command(self.cmd(args), b"")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("test directory kept: {}", self.dir.path().display());
        }
    }
}

/// The configuration snippet pointing the binary at the fake peers:
/// `nameservers` at `dns`, SMTP on `smtp_port`, trusting `ca_pem_path`.
/// DNSSEC validation is off: the fake zones are unsigned and there is no
/// root above them to prove that (see `signed_dns` for validating tests).
pub fn config_for(dns: &FakeDns, smtp_port: u16, ca_pem_path: &Path) -> String {
    config_for_addr(dns.addr, "dnssec = \"off\"", smtp_port, ca_pem_path)
}

/// Like [`config_for`], for a DNS server at `dns` with extra `[dns]` lines.
pub fn config_for_addr(
    dns: SocketAddr,
    dns_lines: &str,
    smtp_port: u16,
    ca_pem_path: &Path,
) -> String {
    format!(
        "hostname = \"client.example.net\"\n\
         submit_only = true\n\
         [dns]\n\
         nameservers = [\"{dns}\"]\n\
         {dns_lines}\n\
         [smtp]\n\
         port = {smtp_port}\n\
         [tls]\n\
         ca_file = {}\n",
        toml_string(&ca_pem_path.to_string_lossy()),
    )
}

/// Whether the top level of `toml` (before the first table) sets `queue_dir`.
fn sets_queue_dir(toml: &str) -> bool {
    toml.lines()
        .map(str::trim_start)
        .take_while(|l| !l.starts_with('['))
        .any(|l| {
            l.strip_prefix("queue_dir")
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
}

/// A TOML basic string holding `s`.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Spawns `cmd`, feeds it `input`, collects its output, and kills it (and
/// fails the test) after 60 seconds.
pub fn run_command(mut cmd: Command, input: &[u8]) -> Output {
    let description = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {description}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // A child that exits without reading its input breaks the pipe; that is
    // the child's business, so the write error is ignored.
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = reader(child.stdout.take().expect("piped stdout"));
    let stderr = reader(child.stderr.take().expect("piped stderr"));
    let status = wait_with_timeout(&mut child, &description);
    let _ = writer.join();
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "{description} did not finish within {COMMAND_TIMEOUT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

fn reader(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The exit code, or `None` when the child had to be killed.
fn wait_with_timeout(child: &mut Child, description: &str) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Some(
                    status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                )
            }
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Err(e) => panic!("waiting for {description}: {e}"),
        }
    }
}
