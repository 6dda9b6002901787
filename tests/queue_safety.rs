//! Bad conditions at submission and in the queue: a full disk, a read-only
//! maildrop, a damaged store record or queue file, and the modes that keep
//! a queue private to its owner.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use support::TestEnv;

const MESSAGE: &[u8] = b"To: bob@example.org\nSubject: safety\n\nhello\n";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A small tmpfs mounted on a directory for the life of the value.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a `size` tmpfs on `dir`, or says why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        if !is_root() {
            return Err("needs root to mount a tmpfs".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { dir: dir.into() })
    }

    fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount read-only");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// A queue whose maildrop is a 64 KiB tmpfs, with one message already
/// waiting in it; `None` (the test is skipped) when mounting is refused.
fn queue_on_small_maildrop() -> Option<(TestEnv, Tmpfs)> {
    let env = TestEnv::new();
    env.write_config("hostname = \"client.example.net\"\nsubmit_only = true\n");
    let mount = match Tmpfs::mount(&env.queue_dir.join("maildrop"), "64k") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: {why}");
            return None;
        }
    };
    let out = env.sendmail(&["-t"], MESSAGE);
    assert_eq!(out.status, 0, "{}", out.stderr);
    Some((env, mount))
}

fn maildrop_names(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.queue_dir.join("maildrop"))
        .expect("read the maildrop")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The submission failed cleanly: EX_CANTCREAT, no temporary file, the
/// earlier message still listed.
fn assert_refused_cleanly(env: &TestEnv, out: &support::Output, before: &[String]) {
    assert_eq!(out.status, 73, "EX_CANTCREAT, never 75: {}", out.stderr);
    assert!(out.stderr.contains("cannot queue"), "{}", out.stderr);
    let after = maildrop_names(env);
    assert!(
        after.iter().all(|n| !n.starts_with(".tmp.")),
        "temporary left behind: {after:?}"
    );
    assert_eq!(after, before, "nothing new in the maildrop");
    let out = env.run(&["mailq"]);
    assert_eq!(out.status, 0, "mailq: {}", out.stderr);
    assert!(out.stdout.contains("bob@example.org"), "{}", out.stdout);
}

#[test]
fn a_full_disk_at_submission_is_ex_cantcreat_73_and_leaves_nothing() {
    let Some((env, _mount)) = queue_on_small_maildrop() else {
        return;
    };
    let before = maildrop_names(&env);
    // A message larger than the file system: the write itself fails.
    let mut big = b"To: bob@example.org\nSubject: big\n\n".to_vec();
    big.extend(std::iter::repeat_n(b"0123456789abcdef\n", 8192).flatten());
    let out = env.sendmail(&["-t"], &big);
    assert_refused_cleanly(&env, &out, &before);
    // A file system already full: even a small message does not fit.
    let filler = env.queue_dir.join("maildrop").join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 128 * 1024]);
    let before = maildrop_names(&env);
    let out = env.sendmail(&["-t"], MESSAGE);
    assert_refused_cleanly(&env, &out, &before);
}

#[test]
fn a_read_only_maildrop_at_submission_is_ex_cantcreat_73() {
    let Some((env, mount)) = queue_on_small_maildrop() else {
        return;
    };
    mount.remount_read_only();
    let before = maildrop_names(&env);
    let out = env.sendmail(&["-t"], MESSAGE);
    assert_refused_cleanly(&env, &out, &before);
}

/// A queue with one message picked up into `messages/` and the store.
fn queue_with_one_entry() -> (TestEnv, String) {
    let env = TestEnv::new();
    // No MX answers here: the run picks the message up and defers it.
    env.write_config(
        "hostname = \"client.example.net\"\nsubmit_only = true\nrelayhost = \"[127.0.0.1]:9\"\nrelayhost_tls = \"none\"\n",
    );
    let out = env.sendmail(&["-t"], MESSAGE);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let out = env.run(&["queue", "run"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let id = std::fs::read_dir(env.queue_dir.join("messages"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("one queued message");
    let out = env.run(&["queue", "check"]);
    assert_eq!(
        out.status, 0,
        "clean at first: {}{}",
        out.stdout, out.stderr
    );
    (env, id)
}

#[test]
fn a_garbage_store_record_is_refused_by_name_and_reported_by_check() {
    let (env, id) = queue_with_one_entry();
    {
        let db = sled::open(env.queue_dir.join("store")).expect("open the store");
        db.insert(id.as_bytes(), &b"{not json"[..]).unwrap();
        db.flush().unwrap();
    }
    let out = env.run(&["queue", "check"]);
    assert_eq!(out.status, 65, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("store entry {id} cannot be read")),
        "{}",
        out.stdout
    );
    for args in [&["queue", "run"][..], &["mailq"][..]] {
        let out = env.run(args);
        assert_eq!(out.status, 65, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(&id),
            "{args:?} names the record: {}",
            out.stderr
        );
        assert!(out.stderr.contains("queue check"), "{}", out.stderr);
    }
    // Nothing was dropped: the message's file is still there.
    assert!(env.queue_dir.join("messages").join(&id).exists());
}

#[test]
fn a_truncated_queue_file_is_kept_and_reported_by_check() {
    let (env, id) = queue_with_one_entry();
    let path = env.queue_dir.join("messages").join(&id);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(10).unwrap();
    drop(file);
    let out = env.run(&["queue", "run", "--all"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stderr.contains(&id), "the run names it: {}", out.stderr);
    assert!(path.exists(), "the file is never dropped");
    let out = env.run(&["queue", "check"]);
    assert_eq!(out.status, 65, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("unreadable queue file") && out.stdout.contains(&id),
        "{}",
        out.stdout
    );
    let out = env.run(&["mailq"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains(&id), "still listed: {}", out.stdout);
}

#[test]
fn files_in_corrupt_and_entries_without_files_are_reported_by_check() {
    let (env, id) = queue_with_one_entry();
    std::fs::write(env.queue_dir.join("corrupt").join("JUNK1"), b"junk").unwrap();
    std::fs::remove_file(env.queue_dir.join("messages").join(&id)).unwrap();
    let out = env.run(&["queue", "check"]);
    assert_eq!(out.status, 65, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("JUNK1"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("store entry {id} has no queue file")),
        "{}",
        out.stdout
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn queue_init_makes_the_private_parts_private() {
    let env = TestEnv::new();
    env.write_config("hostname = \"client.example.net\"\nsubmit_only = true\n");
    let out = env.run(&["queue", "init"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let q = &env.queue_dir;
    // The root is searchable so that other users reach the maildrop.
    assert_eq!(mode(q), 0o755);
    assert_eq!(mode(&q.join("maildrop")), 0o1733);
    for private in ["messages", "store", "corrupt"] {
        assert_eq!(mode(&q.join(private)), 0o700, "{private}");
    }
    // The owner's own submission is readable by the owner only.
    let out = env.sendmail(&["-t"], MESSAGE);
    assert_eq!(out.status, 0, "{}", out.stderr);
    for entry in std::fs::read_dir(q.join("maildrop")).unwrap().flatten() {
        assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
    }
}

#[test]
fn a_per_user_queue_is_private_to_its_user() {
    if Path::new("/var/spool/smarthost").exists() {
        eprintln!("skipped: a system queue exists, so no per-user queue is made");
        return;
    }
    let env = TestEnv::new();
    let home = env.dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    // No queue_dir: the queue goes under $HOME/.local/state.
    std::fs::write(
        &env.config_path,
        "hostname = \"client.example.net\"\nsubmit_only = true\n",
    )
    .unwrap();
    let mut cmd = env.cmd(&["sendmail", "-t"]);
    cmd.env("HOME", &home).env_remove("XDG_STATE_HOME");
    let out = support::env::run_command(cmd, MESSAGE);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let q = home.join(".local/state/smarthost");
    assert_eq!(mode(&q), 0o700);
    assert_eq!(mode(&q.join("maildrop")), 0o700);
    let files: Vec<_> = std::fs::read_dir(q.join("maildrop"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(mode(&files[0].path()), 0o600);
    assert_eq!(
        files[0].metadata().unwrap().uid(),
        nix::unistd::geteuid().as_raw()
    );
}
