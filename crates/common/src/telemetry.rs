//! Logging: JSON lines (one object per event, with the fields of the current request or
//! event span: service, trace_id, correlation_id) ready for an ELK-style pipeline, or a
//! human format for local debugging. `RUST_LOG` filters as usual.
//!
//! Lines are appended to an in-memory buffer that a background thread writes out every
//! few milliseconds, in one system call per batch: a request pays for formatting its line
//! and a short lock, never for a write or for waking a thread. Nothing is dropped: when
//! the buffer is full, the logging thread writes the batch itself. Keep the returned
//! guard alive until exit, so the last lines are written.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Past this size the writer thread is woken at once.
const WAKE_AT: usize = 256 * 1024;
/// Past this size the logging thread writes the batch itself (back-pressure, no loss).
const WRITE_INLINE_AT: usize = 4 * 1024 * 1024;

pub fn init(format: &str) -> LogFlush {
    let (writer, guard) = BatchWriter::start(io::stdout());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,lapin=warn,amq_protocol=warn,tower_http=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(writer);
    let _ = if format == "pretty" {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
    guard
}

type Sink = Box<dyn Write + Send>;

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Locked after `state` by whoever writes, so batches go out in order.
    sink: Mutex<Sink>,
}

struct State {
    buffer: Vec<u8>,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
        let mut state = lock(&shared.state);
        if !state.closed && state.buffer.len() < WAKE_AT {
            // Gather lines for a moment rather than waking on each one.
            state = shared
                .wake
                .wait_timeout(state, FLUSH_EVERY)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::swap(&mut state.buffer, &mut batch);
        let closed = state.closed;
        let mut sink = lock(&shared.sink);
        drop(state);
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
            return lock(&self.shared.sink).write(line);
        }
        state.buffer.extend_from_slice(line);
        let len = state.buffer.len();
        if len >= WRITE_INLINE_AT {
            // The writer thread is behind: write the batch here, holding the lock, so
            // other loggers wait instead of growing the buffer without bound.
            let result = lock(&self.shared.sink).write_all(&state.buffer);
            state.buffer.clear();
            result?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
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
        let out = String::from_utf8(lock(&sink.0).clone()).unwrap();
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
