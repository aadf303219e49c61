//! Users, passwords, tokens and ACLs.
//!
//! - Users ([`Auth::add_user`], ...) have an Argon2id password hash, an admin
//!   flag and [`Grant`]s; they live in `<data>/users.json` (mode 0600), rewritten
//!   atomically on every change. The first start creates `admin`.
//! - [`Auth::issue_token`] trades a name and password for an HS256 JWT (one hour
//!   by default); [`Auth::verify`] turns a bearer token back into a
//!   [`Principal`]. The signing secret is configured, or generated once into
//!   `<data>/jwt-secret` (mode 0600).
//! - [`Auth::authorize`] applies the ACL rule (see [`acl`]) with the user's rights
//!   as they are now, not as they were when the token was issued.
//!
//! In a cluster, [`crate::cluster::auth_sync`] keeps the users table in ZooKeeper
//! and every node's `users.json` a copy of it.
//!
//! `docs/auth.md` describes the same for operators.

pub mod acl;
mod config;
mod file;
mod password;
pub(crate) mod random;
mod secret;
mod service;
pub(crate) mod store;
mod token;
pub(crate) mod users;

pub use acl::{Action, Grant, Resource, ResourceKind};
pub use config::{AuthConfig, TOKEN_TTL_SECS_DEFAULT, TOKEN_TTL_SECS_MAX};
pub use file::SECRET_FILE_MODE;
pub use password::PASSWORD_BYTES_MAX;
pub use secret::{JWT_SECRET_BYTES_MAX, JWT_SECRET_BYTES_MIN, SECRET_FILE_NAME};
pub use service::{Auth, BOOTSTRAP_ADMIN_NAME, Bootstrap, Principal};
pub use store::{USERS_FILE_BYTES_MAX, USERS_FILE_NAME, USERS_FILE_VERSION};
pub use token::{JWT_LEEWAY_SECS, TOKEN_BYTES_MAX, TOKEN_TYPE, Token, bearer_token};
pub use users::UserInfo;

#[cfg(test)]
mod tests;
