//! A reader waiting for new data wakes as soon as it is appended, without a runtime
//! of the log's own, times out when nothing comes, and stops waiting when the log is
//! closed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use log_engine::{Log, LogConfig, Offset, ReadBound, Record};

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls a future on this thread, parking between wake-ups.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_secs(5));
    }
}

#[test]
fn waiters_wake_on_append_and_time_out_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());

    let started = Instant::now();
    assert!(!log.wait_for_blocking(Offset(0), ReadBound::LogEnd, Duration::from_millis(50)));
    assert!(started.elapsed() >= Duration::from_millis(50));

    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            log.append_records(&[Record::new("first", 1)]).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            log.append_records(&[Record::new("second", 2)]).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            log.flush().unwrap();
        })
    };
    assert!(log.wait_for_blocking(Offset(0), ReadBound::LogEnd, Duration::from_secs(10)));
    block_on(log.wait_for(Offset(1), ReadBound::LogEnd));
    assert_eq!(log.log_end_offset(), Offset(2));
    block_on(log.wait_for(Offset(1), ReadBound::Durable));
    assert_eq!(log.durable_offset(), Offset(2));
    writer.join().unwrap();

    log.set_high_watermark(Offset(1));
    let waiter = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || block_on(log.wait_for(Offset(1), ReadBound::HighWatermark)))
    };
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        !waiter.is_finished(),
        "offset 1 is above the high watermark"
    );
    log.set_high_watermark(Offset(2));
    waiter.join().unwrap();
}

#[test]
fn closing_the_log_ends_every_wait() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
    let waiting = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || block_on(log.wait_for(Offset(0), ReadBound::LogEnd)))
    };
    let blocking = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            log.wait_for_blocking(Offset(0), ReadBound::LogEnd, Duration::from_secs(60))
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiting.is_finished() && !blocking.is_finished());
    let closed = Instant::now();
    log.close().unwrap();
    assert!(log.is_closed());
    waiting.join().unwrap();
    assert!(!blocking.join().unwrap(), "nothing became readable");
    assert!(
        closed.elapsed() < Duration::from_secs(10),
        "{:?}",
        closed.elapsed()
    );
    // A wait that starts after the close ends at once.
    block_on(log.wait_for(Offset(0), ReadBound::LogEnd));
}
