//! Placeholder replaced by the cursor store.
