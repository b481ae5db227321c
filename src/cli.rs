//! cli. Placeholder.
