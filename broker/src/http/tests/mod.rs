//! In-process tests of the REST API.
