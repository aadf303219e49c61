//! Appends records to a log under `./data/quickstart`, reads them back, and prints
//! what it did. Run it twice: the second run finds the first run's records.

use log_engine::{FlushPolicy, Log, LogConfig, ReadBound, Record, RecordBatchBuilder};

fn main() -> Result<(), log_engine::Error> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/quickstart".to_owned());
    let config = LogConfig {
        flush: FlushPolicy::every_ms(100),
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config)?;
    println!(
        "opened {dir}: offsets [{}, {})",
        log.log_start_offset(),
        log.log_end_offset()
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut builder = RecordBatchBuilder::new();
    for i in 0..1000 {
        let key = format!("user-{}", i % 10);
        builder.push(Some(key.as_bytes()), format!("event {i}").as_bytes(), now)?;
    }
    let mut batch = builder.finish()?;
    let appended = log.append_durable(&mut batch)?;
    println!(
        "appended 1000 records at offsets {}..={}, fsynced",
        appended.base_offset, appended.last_offset
    );

    let read = log.read(appended.base_offset, 64 * 1024, ReadBound::Durable)?;
    let mut count = 0;
    for record in read.records() {
        let record = record?;
        if count < 3 {
            println!(
                "  offset {} key {:?} value {:?}",
                record.offset,
                record.key.map(String::from_utf8_lossy),
                String::from_utf8_lossy(record.value)
            );
        }
        count += 1;
    }
    println!(
        "read {count} records back; next offset {}",
        read.next_offset()
    );
    let single = log.append_records(&[Record::new("one more", now)])?;
    println!("appended one record at offset {}", single.base_offset);
    log.close()?;
    println!("closed cleanly: the next open skips the recovery scan");
    Ok(())
}
