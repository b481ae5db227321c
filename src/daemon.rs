//! daemon. Placeholder.
