//! A queue's settings, as created and as kept in `queue.json`.

use serde::{Deserialize, Serialize};

use crate::config::Durability;
use crate::error::ApiError;
use crate::names;
use crate::topic::PARTITIONS_MAX;

/// How long a received message stays invisible when neither the queue nor the
/// receive says otherwise: 30 s, SQS's default.
pub const VISIBILITY_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// The longest visibility timeout (and nack delay): 12 hours, as SQS. A longer
/// lease would hold the ack floor, and the space below it, for too long.
pub const VISIBILITY_TIMEOUT_MS_MAX: u64 = 12 * 60 * 60 * 1000;
/// Deliveries before a message goes to the dead-letter queue (or is dropped).
pub const MAX_DELIVERIES_DEFAULT: u32 = 5;

/// A queue's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpec {
    /// The name.
    pub name: String,
    /// How long a received message is invisible to other consumers. Defaults to
    /// [`VISIBILITY_TIMEOUT_MS_DEFAULT`].
    #[serde(default = "default_visibility_timeout_ms")]
    pub visibility_timeout_ms: u64,
    /// After this many deliveries a message is dead-lettered instead of delivered
    /// again. Defaults to [`MAX_DELIVERIES_DEFAULT`].
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: u32,
    /// Where messages go after `max_deliveries`; none: they are dropped and counted.
    #[serde(default)]
    pub dead_letter_queue: Option<String>,
    /// The number of partitions. Defaults to 1.
    #[serde(default = "one")]
    pub partitions: u32,
    /// Copies of each partition (1 standalone). Defaults to 1.
    #[serde(default = "one")]
    pub replication_factor: u32,
    /// When sends and acks are answered. Defaults to `fsync`.
    #[serde(default)]
    pub durability: Durability,
    /// Tells this queue from an earlier one of the same name: random, chosen when
    /// the queue is created, and carried by every receipt, so that a receipt of a
    /// deleted queue acks nothing in its successor. 0 for a queue created before
    /// queues had one.
    #[serde(default)]
    pub incarnation: u64,
}

fn default_visibility_timeout_ms() -> u64 {
    VISIBILITY_TIMEOUT_MS_DEFAULT
}

fn default_max_deliveries() -> u32 {
    MAX_DELIVERIES_DEFAULT
}

fn one() -> u32 {
    1
}

impl QueueSpec {
    /// A queue named `name` with every other setting at its default.
    pub fn new(name: impl Into<String>) -> QueueSpec {
        QueueSpec {
            name: name.into(),
            visibility_timeout_ms: VISIBILITY_TIMEOUT_MS_DEFAULT,
            max_deliveries: MAX_DELIVERIES_DEFAULT,
            dead_letter_queue: None,
            partitions: 1,
            replication_factor: 1,
            durability: Durability::default(),
            incarnation: 0,
        }
    }

    /// Checks the settings; `nodes` is the size of the cluster.
    pub fn validate(&self, nodes: u32) -> Result<(), ApiError> {
        names::validate("queue", &self.name)?;
        if let Some(dlq) = &self.dead_letter_queue {
            names::validate("dead-letter queue", dlq)?;
            if *dlq == self.name {
                return Err(ApiError::bad_request(
                    "a queue cannot be its own dead_letter_queue",
                ));
            }
        }
        if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            return Err(ApiError::bad_request(format!(
                "partitions must be between 1 and {PARTITIONS_MAX}"
            )));
        }
        if self.max_deliveries == 0 {
            return Err(ApiError::bad_request("max_deliveries must be at least 1"));
        }
        check_visibility_timeout(self.visibility_timeout_ms)?;
        if self.replication_factor == 0 {
            return Err(ApiError::bad_request(
                "replication_factor must be at least 1",
            ));
        }
        if self.replication_factor > nodes {
            return Err(ApiError::bad_request(format!(
                "replication_factor {} is not possible with {nodes} node(s)",
                self.replication_factor
            )));
        }
        Ok(())
    }
}

/// Checks a visibility timeout: 1 ms to [`VISIBILITY_TIMEOUT_MS_MAX`].
pub fn check_visibility_timeout(ms: u64) -> Result<(), ApiError> {
    if ms == 0 || ms > VISIBILITY_TIMEOUT_MS_MAX {
        return Err(ApiError::bad_request(format!(
            "visibility_timeout_ms must be between 1 and {VISIBILITY_TIMEOUT_MS_MAX}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_json_leaves_out_and_bad_values_fail() {
        let spec: QueueSpec = serde_json::from_str(r#"{"name":"jobs"}"#).unwrap();
        assert_eq!(spec, QueueSpec::new("jobs"));
        assert!(spec.validate(1).is_ok());
        let bad = [
            QueueSpec::new("a/b"),
            QueueSpec {
                dead_letter_queue: Some("jobs".into()),
                ..QueueSpec::new("jobs")
            },
            QueueSpec {
                dead_letter_queue: Some("..".into()),
                ..QueueSpec::new("jobs")
            },
            QueueSpec {
                partitions: 0,
                ..QueueSpec::new("jobs")
            },
            QueueSpec {
                partitions: PARTITIONS_MAX + 1,
                ..QueueSpec::new("jobs")
            },
            QueueSpec {
                max_deliveries: 0,
                ..QueueSpec::new("jobs")
            },
            QueueSpec {
                visibility_timeout_ms: 0,
                ..QueueSpec::new("jobs")
            },
            QueueSpec {
                visibility_timeout_ms: VISIBILITY_TIMEOUT_MS_MAX + 1,
                ..QueueSpec::new("jobs")
            },
            QueueSpec {
                replication_factor: 2,
                ..QueueSpec::new("jobs")
            },
        ];
        for spec in bad {
            assert!(spec.validate(1).is_err(), "{spec:?}");
        }
    }
}
