//! logging. Placeholder.
