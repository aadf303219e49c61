//! Access control: actions, resources, grants, and the rule that decides.
//!
//! The rule, in full:
//!
//! - a user with `admin = true` may do everything;
//! - anyone else may do `action` on a topic or queue named `name` when one of their
//!   grants has that action, that resource kind and a pattern matching `name`;
//! - [`Resource::Cluster`] (users, cluster-wide operations) needs an admin user.
//!
//! Rights do not imply each other: an `admin` grant on `orders.*` lets its holder
//! create, delete and describe those topics but not produce to them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::names::NAME_LEN_MAX;

/// The wildcard that ends a prefix pattern, or alone matches every name.
pub const WILDCARD: char = '*';

/// What a user asks to do with a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Publish to a topic, send to a queue.
    Produce,
    /// Subscribe to and pull from a topic; receive, ack and nack on a queue.
    Consume,
    /// Create, delete and configure a topic or queue; on the cluster, manage users.
    Admin,
}

impl Action {
    /// Every action, in a stable order.
    pub const ALL: [Action; 3] = [Action::Produce, Action::Consume, Action::Admin];

    /// The action's name: `produce`, `consume` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Admin => "admin",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = ApiError;

    /// Parses `produce`, `consume` or `admin`; anything else is a 400.
    fn from_str(s: &str) -> Result<Action, ApiError> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown action {s:?}; expected produce, consume or admin"
                ))
            })
    }
}

/// The kinds of named resource a grant can cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// Topics (publish/subscribe).
    Topic,
    /// Queues (competing consumers), dead-letter queues included.
    Queue,
}

impl ResourceKind {
    /// The kind's name: `topic` or `queue`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Topic => "topic",
            ResourceKind::Queue => "queue",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceKind {
    type Err = ApiError;

    /// Parses `topic` or `queue`; anything else is a 400.
    fn from_str(s: &str) -> Result<ResourceKind, ApiError> {
        match s {
            "topic" => Ok(ResourceKind::Topic),
            "queue" => Ok(ResourceKind::Queue),
            _ => Err(ApiError::bad_request(format!(
                "unknown resource kind {s:?}; expected topic or queue"
            ))),
        }
    }
}

/// What an action is done on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource<'a> {
    /// The topic of that name.
    Topic(&'a str),
    /// The queue of that name.
    Queue(&'a str),
    /// The broker as a whole: users, cluster-wide operations. Only admin users.
    Cluster,
}

impl<'a> Resource<'a> {
    /// The kind and name of a topic or queue; `None` for the cluster.
    pub fn named(self) -> Option<(ResourceKind, &'a str)> {
        match self {
            Resource::Topic(name) => Some((ResourceKind::Topic, name)),
            Resource::Queue(name) => Some((ResourceKind::Queue, name)),
            Resource::Cluster => None,
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Topic(name) => write!(f, "topic {name:?}"),
            Resource::Queue(name) => write!(f, "queue {name:?}"),
            Resource::Cluster => f.write_str("the cluster"),
        }
    }
}

/// One right of a user: `action` on the topics (or queues) whose names match
/// `pattern`.
///
/// A pattern is an exact name (`orders`), a prefix ending in `*` (`orders.*`
/// matches `orders.eu` and `orders.` but not `orders`), or `*` alone (every name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Whether the grant covers topics or queues.
    pub resource: ResourceKind,
    /// An exact name, a prefix followed by `*`, or `*`.
    pub pattern: String,
    /// The action allowed.
    pub action: Action,
}

impl Grant {
    /// A grant; [`Grant::validate`] checks its pattern.
    pub fn new(resource: ResourceKind, pattern: impl Into<String>, action: Action) -> Grant {
        Grant {
            resource,
            pattern: pattern.into(),
            action,
        }
    }

    /// Checks the pattern: `*`, a valid name, or 1 to 248 name characters then `*`.
    pub fn validate(&self) -> Result<(), ApiError> {
        validate_pattern(&self.pattern)
    }

    /// Whether the grant's kind is `kind` and its pattern matches `name`.
    pub fn matches(&self, kind: ResourceKind, name: &str) -> bool {
        self.resource == kind && pattern_matches(&self.pattern, name)
    }

    /// Whether the grant allows `action` on `resource` (never the cluster).
    pub fn allows(&self, action: Action, resource: Resource<'_>) -> bool {
        self.action == action
            && resource
                .named()
                .is_some_and(|(kind, name)| self.matches(kind, name))
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {} {}", self.action, self.resource, self.pattern)
    }
}

/// Whether `pattern` (exact, `prefix*` or `*`) matches `name`.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix(WILDCARD) {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Checks a grant pattern; the message says what is wrong.
pub fn validate_pattern(pattern: &str) -> Result<(), ApiError> {
    if pattern == "*" {
        return Ok(());
    }
    let (body, is_prefix) = match pattern.strip_suffix(WILDCARD) {
        Some(prefix) => (prefix, true),
        None => (pattern, false),
    };
    // A prefix must leave room for at least one more character of a name.
    let body_len_max = if is_prefix {
        NAME_LEN_MAX - 1
    } else {
        NAME_LEN_MAX
    };
    if body.is_empty() || body.len() > body_len_max {
        return Err(ApiError::bad_request(format!(
            "grant pattern {pattern:?} must be \"*\", a name of 1 to {NAME_LEN_MAX} characters, \
             or a prefix of 1 to {body_len_max} characters followed by \"*\""
        )));
    }
    if let Some(bad) = body
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ApiError::bad_request(format!(
            "grant pattern {pattern:?} contains {bad:?}; allowed are letters, digits, '.', '_' \
             and '-', and one '*' at the end"
        )));
    }
    if !is_prefix && (body == "." || body == "..") {
        return Err(ApiError::bad_request(format!(
            "grant pattern {pattern:?} names nothing: no topic or queue can be called that"
        )));
    }
    Ok(())
}

/// The decision: may a user with this admin flag and these grants do `action` on
/// `resource`?
pub(crate) fn permits(
    admin: bool,
    grants: &[Grant],
    action: Action,
    resource: Resource<'_>,
) -> bool {
    admin || grants.iter().any(|grant| grant.allows(action, resource))
}

/// May a user with this admin flag and these grants see `resource` at all (any
/// right on it)? Listings show only what a user can see.
pub(crate) fn sees(admin: bool, grants: &[Grant], resource: Resource<'_>) -> bool {
    admin
        || resource
            .named()
            .is_some_and(|(kind, name)| grants.iter().any(|grant| grant.matches(kind, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(pattern: &str, action: Action) -> Grant {
        Grant::new(ResourceKind::Topic, pattern, action)
    }

    #[test]
    fn patterns_match_exact_names_prefixes_and_everything() {
        assert!(pattern_matches("orders", "orders"));
        assert!(!pattern_matches("orders", "orders.eu"));
        assert!(!pattern_matches("orders", "order"));
        assert!(pattern_matches("orders.*", "orders.eu"));
        assert!(pattern_matches("orders.*", "orders."));
        assert!(!pattern_matches("orders.*", "orders"));
        assert!(!pattern_matches("orders.*", "ordersx"));
        assert!(pattern_matches("orders*", "orders"));
        assert!(pattern_matches("*", "anything"));
    }

    #[test]
    fn grants_need_the_same_action_and_kind() {
        let grants = [topic("orders.*", Action::Produce)];
        assert!(permits(
            false,
            &grants,
            Action::Produce,
            Resource::Topic("orders.eu")
        ));
        assert!(!permits(
            false,
            &grants,
            Action::Consume,
            Resource::Topic("orders.eu")
        ));
        assert!(!permits(
            false,
            &grants,
            Action::Admin,
            Resource::Topic("orders.eu")
        ));
        assert!(!permits(
            false,
            &grants,
            Action::Produce,
            Resource::Queue("orders.eu")
        ));
        assert!(!permits(
            false,
            &grants,
            Action::Produce,
            Resource::Topic("payments")
        ));
        assert!(!permits(false, &grants, Action::Produce, Resource::Cluster));
    }

    #[test]
    fn queue_grants_do_not_cover_topics() {
        let grants = [Grant::new(ResourceKind::Queue, "*", Action::Consume)];
        assert!(permits(
            false,
            &grants,
            Action::Consume,
            Resource::Queue("jobs")
        ));
        assert!(!permits(
            false,
            &grants,
            Action::Consume,
            Resource::Topic("jobs")
        ));
    }

    #[test]
    fn admin_users_may_do_everything_and_nobody_else_touches_the_cluster() {
        assert!(permits(true, &[], Action::Produce, Resource::Topic("x")));
        assert!(permits(true, &[], Action::Admin, Resource::Cluster));
        let everything: Vec<Grant> = Action::ALL
            .into_iter()
            .flat_map(|a| [topic("*", a), Grant::new(ResourceKind::Queue, "*", a)])
            .collect();
        for action in Action::ALL {
            assert!(!permits(false, &everything, action, Resource::Cluster));
        }
    }

    #[test]
    fn any_right_on_a_name_makes_it_visible() {
        let grants = [topic("orders", Action::Consume)];
        assert!(sees(false, &grants, Resource::Topic("orders")));
        assert!(!sees(false, &grants, Resource::Topic("payments")));
        assert!(!sees(false, &grants, Resource::Queue("orders")));
        assert!(!sees(false, &grants, Resource::Cluster));
        assert!(sees(true, &[], Resource::Cluster));
    }

    #[test]
    fn patterns_are_validated() {
        for good in ["*", "orders", "orders.*", "o*", ".*", "a-b_c.d"] {
            assert!(validate_pattern(good).is_ok(), "{good:?}");
        }
        let long_prefix = format!("{}*", "a".repeat(NAME_LEN_MAX));
        for bad in [
            "",
            "**",
            "a*b",
            "*a",
            "a/b",
            "a b*",
            ".",
            "..",
            &long_prefix,
        ] {
            assert!(validate_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn actions_and_kinds_parse_and_print() {
        for action in Action::ALL {
            assert_eq!(action.to_string().parse::<Action>(), Ok(action));
        }
        assert!("write".parse::<Action>().is_err());
        assert_eq!("queue".parse::<ResourceKind>(), Ok(ResourceKind::Queue));
        assert!("Queue".parse::<ResourceKind>().is_err());
        assert_eq!(
            topic("orders.*", Action::Produce).to_string(),
            "produce on topic orders.*"
        );
        assert_eq!(Resource::Queue("jobs").to_string(), "queue \"jobs\"");
    }

    #[test]
    fn grants_serialize_as_lowercase_words() -> Result<(), serde_json::Error> {
        let json = serde_json::to_string(&topic("orders.*", Action::Admin))?;
        assert_eq!(
            json,
            r#"{"resource":"topic","pattern":"orders.*","action":"admin"}"#
        );
        assert_eq!(
            serde_json::from_str::<Grant>(&json)?,
            topic("orders.*", Action::Admin)
        );
        Ok(())
    }
}
