//! A log directory is opened by one handle at a time: a second open (another process,
//! or the same one) is refused while the first is alive, and allowed after it is gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use log_engine::{Error, Log, LogConfig, Offset, Record};

#[test]
fn a_second_open_of_one_directory_is_refused_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = Log::open(dir.path(), LogConfig::default()).unwrap();
    first.append_records(&[Record::new("a", 0)]).unwrap();
    let second = Log::open(dir.path(), LogConfig::default());
    assert!(
        matches!(second, Err(Error::Io { ref source, .. }) if source.kind() == std::io::ErrorKind::WouldBlock),
        "{second:?}"
    );
    first.close().unwrap();
    drop(first);
    let again = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(again.log_end_offset(), Offset(1));
    assert!(
        dir.path().join(".clean-shutdown").exists(),
        "an idle reopen changes nothing"
    );
    again.append_records(&[Record::new("b", 0)]).unwrap();
    assert!(
        !dir.path().join(".clean-shutdown").exists(),
        "the first change removes the marker"
    );
}
