//! Receipts: self-describing, signed proofs of one delivery of one message. Any node
//! can check one and route the ack, so consumers need no sticky sessions.
//!
//! A receipt is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`, where
//! the payload is the queue name and incarnation, partition, offset, delivery count
//! and lease deadline. The delivery count tells a stale receipt (the lease ran out
//! and the message was delivered again) from the current one; the incarnation tells
//! a receipt of a deleted queue from one of a new queue with the same name.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use log_engine::Offset;
use sha2::Sha256;

use crate::error::ApiError;

/// What a receipt says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The queue.
    pub queue: String,
    /// The queue's incarnation ([`crate::queue::QueueSpec::incarnation`]).
    pub incarnation: u64,
    /// The partition.
    pub partition: u32,
    /// The message's offset.
    pub offset: Offset,
    /// Which delivery of the message this is (1 for the first).
    pub delivery: u32,
    /// When the lease runs out, ms since the epoch.
    pub deadline_ms: i64,
}

/// The longest receipt accepted, to bound the work of checking one.
pub const RECEIPT_LEN_MAX: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8; 32], payload: &[u8]) -> Result<HmacSha256, ApiError> {
    let mut mac = HmacSha256::new_from_slice(key).map_err(ApiError::internal)?;
    mac.update(payload);
    Ok(mac)
}

impl Receipt {
    /// Encodes and signs the receipt.
    pub fn sign(&self, key: &[u8; 32]) -> Result<String, ApiError> {
        let payload = format!(
            "{}|{}|{}|{}|{}|{}",
            self.partition,
            self.offset.0,
            self.delivery,
            self.deadline_ms,
            self.incarnation,
            self.queue
        );
        let tag = mac(key, payload.as_bytes())?.finalize().into_bytes();
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    /// Checks the signature and decodes a receipt; a 400 when it is malformed or was
    /// not signed with `key`.
    pub fn verify(text: &str, key: &[u8; 32]) -> Result<Receipt, ApiError> {
        let bad =
            || ApiError::bad_request("the receipt is malformed or was not issued by this cluster");
        if text.len() > RECEIPT_LEN_MAX {
            return Err(bad());
        }
        let (payload, tag) = text.split_once('.').ok_or_else(bad)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad())?;
        mac(key, &payload)?.verify_slice(&tag).map_err(|_| bad())?;
        let payload = String::from_utf8(payload).map_err(|_| bad())?;
        let mut parts = payload.splitn(6, '|');
        let mut next = || parts.next().ok_or_else(bad);
        let partition = next()?.parse().map_err(|_| bad())?;
        let offset = Offset(next()?.parse().map_err(|_| bad())?);
        let delivery = next()?.parse().map_err(|_| bad())?;
        let deadline_ms = next()?.parse().map_err(|_| bad())?;
        let incarnation = next()?.parse().map_err(|_| bad())?;
        let queue = next()?.to_owned();
        Ok(Receipt {
            queue,
            incarnation,
            partition,
            offset,
            delivery,
            deadline_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_forgeries_fail() {
        let key = [7u8; 32];
        let receipt = Receipt {
            queue: "jobs.eu".into(),
            incarnation: 12_345,
            partition: 2,
            offset: Offset(99),
            delivery: 3,
            deadline_ms: 1_700_000_000_000,
        };
        let text = receipt.sign(&key).unwrap();
        assert_eq!(Receipt::verify(&text, &key).unwrap(), receipt);
        assert!(Receipt::verify(&text, &[8u8; 32]).is_err());
        let mut forged = receipt.clone();
        forged.offset = Offset(100);
        let forged_payload = forged.sign(&[9u8; 32]).unwrap();
        let (payload, _) = forged_payload.split_once('.').unwrap();
        let (_, tag) = text.split_once('.').unwrap();
        assert!(Receipt::verify(&format!("{payload}.{tag}"), &key).is_err());
        for junk in ["", ".", "abc", "a.b", &"x".repeat(2000)] {
            assert!(Receipt::verify(junk, &key).is_err());
        }
    }
}
