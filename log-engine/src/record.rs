//! Records: what a producer sends and a consumer reads.

use crate::offset::{Offset, TimestampMs};

/// One header of a record: a UTF-8 name and a byte value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// The header's value.
    pub value: Vec<u8>,
}

/// An owned record, as it is handed to [`crate::RecordBatchBuilder`] or collected from
/// a read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The routing key, if any.
    pub key: Option<Vec<u8>>,
    /// The payload.
    pub value: Vec<u8>,
    /// Application headers, in order.
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: TimestampMs,
}

impl Record {
    /// A record with a value and a timestamp, no key and no headers.
    pub fn new(value: impl Into<Vec<u8>>, timestamp: TimestampMs) -> Record {
        Record {
            key: None,
            value: value.into(),
            headers: Vec::new(),
            timestamp,
        }
    }

    /// The same record with a routing key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Record {
        self.key = Some(key.into());
        self
    }

    /// The same record with one more header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Record {
        self.headers.push(Header {
            key: key.into(),
            value: value.into(),
        });
        self
    }
}

/// A record borrowed from the bytes of a batch: reading one copies nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's offset in the log.
    pub offset: Offset,
    /// Milliseconds since the Unix epoch.
    pub timestamp: TimestampMs,
    /// The routing key, if any.
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub value: &'a [u8],
    /// The encoded headers; iterate them with [`RecordRef::headers`].
    pub(crate) headers_raw: &'a [u8],
    /// How many headers `headers_raw` holds.
    pub(crate) header_count: u32,
}

impl<'a> RecordRef<'a> {
    /// The record's headers, in order, as (name, value) pairs. The batch was validated
    /// when it was read, so every header decodes.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let mut rest = self.headers_raw;
        (0..self.header_count).map_while(move |_| {
            let (header, used) = crate::batch::decode_header(rest).ok()?;
            rest = rest.get(used..)?;
            Some(header)
        })
    }

    /// Copies the record into an owned [`Record`].
    pub fn to_owned_record(&self) -> Record {
        Record {
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.to_vec(),
            headers: self
                .headers()
                .map(|(key, value)| Header {
                    key: key.to_owned(),
                    value: value.to_vec(),
                })
                .collect(),
            timestamp: self.timestamp,
        }
    }
}
