//! In-process tests of the REST API: every endpoint and every error code of the
//! contract, through `tower::ServiceExt::oneshot` on the router (no socket).

mod auth;
mod errors;
mod ops;
mod queues;
mod subscription_races;
mod subscriptions;
mod support;
mod topics;
