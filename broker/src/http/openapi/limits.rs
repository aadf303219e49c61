//! The limits the server checks, written into the document's schemas from the same
//! constants the checks use, so that a value the document allows is not refused
//! with a 400. (utoipa's `#[schema(maximum = ..)]` and its kin take literals only,
//! hence this modifier rather than attributes.)
//!
//! Left out: what depends on the state (`replication_factor` at most the nodes
//! there are, a commit's partition and offset) and what JSON Schema cannot say well
//! (base64 that decodes, a receipt's signature).

use std::collections::BTreeMap;

use utoipa::Number;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{AdditionalProperties, Object, OneOfBuilder, SchemaType, Type};
use utoipa::openapi::{OpenApi, RefOr, Schema};

use super::super::body::HEADERS_PER_MESSAGE_MAX;
use super::super::subscriptions::{PULL_MAX, WAIT_MS_MAX};
use super::super::topics::RETENTION_MS_MAX;
use crate::idempotency::KEY_LEN_MAX;
use crate::message::RESERVED_HEADER_PREFIX;
use crate::names::{NAME_LEN_MAX, NAME_PATTERN};
use crate::queue::{RECEIPTS_MAX, RECEIVE_MESSAGES_MAX, VISIBILITY_TIMEOUT_MS_MAX};
use crate::topic::PARTITIONS_MAX;

/// What the server checks of a value.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// An integer from the first to the second, inclusive.
    Range(u64, u64),
    /// An integer of at least this.
    AtLeast(u64),
    /// The name of a topic, queue or subscription (`names::validate`).
    Name,
    /// An array of at least `min` items, and at most `max`.
    Items {
        /// The fewest items.
        min: usize,
        /// The most items, if there is a most.
        max: Option<usize>,
    },
    /// A message's headers: how many, and no reserved names.
    Headers,
    /// An `Idempotency-Key`: 1 to [`KEY_LEN_MAX`] printable ASCII characters.
    IdempotencyKey,
}

/// The checked properties of the request bodies: (schema, property, check).
const PROPERTIES: &[(&str, &str, Check)] = &[
    ("CreateTopic", "name", Check::Name),
    (
        "CreateTopic",
        "partitions",
        Check::Range(1, PARTITIONS_MAX as u64),
    ),
    ("CreateTopic", "replication_factor", Check::AtLeast(1)),
    (
        "CreateTopic",
        "retention_ms",
        Check::Range(0, RETENTION_MS_MAX),
    ),
    ("CreateQueue", "name", Check::Name),
    ("CreateQueue", "dead_letter_queue", Check::Name),
    (
        "CreateQueue",
        "partitions",
        Check::Range(1, PARTITIONS_MAX as u64),
    ),
    ("CreateQueue", "replication_factor", Check::AtLeast(1)),
    (
        "CreateQueue",
        "visibility_timeout_ms",
        Check::Range(1, VISIBILITY_TIMEOUT_MS_MAX),
    ),
    ("CreateQueue", "max_deliveries", Check::AtLeast(1)),
    ("CreateSubscription", "name", Check::Name),
    (
        "ProduceRequest",
        "messages",
        Check::Items { min: 1, max: None },
    ),
    (
        "SendRequest",
        "messages",
        Check::Items { min: 1, max: None },
    ),
    ("MessageIn", "headers", Check::Headers),
    (
        "ReceiveRequest",
        "max",
        Check::Range(1, RECEIVE_MESSAGES_MAX as u64),
    ),
    ("ReceiveRequest", "wait_ms", Check::Range(0, WAIT_MS_MAX)),
    (
        "ReceiveRequest",
        "visibility_timeout_ms",
        Check::Range(1, VISIBILITY_TIMEOUT_MS_MAX),
    ),
    (
        "AckRequest",
        "receipts",
        Check::Items {
            min: 0,
            max: Some(RECEIPTS_MAX),
        },
    ),
    (
        "NackRequest",
        "receipts",
        Check::Items {
            min: 0,
            max: Some(RECEIPTS_MAX),
        },
    ),
    (
        "NackRequest",
        "delay_ms",
        Check::Range(0, VISIBILITY_TIMEOUT_MS_MAX),
    ),
    ("RedriveRequest", "max", Check::AtLeast(1)),
    ("SeekRequest", "timestamp", Check::AtLeast(0)),
];

/// The checked query and header parameters: (operation id, parameter, check). Every
/// path parameter names a topic, queue or subscription and is checked as a name.
const PARAMETERS: &[(&str, &str, Check)] = &[
    ("pull", "max", Check::Range(1, PULL_MAX as u64)),
    ("pull", "wait_ms", Check::Range(0, WAIT_MS_MAX)),
    ("produce", "Idempotency-Key", Check::IdempotencyKey),
    ("send", "Idempotency-Key", Check::IdempotencyKey),
];

/// The alternatives of a seek, exactly one of which a request takes: (its
/// properties, the one it requires).
const SEEKS: [(&[&str], &str); 3] = [
    (&["partition", "offset"], "offset"),
    (&["to"], "to"),
    (&["timestamp"], "timestamp"),
];

/// Writes the limits into `doc`; returns the places it did not find (a schema,
/// property or parameter that changed name), which a test keeps empty.
pub fn add(doc: &mut OpenApi) -> Vec<String> {
    let mut missing = Vec::new();
    let schemas = &mut doc.components.get_or_insert_with(Default::default).schemas;
    for &(schema, property, check) in PROPERTIES {
        let found = property_of(schemas, schema, property).is_some_and(|s| apply(s, check));
        if !found {
            missing.push(format!("{schema}.{property}"));
        }
    }
    if !seek_takes_exactly_one(schemas) {
        missing.push("SeekRequest".to_owned());
    }
    let mut found_parameters = Vec::new();
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            found_parameters.extend(limit_parameters(operation));
        }
    }
    for &(operation, parameter, _) in PARAMETERS {
        if !found_parameters.contains(&(operation, parameter)) {
            missing.push(format!("{operation} {parameter}"));
        }
    }
    missing
}

/// Applies the checks of an operation's parameters; returns those of
/// [`PARAMETERS`] it found.
fn limit_parameters(operation: &mut Operation) -> Vec<(&'static str, &'static str)> {
    let id = operation.operation_id.clone().unwrap_or_default();
    let mut found = Vec::new();
    for parameter in operation.parameters.iter_mut().flatten() {
        let check = if parameter.parameter_in == ParameterIn::Path {
            Some(Check::Name)
        } else {
            PARAMETERS
                .iter()
                .find(|(op, name, _)| *op == id && *name == parameter.name)
                .map(|&(op, name, check)| {
                    found.push((op, name));
                    check
                })
        };
        if let (Some(check), Some(RefOr::T(schema))) = (check, parameter.schema.as_mut()) {
            apply(schema, check);
        }
    }
    found
}

/// The schema of `property` of the component `schema`.
fn property_of<'s>(
    schemas: &'s mut BTreeMap<String, RefOr<Schema>>,
    schema: &str,
    property: &str,
) -> Option<&'s mut Schema> {
    let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut(schema) else {
        return None;
    };
    match object.properties.get_mut(property) {
        Some(RefOr::T(schema)) => Some(schema),
        _ => None,
    }
}

/// Writes `check` into `schema`; false when the schema is not of the kind the check
/// is for.
fn apply(schema: &mut Schema, check: Check) -> bool {
    match (schema, check) {
        (Schema::Object(object), Check::Range(min, max)) => {
            object.minimum = Some(number(min));
            object.maximum = Some(number(max));
        }
        (Schema::Object(object), Check::AtLeast(min)) => object.minimum = Some(number(min)),
        (Schema::Object(object), Check::Name) => {
            object.min_length = Some(1);
            object.max_length = Some(NAME_LEN_MAX);
            object.pattern = Some(NAME_PATTERN.to_owned());
        }
        (Schema::Array(array), Check::Items { min, max }) => {
            array.min_items = (min > 0).then_some(min);
            array.max_items = max;
        }
        (Schema::Object(object), Check::Headers) => {
            object.max_properties = Some(HEADERS_PER_MESSAGE_MAX);
            let reserved = RESERVED_HEADER_PREFIX.replace('.', r"\.");
            let mut names = Object::with_type(Type::String);
            names.pattern = Some(format!("^(?!{reserved})"));
            object.property_names = Some(Box::new(Schema::Object(names)));
        }
        (Schema::Object(object), Check::IdempotencyKey) => {
            object.min_length = Some(1);
            object.max_length = Some(KEY_LEN_MAX);
            object.pattern = Some("^[ -~]+$".to_owned());
        }
        _ => return false,
    }
    true
}

fn number(n: u64) -> Number {
    usize::try_from(n).map_or(Number::Float(n as f64), Number::UInt)
}

/// Makes `SeekRequest` take exactly one of its alternatives ([`SEEKS`]), as the
/// server does: one object per alternative, with only its properties.
fn seek_takes_exactly_one(schemas: &mut BTreeMap<String, RefOr<Schema>>) -> bool {
    let Some(RefOr::T(Schema::Object(seek))) = schemas.get("SeekRequest") else {
        return false;
    };
    let mut one_of = OneOfBuilder::new().description(seek.description.clone());
    for (properties, required) in SEEKS {
        let mut alternative = Object::with_type(Type::Object);
        for &name in properties {
            let Some(property) = seek.properties.get(name) else {
                return false;
            };
            let property = if name == required {
                non_null(property.clone())
            } else {
                property.clone()
            };
            alternative.properties.insert(name.to_owned(), property);
        }
        alternative.required = vec![required.to_owned()];
        alternative.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        one_of = one_of.item(Schema::Object(alternative));
    }
    schemas.insert(
        "SeekRequest".to_owned(),
        RefOr::T(Schema::OneOf(one_of.build())),
    );
    true
}

/// `schema` without `null` among the values it allows: a required property must be
/// given a value.
fn non_null(schema: RefOr<Schema>) -> RefOr<Schema> {
    match schema {
        RefOr::T(Schema::Object(mut object)) => {
            if let SchemaType::Array(types) = &object.schema_type {
                let rest: Vec<Type> = types
                    .iter()
                    .filter(|t| **t != Type::Null)
                    .cloned()
                    .collect();
                object.schema_type = match rest.as_slice() {
                    [one] => SchemaType::Type(one.clone()),
                    _ => SchemaType::Array(rest),
                };
            }
            RefOr::T(Schema::Object(object))
        }
        RefOr::T(Schema::OneOf(one_of)) => {
            let mut rest: Vec<RefOr<Schema>> = one_of
                .items
                .iter()
                .filter(|item| !is_null(item))
                .cloned()
                .collect();
            match rest.pop() {
                Some(only) if rest.is_empty() => only,
                _ => RefOr::T(Schema::OneOf(one_of)),
            }
        }
        other => other,
    }
}

fn is_null(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_finds_its_place() {
        let mut doc = <super::super::ApiDoc as utoipa::OpenApi>::openapi();
        assert_eq!(add(&mut doc), Vec::<String>::new());
    }
}
