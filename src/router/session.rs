//! Session keys. Placeholder.
