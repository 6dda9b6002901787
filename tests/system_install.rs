//! The system install of the README, with real users: a queue owned by one
//! user, a setgid `sendmail`, and a submission by another user.
//!
//! These tests need root (to create files for other users and to run the
//! binary as `nobody`); without it they skip with a message.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::env::{run_command, toml_string, Output, TestEnv};

/// The uid and gid of `nobody` on Debian and most Linux systems.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A group other than nobody's to make the binary setgid to: the first of
/// a few that Debian always has.
fn submit_group() -> Option<(String, u32)> {
    ["mail", "daemon", "sys"].iter().find_map(|name| {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .filter(|g| g.gid.as_raw() != NOBODY)
            .map(|g| ((*name).to_owned(), g.gid.as_raw()))
    })
}

struct Install {
    env: TestEnv,
    binary: PathBuf,
}

/// A queue initialised by root, and a copy of the binary that `nobody` can
/// run: setgid `group` when one is given.
fn install(group: Option<(&str, u32)>) -> Install {
    let env = TestEnv::new();
    let root = env.dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.write_config(&format!(
        "queue_dir = {}\nhostname = \"client.example.net\"\nsubmit_only = true\n",
        toml_string(&env.queue_dir.to_string_lossy())
    ));
    std::fs::set_permissions(&env.config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir(&env.queue_dir).unwrap();
    let mut init = vec!["queue", "init"];
    if let Some((name, _)) = group {
        init.extend(["--group", name]);
    }
    let out = env.run(&init);
    assert_eq!(out.status, 0, "queue init: {}", out.stderr);
    let binary = root.join("smarthost");
    std::fs::copy(env!("CARGO_BIN_EXE_smarthost"), &binary).unwrap();
    let mode = match group {
        Some((_, gid)) => {
            nix::unistd::chown(&binary, Some(0.into()), Some(gid.into())).unwrap();
            0o2755
        }
        None => 0o755,
    };
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(mode)).unwrap();
    wait_until_executable(&binary);
    Install { env, binary }
}

/// A freshly copied binary cannot be run while any process still holds
/// it open for writing; a child that another test thread forked during the
/// copy may, until it execs (ETXTBSY). Wait until it runs.
fn wait_until_executable(binary: &Path) {
    for _ in 0..100 {
        match Command::new(binary).arg("--version").output() {
            Ok(_) => return,
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("running {}: {e}", binary.display()),
        }
    }
    panic!("{} stayed busy", binary.display());
}

impl Install {
    fn as_nobody(&self, args: &[&str], input: &[u8]) -> Output {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .env("SMARTHOST_CONFIG", &self.env.config_path)
            .env_remove("SMARTHOST_LOG")
            .current_dir("/")
            .uid(NOBODY)
            .gid(NOBODY);
        run_command(cmd, input)
    }

    fn maildrop(&self) -> PathBuf {
        self.env.queue_dir.join("maildrop")
    }
}

fn dropped_files(maildrop: &Path) -> Vec<std::fs::Metadata> {
    std::fs::read_dir(maildrop)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.metadata().unwrap())
        .collect()
}

const MESSAGE: &[u8] = b"To: bob@example.org\nSubject: from nobody\n\nhello\n";

#[test]
fn another_users_submission_through_the_setgid_binary_exits_0_once_durable() {
    if !is_root() {
        eprintln!("skipped: needs root to run the binary as another user");
        return;
    }
    let Some((group, gid)) = submit_group() else {
        eprintln!("skipped: no mail, daemon or sys group on this system");
        return;
    };
    let install = install(Some((&group, gid)));
    let out = install.as_nobody(&["sendmail", "-t"], MESSAGE);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let files = dropped_files(&install.maildrop());
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].uid(), NOBODY, "the file keeps its submitter");
    assert_eq!(files[0].gid(), gid, "readable by the queue owner's group");
    assert_eq!(
        files[0].mode() & 0o7777,
        0o640,
        "readable by the group, by nobody else"
    );
    // The queue owner picks it up.
    let out = install.env.run(&["mailq"]);
    assert!(out.stdout.contains("bob@example.org"), "{}", out.stdout);
}

#[test]
fn a_world_writable_maildrop_takes_another_users_submission_durably() {
    if !is_root() {
        eprintln!("skipped: needs root to run the binary as another user");
        return;
    }
    let install = install(None);
    let out = install.as_nobody(&["sendmail", "bob@example.org"], MESSAGE);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(dropped_files(&install.maildrop()).len(), 1);
}

#[test]
fn mailq_by_a_user_who_is_not_the_queue_owner_is_refused_with_ex_noperm_77() {
    if !is_root() {
        eprintln!("skipped: needs root to run the binary as another user");
        return;
    }
    let Some((group, gid)) = submit_group() else {
        eprintln!("skipped: no mail, daemon or sys group on this system");
        return;
    };
    let install = install(Some((&group, gid)));
    let out = install.as_nobody(&["sendmail", "-t"], MESSAGE);
    assert_eq!(out.status, 0, "{}", out.stderr);
    // The owner has not run the queue yet; the store exists from init.
    let out = install.as_nobody(&["mailq"], b"");
    assert_eq!(out.status, 77, "{}{}", out.stdout, out.stderr);
    assert!(
        !out.stdout.contains("bob@example.org"),
        "other users' submissions stay private: {}",
        out.stdout
    );
}

#[test]
fn pickup_records_the_file_owner_as_submitter_not_what_the_file_claims() {
    if !is_root() {
        eprintln!("skipped: needs root to run the binary as another user");
        return;
    }
    let install = install(None);
    // Nothing listens on the port: the run picks the message up and defers it.
    install.env.write_config(&format!(
        "queue_dir = {}\nhostname = \"client.example.net\"\nsubmit_only = true\n\
         [dns]\nnameservers = [\"127.0.0.1:9\"]\ndnssec = \"off\"\n[smtp]\nport = 9\n",
        toml_string(&install.env.queue_dir.to_string_lossy())
    ));
    std::fs::set_permissions(
        &install.env.config_path,
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let id = "0661C8000000000F0RGE";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let envelope = format!(
        r#"{{"version":1,"id":"{id}","sender":"root@client.example.net","recipients":[{{"address":"bob@[127.0.0.1]"}}],"arrival":{now},"submitted_by":"root"}}"#
    );
    let mut file = b"SMARTHOST-QUEUE-FILE 1\n".to_vec();
    file.extend_from_slice(envelope.as_bytes());
    file.extend_from_slice(b"\nSubject: forged\r\n\r\nhello\r\n");
    // `nobody` writes straight into the world-writable maildrop.
    let target = install.maildrop().join(id);
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("cat > '{}'", target.display()))
        .uid(NOBODY)
        .gid(NOBODY);
    let out = run_command(cmd, &file);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let out = install.env.run(&["queue", "run"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let show = install.env.run(&["queue", "show", "--json", id]);
    assert!(
        show.stdout.contains("\"submitted_by\": \"nobody\""),
        "{}{}",
        show.stdout,
        show.stderr
    );
}
