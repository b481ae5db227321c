//! health. Placeholder.
