//! `cargo bench --bench run`: submission latency, `mailq` and pickup cost,
//! and delivery throughput of the release binary, all on loopback, with
//! Postfix's `sendmail` on the same message for comparison where Postfix is
//! installed and the bench runs as root.
//!
//! Settings come from the environment:
//!
//! * `BENCH_SUBMISSIONS` (200): timed `sendmail` runs per submitter.
//! * `BENCH_MESSAGES` (10000): messages per delivery run.
//! * `BENCH_REPEAT` (3): delivery runs per variant; the median is reported.
//! * `BENCH_LARGE=1`: also measure `mailq` and pickup at 100,000 queued.
//! * `BENCH_ONLY` (all): a comma-separated subset of `latency`, `queue` and
//!   `delivery`.
//!
//! Bulk queues are made by submitting one message through the real
//! `sendmail` and copying its maildrop file with fresh queue ids and
//! recipients, without fsync (that cost is what the latency part measures).
//! The copies are picked up by the `queue run` that is timed.

#[path = "../../tests/support/mod.rs"]
mod support;

mod receiver;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use smarthost::queue::file::Envelope;
use smarthost::queue::new_queue_id;
use support::env::toml_string;
use support::postfix::{postfix_unavailable, Postfix};
use support::{free_port_on, FakeDns, TestCa, TestEnv, ZoneBuilder};

use receiver::Receiver;

/// Size of the benchmark message, headers included.
const MESSAGE_SIZE: usize = 4096;
/// Recipient domains of the multi-domain delivery variant.
const DOMAINS: usize = 10;
/// Name of the receiver in the multi-domain variant (all MX records).
const MX_NAME: &str = "mx.bench.example.org";

fn main() {
    let settings = Settings::from_env();
    println!("smarthost benchmark: {}", machine());
    println!(
        "binary: {}, message: {MESSAGE_SIZE} bytes\n",
        env!("CARGO_BIN_EXE_smarthost")
    );
    let message = message();
    let mut rows = Vec::new();
    if settings.runs("latency") {
        latency(&settings, &message, &mut rows);
    }
    if settings.runs("queue") {
        queue_cost(&settings, &message, &mut rows);
    }
    if settings.runs("delivery") {
        delivery(&settings, &message, &mut rows);
    }
    print_table(&rows);
}

struct Settings {
    submissions: usize,
    messages: usize,
    repeat: usize,
    large: bool,
    only: Option<String>,
}

impl Settings {
    fn from_env() -> Self {
        let number = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
                })
                .unwrap_or(default)
        };
        Self {
            submissions: number("BENCH_SUBMISSIONS", 200).max(1),
            messages: number("BENCH_MESSAGES", 10_000).max(1),
            repeat: number("BENCH_REPEAT", 3).max(1),
            large: std::env::var("BENCH_LARGE").is_ok_and(|v| v == "1"),
            only: std::env::var("BENCH_ONLY").ok(),
        }
    }

    fn runs(&self, part: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.split(',').any(|p| p.trim() == part))
    }
}

/// One line of the result table.
struct Row {
    what: String,
    result: String,
    target: &'static str,
}

fn row(rows: &mut Vec<Row>, what: impl Into<String>, result: String, target: &'static str) {
    let row = Row {
        what: what.into(),
        result,
        target,
    };
    println!("  {}: {}", row.what, row.result);
    rows.push(row);
}

fn print_table(rows: &[Row]) {
    let w0 = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.result.len()).max().unwrap_or(0);
    println!("\n{:w0$}  {:w1$}  target", "measurement", "result");
    println!("{}", "-".repeat(w0 + w1 + 12));
    for r in rows {
        println!("{:w0$}  {:w1$}  {}", r.what, r.result, r.target);
    }
}

/// A 4 KiB message with the headers `sendmail` would otherwise add.
fn message() -> Vec<u8> {
    let mut m = String::from(
        "From: Bench <bench@client.example.net>\n\
         To: bench@example.org\n\
         Subject: benchmark message\n\
         Date: Fri, 04 Dec 2026 07:00:00 +0000\n\
         Message-ID: <bench@client.example.net>\n\n",
    );
    let line = "The quick brown fox jumps over the lazy dog, 0123456789 abcdefghij.\n";
    while m.len() + line.len() <= MESSAGE_SIZE {
        m.push_str(line);
    }
    while m.len() < MESSAGE_SIZE - 1 {
        m.push('x');
    }
    m.push('\n');
    m.into_bytes()
}

/// CPU model, core count and kernel, for the README.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

fn median(samples: &mut [Duration]) -> Duration {
    percentile(samples, 50)
}

fn percentile(samples: &mut [Duration], pct: usize) -> Duration {
    samples.sort();
    let i = (samples.len() * pct).div_ceil(100).saturating_sub(1);
    samples[i.min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A configuration for the bench queue: `top` holds top-level keys, `tables`
/// whole tables after `[tls]`.
fn write_config(env: &TestEnv, ca: &Path, top: &str, tls: &str, tables: &str) {
    env.write_config(&format!(
        "hostname = \"client.example.net\"\nsubmit_only = true\n{top}\n\
         [tls]\nca_file = {}\n{tls}\n{tables}\n",
        toml_string(&ca.to_string_lossy())
    ));
}

/// Times `n` runs of `command` fed `message`, after three untimed ones.
fn time_submissions(
    mut command: impl FnMut() -> Command,
    message: &[u8],
    n: usize,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 3 {
        let mut cmd = command();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let start = Instant::now();
        let mut child = cmd.spawn().expect("start the submission command");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(message).expect("write the message");
        drop(stdin);
        let status = child.wait().expect("wait for the submission command");
        let elapsed = start.elapsed();
        assert!(status.success(), "submission failed: {status}");
        if i >= 3 {
            samples.push(elapsed);
        }
    }
    samples
}

/// Part 1: `sendmail` into a fresh queue, and Postfix's on the same message.
fn latency(settings: &Settings, message: &[u8], rows: &mut Vec<Row>) {
    println!("sendmail latency, {} submissions", settings.submissions);
    let env = TestEnv::new();
    let ca = env.dir.path().join("ca.pem");
    TestCa::new().write_pem(&ca);
    write_config(&env, &ca, "", "", "");
    let mut ours = time_submissions(
        || env.cmd(&["sendmail", "-i", "bench@example.org"]),
        message,
        settings.submissions,
    );
    let ours_median = median(&mut ours);
    let ours_p95 = percentile(&mut ours, 95);
    row(
        rows,
        "sendmail 4 KiB, durable: median / p95",
        format!("{} / {}", ms(ours_median), ms(ours_p95)),
        "<= 4 ms median",
    );
    if let Some(reason) = postfix_unavailable() {
        println!("postfix: not installed, no comparison ({reason})");
        row(rows, "Postfix sendmail", "not measured".into(), "");
        return;
    }
    // Postfix's queue manager is told to defer everything, so that only
    // pickup and cleanup work in the background while we measure.
    let nowhere = (Ipv4Addr::LOCALHOST, free_port_on(&[Ipv4Addr::LOCALHOST])).into();
    let postfix = match Postfix::start(nowhere, "defer_transports = relay smtp\n") {
        Ok(p) => p,
        Err(reason) => {
            println!("postfix: cannot start a private instance ({reason}), no comparison");
            return;
        }
    };
    let mut theirs = time_submissions(
        || postfix.sendmail_command(&["-i", "bench@example.org"]),
        message,
        settings.submissions,
    );
    let theirs_median = median(&mut theirs);
    row(
        rows,
        "Postfix sendmail, same message: median / p95",
        format!(
            "{} / {} (Postfix/smarthost = {:.1})",
            ms(theirs_median),
            ms(percentile(&mut theirs, 95)),
            theirs_median.as_secs_f64() / ours_median.as_secs_f64()
        ),
        "",
    );
}

/// Fills the maildrop of `env` with `n` copies of `message`, recipient
/// `address(i)` for copy `i`: one real submission, then copies of its
/// queue file with fresh ids, written without fsync.
fn seed(env: &TestEnv, message: &[u8], n: usize, address: impl Fn(usize) -> String) {
    time_submissions(
        || env.cmd(&["sendmail", "-i", "bench@example.org"]),
        message,
        0,
    );
    let maildrop = env.queue_dir.join("maildrop");
    let files: Vec<_> = std::fs::read_dir(&maildrop)
        .expect("read the maildrop")
        .map(|e| e.expect("maildrop entry").path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    // The three untimed warm-up submissions left three identical files.
    let template = std::fs::read(&files[0]).expect("read the template queue file");
    for f in &files {
        std::fs::remove_file(f).expect("remove a template queue file");
    }
    // A queue file is a format line, the envelope as one JSON line, and the
    // message.
    let magic_end = template
        .iter()
        .position(|&b| b == b'\n')
        .expect("format line")
        + 1;
    let json_end = magic_end
        + template[magic_end..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("envelope line");
    let mut envelope: Envelope =
        serde_json::from_slice(&template[magic_end..json_end]).expect("parse the envelope");
    let body = &template[json_end + 1..];
    for i in 0..n {
        envelope.id = new_queue_id();
        envelope.recipients[0].address = address(i);
        let mut bytes = template[..magic_end].to_vec();
        serde_json::to_writer(&mut bytes, &envelope).expect("serialise the envelope");
        bytes.push(b'\n');
        bytes.extend_from_slice(body);
        std::fs::write(maildrop.join(&envelope.id), bytes).expect("write a queue file");
    }
}

/// Runs `cmd` to the end; returns its wall time and peak RSS in KiB
/// (VmHWM, sampled every 5 ms until it exits).
fn timed_run(mut cmd: Command, log: &Path) -> (Duration, u64) {
    let log = std::fs::File::create(log).expect("create the run log");
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    let start = Instant::now();
    let mut child = cmd.spawn().expect("start the queue run");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the queue run") {
            break status;
        }
        if let Some(kib) = vm_hwm(&status_path) {
            peak = peak.max(kib);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    assert!(status.success(), "queue run failed: {status}");
    (elapsed, peak)
}

fn vm_hwm(status_path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_path).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Median wall time of `runs` runs of `mailq`, output discarded.
fn mailq_median(env: &TestEnv, runs: usize) -> Duration {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let mut cmd = env.cmd(&["mailq"]);
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            let start = Instant::now();
            let status = cmd.status().expect("run mailq");
            assert!(status.success(), "mailq failed: {status}");
            start.elapsed()
        })
        .collect();
    median(&mut samples)
}

/// Parts 2 and 4: pickup and `mailq` at several queue sizes. The relayhost
/// is a closed port, so every picked-up message gets one refused attempt
/// and stays queued.
fn queue_cost(settings: &Settings, message: &[u8], rows: &mut Vec<Row>) {
    let mut sizes = vec![1_000, 10_000];
    if settings.large {
        sizes.push(100_000);
    }
    for n in sizes {
        println!("queue of {n}: pickup and mailq");
        let env = TestEnv::new();
        let ca = env.dir.path().join("ca.pem");
        TestCa::new().write_pem(&ca);
        let closed = free_port_on(&[Ipv4Addr::LOCALHOST]);
        let top = format!("relayhost = \"[127.0.0.1]:{closed}\"");
        write_config(&env, &ca, &top, "", "");
        seed(&env, message, n, |_| "bench@example.org".to_string());
        let log = env.dir.path().join("pickup.log");
        let (pickup, rss) = timed_run(env.cmd(&["queue", "run"]), &log);
        let per = pickup.as_secs_f64() * 1e6 / n as f64;
        row(
            rows,
            format!("pickup + refused attempt, {n} queued"),
            format!(
                "{:.2} s, {per:.0} us/msg, peak RSS {} MiB",
                pickup.as_secs_f64(),
                rss / 1024
            ),
            "flat per message",
        );
        let runs = if n > 10_000 { 5 } else { 20 };
        let q = mailq_median(&env, runs);
        let per = q.as_secs_f64() * 1e6 / n as f64;
        row(
            rows,
            format!("mailq, {n} queued (median of {runs})"),
            format!("{}, {per:.1} us/msg", ms(q)),
            if n == 10_000 {
                "<= 100 ms"
            } else {
                "flat per message"
            },
        );
    }
}

/// Part 3: delivery to the local receiver over verified TLS, through one
/// relayhost and to ten domains found through DNS.
fn delivery(settings: &Settings, message: &[u8], rows: &mut Vec<Row>) {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca.issue(&["127.0.0.1", MX_NAME]));
    let mut zone = ZoneBuilder::new("bench.example.org.").a(MX_NAME, "127.0.0.1");
    for d in 0..DOMAINS {
        zone = zone.mx(&format!("d{d}.bench.example.org"), 10, MX_NAME);
    }
    let dns = FakeDns::start(vec![zone]);
    let port = receiver.addr.port();
    let relay = Variant {
        name: "relayhost",
        top: format!("relayhost = \"[127.0.0.1]:{port}\"\nrelayhost_tls = \"starttls\""),
        tls: String::new(),
        tables: String::new(),
        address: Box::new(|_| "bench@example.org".to_string()),
    };
    let domains = Variant {
        name: "10 domains via MX",
        top: String::new(),
        tls: "level = \"verify\"".to_string(),
        tables: format!(
            "[dns]\nnameservers = [\"{}\"]\ndnssec = \"off\"\n[smtp]\nport = {port}\n",
            dns.addr
        ),
        address: Box::new(|i| format!("bench{i}@d{}.bench.example.org", i % DOMAINS)),
    };
    for variant in [relay, domains] {
        deliver_variant(settings, message, &ca, &receiver, &variant, rows);
    }
}

struct Variant {
    name: &'static str,
    top: String,
    tls: String,
    tables: String,
    address: Box<dyn Fn(usize) -> String>,
}

fn deliver_variant(
    settings: &Settings,
    message: &[u8],
    ca: &TestCa,
    receiver: &Receiver,
    variant: &Variant,
    rows: &mut Vec<Row>,
) {
    let n = settings.messages;
    let mut times = Vec::new();
    let mut peak = 0;
    let mut sessions = 0;
    for run in 0..settings.repeat {
        println!("delivery, {}: {n} messages, run {}", variant.name, run + 1);
        let env = TestEnv::new();
        let ca_path = env.dir.path().join("ca.pem");
        ca.write_pem(&ca_path);
        write_config(&env, &ca_path, &variant.top, &variant.tls, &variant.tables);
        seed(&env, message, n, &variant.address);
        let before = (receiver.messages(), receiver.sessions());
        let log = env.dir.path().join("delivery.log");
        let (elapsed, rss) = timed_run(env.cmd(&["queue", "run"]), &log);
        let got = receiver.messages() - before.0;
        if got != n as u64 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            panic!("the receiver got {got} of {n} messages; end of the log: {tail:#?}");
        }
        sessions = receiver.sessions() - before.1;
        println!(
            "    {:.2} s, {:.0} msg/s, peak RSS {} MiB",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            rss / 1024
        );
        times.push(elapsed);
        peak = peak.max(rss);
    }
    let t = median(&mut times);
    row(
        rows,
        format!(
            "delivery, {}, {n} msgs (median of {})",
            variant.name, settings.repeat
        ),
        format!(
            "{:.0} msg/s ({:.2} s, {sessions} connections, peak RSS up to {} MiB)",
            n as f64 / t.as_secs_f64(),
            t.as_secs_f64(),
            peak / 1024
        ),
        ">= 700 msg/s, <= 40 MiB",
    );
}
