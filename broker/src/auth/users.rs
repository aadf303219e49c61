//! Users: a name, an argon2 password hash, an admin flag and grants, kept in a
//! table that enforces the invariants every change must keep (unique names,
//! valid grants, at least one admin once there is one).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::acl::Grant;
use crate::error::ApiError;
use crate::names;

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct User {
    /// The login name: a valid name (see [`crate::names`]).
    pub(crate) name: String,
    /// The Argon2id hash of the password, as a PHC string.
    pub(crate) password_hash: String,
    /// May do everything, including managing users.
    pub(crate) admin: bool,
    /// Rights on topics and queues; no duplicates.
    #[serde(default)]
    pub(crate) grants: Vec<Grant>,
    /// Tokens issued before this time (Unix seconds) are refused: it is set when
    /// the user is created and when the password changes, so that neither a
    /// re-created user of the same name nor the holder of an old password keeps
    /// using earlier tokens.
    #[serde(default)]
    pub(crate) tokens_not_before_unix_secs: u64,
}

impl User {
    /// What the API shows of the user.
    pub(crate) fn info(&self) -> UserInfo {
        UserInfo {
            name: self.name.clone(),
            admin: self.admin,
            grants: self.grants.clone(),
        }
    }
}

/// What the broker shows of a user: never the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// The login name.
    pub name: String,
    /// Whether the user may do everything.
    pub admin: bool,
    /// The user's rights on topics and queues.
    pub grants: Vec<Grant>,
}

/// Every user, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UserTable {
    users: BTreeMap<String, User>,
}

impl UserTable {
    /// A table of `users`; the error names the first duplicate.
    pub(crate) fn from_users(users: Vec<User>) -> Result<UserTable, String> {
        let mut table = UserTable::default();
        for user in users {
            if table.users.contains_key(&user.name) {
                return Err(format!("user {:?} appears twice", user.name));
            }
            table.users.insert(user.name.clone(), user);
        }
        Ok(table)
    }

    /// The user of that name.
    pub(crate) fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user, in name order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Whether there is no user.
    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Adds a user; 400 for a bad name, 409 when the name is taken.
    pub(crate) fn insert(&mut self, user: User) -> Result<(), ApiError> {
        names::validate("user", &user.name)?;
        if self.users.contains_key(&user.name) {
            return Err(ApiError::already_exists(format!(
                "user {:?} exists",
                user.name
            )));
        }
        self.users.insert(user.name.clone(), user);
        Ok(())
    }

    /// Removes a user; 404 when there is none, 400 when it is the last admin.
    pub(crate) fn remove(&mut self, name: &str) -> Result<User, ApiError> {
        let user = self.get_mut(name)?;
        if user.admin {
            self.keep_an_admin(name, "remove")?;
        }
        self.users.remove(name).ok_or_else(|| no_such_user(name))
    }

    /// Sets whether a user is an admin; 404, or 400 to demote the last admin.
    pub(crate) fn set_admin(&mut self, name: &str, admin: bool) -> Result<(), ApiError> {
        if !admin && self.get_mut(name)?.admin {
            self.keep_an_admin(name, "demote")?;
        }
        self.get_mut(name)?.admin = admin;
        Ok(())
    }

    /// Replaces a user's password hash and refuses the user's earlier tokens.
    pub(crate) fn set_password_hash(
        &mut self,
        name: &str,
        password_hash: String,
        now_unix_secs: u64,
    ) -> Result<(), ApiError> {
        let user = self.get_mut(name)?;
        user.password_hash = password_hash;
        user.tokens_not_before_unix_secs = now_unix_secs;
        Ok(())
    }

    /// Adds a grant unless the user has it; returns whether it was added.
    pub(crate) fn grant(&mut self, name: &str, grant: Grant) -> Result<bool, ApiError> {
        grant.validate()?;
        let user = self.get_mut(name)?;
        if user.grants.contains(&grant) {
            return Ok(false);
        }
        user.grants.push(grant);
        Ok(true)
    }

    /// Removes a grant; returns whether the user had it.
    pub(crate) fn revoke(&mut self, name: &str, grant: &Grant) -> Result<bool, ApiError> {
        let user = self.get_mut(name)?;
        let before = user.grants.len();
        user.grants.retain(|g| g != grant);
        Ok(user.grants.len() != before)
    }

    /// The user of that name, or a 404.
    fn get_mut(&mut self, name: &str) -> Result<&mut User, ApiError> {
        self.users.get_mut(name).ok_or_else(|| no_such_user(name))
    }

    /// Refuses to `verb` the admin `name` when no other admin would be left: the
    /// broker would then have nobody able to manage it.
    fn keep_an_admin(&self, name: &str, verb: &str) -> Result<(), ApiError> {
        if self.users.values().any(|u| u.admin && u.name != name) {
            return Ok(());
        }
        Err(ApiError::bad_request(format!(
            "cannot {verb} user {name:?}: it is the last admin user; make another user admin first"
        )))
    }
}

/// The 404 for an unknown user.
fn no_such_user(name: &str) -> ApiError {
    ApiError::not_found(format!("no user {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::acl::{Action, ResourceKind};
    use crate::error::ErrorCode;

    fn user(name: &str, admin: bool) -> User {
        User {
            name: name.to_owned(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".to_owned(),
            admin,
            grants: Vec::new(),
            tokens_not_before_unix_secs: 0,
        }
    }

    #[test]
    fn names_are_unique_and_valid() {
        let mut table = UserTable::default();
        table.insert(user("alice", false)).unwrap();
        assert_eq!(
            table.insert(user("alice", true)).unwrap_err().code,
            ErrorCode::AlreadyExists
        );
        assert_eq!(
            table.insert(user("a/b", false)).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert!(UserTable::from_users(vec![user("x", false), user("x", false)]).is_err());
    }

    #[test]
    fn the_last_admin_stays() {
        let mut table = UserTable::default();
        table.insert(user("root", true)).unwrap();
        table.insert(user("bob", false)).unwrap();
        assert_eq!(
            table.remove("root").unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            table.set_admin("root", false).unwrap_err().code,
            ErrorCode::BadRequest
        );
        table.set_admin("bob", true).unwrap();
        table.set_admin("root", false).unwrap();
        table.remove("root").unwrap();
        assert_eq!(table.remove("root").unwrap_err().code, ErrorCode::NotFound);
    }

    #[test]
    fn grants_are_deduplicated_and_validated() {
        let mut table = UserTable::default();
        table.insert(user("bob", false)).unwrap();
        let grant = Grant::new(ResourceKind::Topic, "orders.*", Action::Produce);
        assert_eq!(table.grant("bob", grant.clone()), Ok(true));
        assert_eq!(table.grant("bob", grant.clone()), Ok(false));
        assert_eq!(table.get("bob").unwrap().grants.len(), 1);
        let bad = Grant::new(ResourceKind::Topic, "a*b", Action::Produce);
        assert_eq!(
            table.grant("bob", bad).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(table.revoke("bob", &grant), Ok(true));
        assert_eq!(table.revoke("bob", &grant), Ok(false));
        assert_eq!(
            table.grant("nobody", grant).unwrap_err().code,
            ErrorCode::NotFound
        );
    }
}
