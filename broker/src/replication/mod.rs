//! Log replication: which replicas are in sync, where the high watermark is, and
//! what a returning follower must truncate.
