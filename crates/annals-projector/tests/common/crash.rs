//! What the kill -9 tests share: a child process (this test binary re-running one of its
//! own tests) killed with SIGKILL, and a log file of fsynced lines that survives it.
//!
//! The log holds one `start` line per run, then one line per record, each ending with
//! ` .` so a line torn by the kill is recognisable; a torn line may only be the last line
//! of its run.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a child may take to become worth killing; longer means it hung.
const CHILD_PATIENCE: Duration = Duration::from_secs(60);

/// A log file that survives `kill -9`: every [`DurableLog::append`] is fsynced before it
/// returns.
pub struct DurableLog {
    file: Mutex<File>,
}

impl DurableLog {
    /// Opens (or creates) the log and starts a new run in it.
    pub fn open(path: &Path) -> DurableLog {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        // A line torn by the previous kill ends here, on its own line.
        file.write_all(b"\nstart\n").unwrap();
        file.sync_data().unwrap();
        DurableLog {
            file: Mutex::new(file),
        }
    }

    /// Appends one line per record (its fields joined by spaces, then ` .`) and fsyncs.
    pub fn append<R: AsRef<[String]>>(&self, records: &[R]) -> std::io::Result<()> {
        let mut text = String::new();
        for record in records {
            for field in record.as_ref() {
                text.push_str(field);
                text.push(' ');
            }
            text.push_str(".\n");
        }
        let mut file = self.file.lock().unwrap();
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }
}

/// Reads a [`DurableLog`]: the records of each run, in order. A torn line (the kill hit
/// a write) counts as not written; the test fails if one is not the last of its run.
pub fn read_runs(path: &Path) -> Vec<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let mut runs: Vec<Vec<Vec<String>>> = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        if *line == "start" {
            runs.push(Vec::new());
            continue;
        }
        let Some(fields) = line.strip_suffix(" .") else {
            let last_of_run = lines.get(n + 1).is_none_or(|next| *next == "start");
            assert!(
                last_of_run,
                "line {n} is torn but not the last of its run: {line:?}"
            );
            continue;
        };
        let record = fields.split(' ').map(str::to_owned).collect();
        runs.last_mut().expect("a run started").push(record);
    }
    runs
}

/// A small deterministic pseudo-random sequence (xorshift64), so kill moments vary but a
/// failing run can be replayed.
pub struct Xorshift(pub u64);

impl Xorshift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs this test binary's test `test` in a child process with `envs`, hands every line
/// the child prints to `on_line`, and kills the child with SIGKILL `delay` after
/// `on_line` first returned `true` (or after [`CHILD_PATIENCE`] if it never does).
/// Lines printed before the kill took effect are handed over too. Returns whether
/// `on_line` returned `true` (the child got far enough to be killed mid-run).
pub fn run_and_kill(
    test: &str,
    envs: &[(&str, String)],
    delay: Duration,
    mut on_line: impl FnMut(&str) -> bool,
) -> bool {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut deadline: Option<Instant> = None;
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => CHILD_PATIENCE.saturating_sub(started.elapsed()),
        };
        if wait.is_zero() {
            break;
        }
        match rx.recv_timeout(wait) {
            Ok(line) => {
                // libtest may have printed "test name ... " on the child's first line.
                let line = line.rsplit(" ... ").next().unwrap_or(&line);
                if on_line(line) && deadline.is_none() {
                    deadline = Some(Instant::now() + delay);
                }
            }
            Err(_) => break,
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    while let Ok(line) = rx.try_recv() {
        let line = line.rsplit(" ... ").next().unwrap_or(&line);
        on_line(line);
    }
    deadline.is_some()
}
