//! After a write fails, the log refuses every later append with a clear error (an
//! fsync or write is never retried, since the kernel may have dropped the pages),
//! until it is reopened; reopening recovers everything that was written before.
//!
//! The failure is real: a child process lowers its file-size limit (`RLIMIT_FSIZE`)
//! so the kernel refuses the write with `EFBIG`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use log_engine::{Error, Log, LogConfig, Offset, ReadBound, Record};

const CHILD_DIR_ENV: &str = "LOG_ENGINE_TEST_FSIZE_CHILD_DIR";
const CHILD_TEST: &str = "child_appends_past_its_file_size_limit";

fn config() -> LogConfig {
    LogConfig {
        index_bytes_max: 4096,
        ..LogConfig::default()
    }
}

fn value(n: u64) -> Vec<u8> {
    let mut v = format!("record-{n}-").into_bytes();
    v.resize(1000, b'.');
    v
}

#[test]
fn a_failed_write_refuses_appends_until_the_log_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            CHILD_TEST,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written: u64 = std::fs::read_to_string(dir.path().join("acknowledged"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(written >= 10);

    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(
        log.log_end_offset(),
        Offset(written),
        "every acknowledged append is there"
    );
    let mut from = Offset(0);
    while from < log.log_end_offset() {
        let read = log.read(from, 1 << 20, ReadBound::LogEnd).unwrap();
        for r in read.records() {
            let r = r.unwrap();
            assert_eq!(r.value, value(r.offset.0).as_slice());
        }
        from = read.next_offset();
    }
    log.append_records(&[Record::new(value(written), 0)])
        .unwrap();
    assert_eq!(log.log_end_offset(), Offset(written + 1));
}

#[test]
#[ignore = "run in a child process by a_failed_write_refuses_appends_until_the_log_is_reopened"]
fn child_appends_past_its_file_size_limit() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    // SAFETY: ignoring SIGXFSZ turns the kill for exceeding RLIMIT_FSIZE into EFBIG.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let log = Log::open(dir, config()).unwrap();
    let mut next = 0;
    for _ in 0..10 {
        log.append_records(&[Record::new(value(next), 0)]).unwrap();
        next += 1;
    }
    log.flush().unwrap();
    let size = std::fs::metadata(dir.join("00000000000000000000.log"))
        .unwrap()
        .len();
    set_file_size_limit(size + 5000);

    let failure = loop {
        match log.append_records(&[Record::new(value(next), 0)]) {
            Ok(_) => next += 1,
            Err(e) => break e,
        }
        assert!(next < 100, "the file size limit never hit");
    };
    assert!(
        matches!(failure, Error::Io { .. }),
        "first failure is the I/O error: {failure}"
    );
    let refused = log.append_records(&[Record::new("tiny", 0)]).unwrap_err();
    assert!(
        matches!(refused, Error::PreviousIo { .. }),
        "later appends refused: {refused}"
    );
    assert!(refused.to_string().contains("refuses appends"));
    assert!(matches!(
        log.flush(),
        Ok(()) | Err(Error::PreviousIo { .. })
    ));
    assert_eq!(
        log.log_end_offset(),
        Offset(next),
        "the failed append did not count"
    );
    // Reads of what was acknowledged still work.
    assert_eq!(
        log.read(Offset(0), 1 << 20, ReadBound::LogEnd)
            .unwrap()
            .records()
            .count() as u64,
        next
    );

    set_file_size_limit(libc::RLIM_INFINITY);
    std::fs::write(dir.join("acknowledged"), next.to_string()).unwrap();
}

fn set_file_size_limit(bytes: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls with a valid pointer to a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit), 0);
        limit.rlim_cur = bytes.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}
