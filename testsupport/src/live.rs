//! A program the test keeps running while it looks at it from outside: its
//! stdout lines as they come, each with the moment it arrived (so a test
//! that attends to several programs still knows when each said something),
//! its stderr, its stdin held open. Killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Live {
    child: Child,
    rx: Receiver<(Instant, String)>,
    lines: Vec<(Instant, String)>,
    /// What it wrote to stderr, and whether stderr reached its end.
    stderr: Arc<Mutex<(String, bool)>>,
    _stdin: Option<ChildStdin>,
    /// What the program is, for messages.
    pub what: String,
}

impl Live {
    /// Starts `cmd` with stdout and stderr piped and stdin a pipe held open.
    pub fn spawn(mut cmd: Command, what: impl Into<String>) -> Live {
        let what = what.into();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (tx, rx) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new((String::new(), false)));
        let sink = stderr.clone();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = err.read(&mut buf).unwrap_or(0);
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                if n == 0 {
                    s.1 = true;
                    break;
                }
                s.0.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = child.stdin.take();
        Live {
            child,
            rx,
            lines: vec![],
            stderr,
            _stdin: stdin,
            what,
        }
    }

    /// Writes `line` and a newline to the program's stdin.
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self._stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the program's stdin");
        stdin.flush().expect("flush the program's stdin");
    }

    /// Closes the program's stdin (it sees its end).
    pub fn close_stdin(&mut self) {
        drop(self._stdin.take());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line starting with `prefix`; returns the rest of it and
    /// when it arrived. Panics after `timeout` or if the program ends first.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> (String, Instant) {
        let t0 = Instant::now();
        loop {
            if let Some((at, rest)) = self
                .lines
                .iter()
                .find_map(|(at, l)| l.strip_prefix(prefix).map(|r| (*at, r.to_string())))
            {
                return (rest, at);
            }
            match self.rx.recv_timeout(timeout.saturating_sub(t0.elapsed())) {
                Ok(line) => self.lines.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    let output = self.output();
                    panic!(
                        "{}: no `{prefix}` line within {timeout:?}\n{output}",
                        self.what
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100));
                    let status = self.child.try_wait();
                    let output = self.output();
                    panic!(
                        "{}: ended ({status:?}) before `{prefix}`\n{output}",
                        self.what
                    )
                }
            }
        }
    }

    /// The stdout lines received so far, one string.
    pub fn stdout(&mut self) -> String {
        while let Ok(line) = self.rx.try_recv() {
            self.lines.push(line);
        }
        let lines: Vec<&str> = self.lines.iter().map(|(_, l)| l.as_str()).collect();
        lines.join("\n")
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// stdout and stderr so far, for a failure message.
    pub fn output(&mut self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr())
    }

    /// Waits for the program to end by itself (killed after `timeout`);
    /// returns its status and everything it printed.
    pub fn finish(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let t0 = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if t0.elapsed() > timeout {
                let _ = self.child.kill();
                break self.child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The rest of its output: until both pipes reach their end (a child
        // it left behind may hold them: then up to 5 s).
        let drain = Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self
            .rx
            .recv_timeout(drain.saturating_duration_since(Instant::now()))
        {
            self.lines.push(line);
        }
        while !self.stderr.lock().unwrap_or_else(|e| e.into_inner()).1 && Instant::now() < drain {
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = self.output();
        (status, out)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
