//! The lossless batching writer: lines into a buffer, a thread writing it out in
//! batches, and back-pressure instead of loss when the buffer fills.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Past this size the writer thread is woken at once.
const WAKE_AT: usize = 256 * 1024;
/// Past this size the logging thread writes the batch itself (back-pressure, no loss).
const WRITE_INLINE_AT: usize = 4 * 1024 * 1024;

type Sink = Box<dyn Write + Send>;

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Whoever writes locks this first and only then takes the buffer's lines (for as
    /// long as it takes to move them out), so batches go out in order and no write, and
    /// no wait for one, ever happens under the buffer's lock.
    sink: Mutex<Sink>,
}

struct State {
    buffer: Vec<u8>,
    closed: bool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`MakeWriter`] whose lines go to a buffer written out in batches by a thread.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

impl BatchWriter {
    /// Starts the writing thread. Dropping the guard writes what is left and stops it.
    pub fn start(sink: impl Write + Send + 'static) -> (Self, LogFlush) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buffer: Vec::with_capacity(64 * 1024),
                closed: false,
            }),
            wake: Condvar::new(),
            sink: Mutex::new(Box::new(sink)),
        });
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || write_batches(&shared))
                .expect("the log writer thread starts")
        };
        (
            Self {
                shared: shared.clone(),
            },
            LogFlush {
                shared,
                worker: Some(worker),
            },
        )
    }
}

fn write_batches(shared: &Shared) {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        {
            let state = lock(&shared.state);
            if !state.closed && state.buffer.len() < WAKE_AT {
                // Gather lines for a moment rather than waking on each one.
                drop(
                    shared
                        .wake
                        .wait_timeout(state, FLUSH_EVERY)
                        .unwrap_or_else(|e| e.into_inner()),
                );
            }
        }
        let mut sink = lock(&shared.sink);
        let closed = {
            let mut state = lock(&shared.state);
            std::mem::swap(&mut state.buffer, &mut batch);
            state.closed
        };
        // A log line that cannot be written has nowhere else to go.
        if !batch.is_empty() {
            let _ = sink.write_all(&batch);
            batch.clear();
        }
        if closed {
            let _ = sink.flush();
            return;
        }
        let _ = sink.flush();
    }
}

/// One event's line on its way into the buffer.
pub struct Line<'a> {
    shared: &'a Shared,
}

impl Write for Line<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut state = lock(&self.shared.state);
        if state.closed {
            // Past shutdown: straight through.
            drop(state);
            return lock(&self.shared.sink).write(line);
        }
        state.buffer.extend_from_slice(line);
        let len = state.buffer.len();
        drop(state);
        if len >= WRITE_INLINE_AT {
            // The writer thread is behind: this logger writes what is buffered itself,
            // and so waits instead of growing the buffer without bound (each logger adds
            // at most a line past the limit before it waits here). The others go on
            // logging into the buffer meanwhile.
            let mut sink = lock(&self.shared.sink);
            let batch = std::mem::take(&mut lock(&self.shared.state).buffer);
            sink.write_all(&batch)?;
        } else if len >= WAKE_AT {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            shared: &self.shared,
        }
    }
}

/// Writes the buffered lines and stops the writer thread when dropped.
pub struct LogFlush {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_one();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// A sink the tests read back.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(lock(&self.0).clone()).expect("UTF-8 lines")
    }
}

#[cfg(test)]
impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink whose writes wait at a gate the test opens, telling it when one waits.
    struct Gated {
        out: Captured,
        open: Arc<(Mutex<bool>, Condvar)>,
        entered: std::sync::mpsc::Sender<()>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let (open, changed) = &*self.open;
            let mut is_open = lock(open);
            while !*is_open {
                is_open = changed.wait(is_open).unwrap_or_else(|e| e.into_inner());
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The output stalls while a batch is written (a full pipe, a slow disk): other
    /// threads still log into the buffer instead of queueing behind the write. (The
    /// batch was written, and waited for, under the buffer's lock, so every logging
    /// thread of the service stopped with it.)
    #[test]
    fn a_stalled_write_holds_no_logger_back() {
        let out = Captured::default();
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let (entered, writing) = std::sync::mpsc::channel();
        let gated = Gated {
            out: out.clone(),
            open: open.clone(),
            entered,
        };
        let (writer, guard) = BatchWriter::start(gated);
        // A line big enough to be written by the thread that logs it.
        let big = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                let mut line = vec![b'x'; WRITE_INLINE_AT];
                line.push(b'\n');
                writer.make_writer().write_all(&line).unwrap();
            })
        };
        writing
            .recv_timeout(Duration::from_secs(30))
            .expect("a write reached the sink");
        let (done, logged) = std::sync::mpsc::channel();
        let small = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                writer.make_writer().write_all(b"small\n").unwrap();
                let _ = done.send(());
            })
        };
        let result = logged.recv_timeout(Duration::from_secs(30));
        *lock(&open.0) = true;
        open.1.notify_all();
        big.join().unwrap();
        small.join().unwrap();
        drop(guard);
        assert!(
            result.is_ok(),
            "a small line waited for the stalled write of another"
        );
        let text = lock(&out.0);
        assert_eq!(text.len(), WRITE_INLINE_AT + 1 + "small\n".len());
        assert!(text.ends_with(b"small\n"), "the lines kept their order");
    }

    #[test]
    fn every_line_arrives_once_in_order_when_the_guard_drops() {
        let sink = Captured::default();
        let (writer, guard) = BatchWriter::start(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        // Big enough that some batches are written inline.
                        let line = format!("{t} {i} {}\n", "x".repeat(200));
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let out = sink.text();
        let mut next = [0usize; 4];
        for line in out.lines() {
            let mut parts = line.split(' ');
            let t: usize = parts.next().unwrap().parse().unwrap();
            let i: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(i, next[t], "thread {t}'s lines out of order or lost");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
    }
}
